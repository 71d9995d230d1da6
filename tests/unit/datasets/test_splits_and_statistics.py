"""Split sizes and the statistics block."""

from __future__ import annotations

import pytest

from app.datasets.statistics import dataset_statistics, imbalance_ratio, shot_groups
from foprokd.splits import normalize_split, split_sizes, stratified_split


@pytest.mark.parametrize(
    ("count", "sizes"),
    [(2, (1, 0, 1)), (3, (1, 1, 1)), (4, (2, 1, 1)), (10, (7, 1, 2)), (100, (70, 10, 20))],
)
def test_split_sizes_keep_one_val_and_test_image_when_possible(
    count: int, sizes: tuple[int, int, int]
) -> None:
    assert split_sizes(count, 0.1, 0.2) == sizes


def test_split_sizes_always_leave_a_training_image() -> None:
    for count in range(3, 40):
        train, val, test = split_sizes(count, 0.45, 0.45)
        assert train >= 1
        assert val >= 1
        assert test >= 1
        assert train + val + test == count


def test_split_sizes_refuse_a_single_image() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        split_sizes(1, 0.1, 0.2)


def test_stratified_split_ignores_input_order() -> None:
    labels = {f"img{n}": "ab"[n % 2] for n in range(40)}
    forward = stratified_split(labels, seed=3, val_fraction=0.1, test_fraction=0.2)
    backward = stratified_split(
        dict(reversed(list(labels.items()))), seed=3, val_fraction=0.1, test_fraction=0.2
    )
    assert forward == backward
    assert sorted(forward.values()).count("test") == 8


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("Train", "train"),
        (" validation ", "val"),
        ("VALID", "val"),
        ("testing", "test"),
        ("holdout", None),
    ],
)
def test_split_aliases(given: str, expected: str | None) -> None:
    assert normalize_split(given) == expected


def test_statistics_on_a_long_tailed_split() -> None:
    counts = {"nv": 150, "mel": 40, "df": 5}
    labelled = [(name, "train") for name, n in counts.items() for _ in range(n)]
    labelled += [("nv", "test"), ("df", "val")]
    sizes = [(600, 450)] * (len(labelled) - 1) + [(5000, 10)]
    stats = dataset_statistics(labelled, sizes, sorted(counts))
    assert stats["class_counts"]["train"] == {"df": 5, "mel": 40, "nv": 150}
    assert stats["class_counts"]["val"] == {"df": 1, "mel": 0, "nv": 0}
    assert stats["class_totals"] == {"df": 6, "mel": 40, "nv": 151}
    assert stats["imbalance_ratio"] == 30.0
    assert stats["groups"] == {"many": ["nv"], "medium": ["mel"], "few": ["df"]}
    bins = {b["min"]: b["count"] for b in stats["image_size_histogram"]["bins"]}
    assert bins[512] == len(labelled) - 1
    assert bins[4096] == 1
    assert stats["image_size_histogram"]["width"]["max"] == 5000


def test_groups_and_ratio_edges() -> None:
    assert shot_groups({"a": 101, "b": 100, "c": 20, "d": 19}) == {
        "many": ["a"],
        "medium": ["b", "c"],
        "few": ["d"],
    }
    assert imbalance_ratio({"a": 7, "b": 7}) == 1.0
