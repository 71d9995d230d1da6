"""Patient-level splits: no group in two splits, class shares kept within a stated tolerance, the
same seed gives the same split, and a user split that leaks a group is caught (ingest, manifest)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from app.dashboard.datasets import split_table
from app.datasets.ingest.dicom import salted_group
from foprokd.errors import ManifestInvalid
from foprokd.manifest import ManifestRow, assign_splits, parse_manifest
from foprokd.model_card import split_sentence
from foprokd.splits import SPLITS, describe_split, group_leaks, stratified_group_split
from foprokd.synthetic import Member, encode_image, sample_dataset, texture_image
from tests.unit.datasets.ingest.conftest import GROUP_SALT, validate

# Shares per class may miss the fractions by this much with ~250 patients of 1-5 images.
TOLERANCE = 0.03


def patients(seed: int, count: int = 240) -> tuple[dict[str, str], dict[str, str]]:
    """(image -> class, image -> patient): ``count`` patients of 1-5 images, long-tailed classes;
    one patient in ten has images of two classes."""
    rng = random.Random(seed)
    labels, groups = {}, {}
    classes = ["common"] * 6 + ["middle"] * 3 + ["rare"]
    for patient in range(count):
        label = rng.choice(classes)
        for image in range(rng.randint(1, 5)):
            key = f"p{patient:04d}/img{image}.png"
            second = image == 1 and patient % 10 == 0
            labels[key] = "rare" if second and label != "rare" else label
            groups[key] = f"p{patient:04d}"
    return labels, groups


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_group_is_in_two_splits_and_class_shares_hold(seed: int) -> None:
    labels, groups = patients(seed)
    splits = stratified_group_split(labels, groups, seed=seed, val_fraction=0.1, test_fraction=0.2)
    assert set(splits) == set(labels)
    assert group_leaks(splits, groups) == {}
    targets = {"train": 0.7, "val": 0.1, "test": 0.2}
    for name in set(labels.values()):
        members = [key for key, label in labels.items() if label == name]
        for split, target in targets.items():
            share = sum(splits[key] == split for key in members) / len(members)
            assert abs(share - target) <= TOLERANCE, (name, split, share)


def test_the_same_seed_gives_the_same_split_in_any_order() -> None:
    labels, groups = patients(5)
    first = stratified_group_split(labels, groups, seed=11)
    shuffled = dict(reversed(list(labels.items())))
    assert stratified_group_split(shuffled, groups, seed=11) == first
    assert stratified_group_split(labels, groups, seed=12) != first


def test_images_without_a_group_are_split_on_their_own() -> None:
    labels = {f"img{n}": "a" if n % 2 else "b" for n in range(40)}
    splits = stratified_group_split(labels, {}, seed=3)
    assert set(splits.values()) == set(SPLITS)


def test_group_leaks_name_each_split_a_group_is_in() -> None:
    splits = {"a1": "train", "a2": "test", "b1": "val", "c1": "train"}
    groups = {"a1": "A", "a2": "A", "b1": "B"}
    assert group_leaks(splits, groups) == {"A": {"train": "a1", "test": "a2"}}


# --- ingest ---------------------------------------------------------------------------------------


def png(seed: int, class_index: int) -> bytes:
    return encode_image(texture_image(class_index, 2, np.random.default_rng(seed), 16))


def csv_archive(rows: list[tuple[str, str, str, str]], header: str) -> list[Member]:
    """Images plus ``labels.csv`` with ``header`` columns; rows are (image, label, split, group)."""
    members = [
        Member(image, png(n, 0 if label == "a" else 1))
        for n, (image, label, _, _) in enumerate(rows)
    ]
    fields = header.split(",")
    lines = [header]
    for image, label, split, group in rows:
        values = {"image": image, "label": label, "split": split, "patient_id": group}
        lines.append(",".join(values[f] for f in fields))
    return [*members, Member("labels.csv", ("\n".join(lines) + "\n").encode())]


def test_a_user_split_that_leaks_a_patient_is_refused_naming_the_group() -> None:
    rows = [
        ("1.png", "a", "train", "MRN-1"),
        ("2.png", "a", "test", "MRN-1"),  # the leak
        ("3.png", "a", "val", "MRN-2"),
        ("4.png", "b", "train", "MRN-3"),
        ("5.png", "b", "test", "MRN-4"),
        ("6.png", "b", "val", "MRN-5"),
    ]
    members = csv_archive(rows, "image,label,split,patient_id")
    checked = validate(members)
    assert not checked.result.ok
    leak = [p for p in checked.errors if p["code"] == "group_leak"]
    group = salted_group("MRN-1", GROUP_SALT, "csv")
    assert [p["entry"] for p in leak] == [group]
    assert "test (2.png)" in leak[0]["message"]
    assert "train (1.png)" in leak[0]["message"]
    assert "MRN-1" not in str(checked.errors)
    warned = validate(members, on_group_leak="warn")
    assert warned.result.ok, warned.errors
    assert [p["code"] for p in warned.warnings] == ["group_leak"]


def test_csv_patient_ids_group_a_generated_split_and_are_stored_hashed() -> None:
    rows = [(f"{n}.png", "a" if n % 2 else "b", "", f"MRN-{n // 3}") for n in range(60)]
    checked = validate(csv_archive(rows, "image,label,patient_id"), split_seed=4)
    assert checked.result.ok, checked.errors
    manifest = {row.path: row for row in checked.result.rows}
    assert all(row.group.startswith("g-") for row in manifest.values())
    assert "MRN-" not in repr(checked.result.rows) + repr(checked.result.stats)
    by_group: dict[str, set[str]] = {}
    for row in manifest.values():
        by_group.setdefault(row.group, set()).add(row.split)
    assert all(len(splits) == 1 for splits in by_group.values())
    stats = checked.result.stats
    assert stats["split"]["unit"] == "group"
    assert stats["split"]["group_by"] == "column"
    assert stats["patient_groups"]["total"] == 20
    assert sum(stats["patient_groups"]["per_split"].values()) == 20
    # group_by=none splits image by image, as before.
    plain = validate(csv_archive(rows, "image,label,patient_id"), split_seed=4, group_by="none")
    assert plain.result.stats["split"]["unit"] == "image"
    assert all(row.group == "" for row in plain.result.rows)


def test_folder_level_groups_and_a_path_too_shallow_is_named() -> None:
    members = [
        Member(f"{label}/patient{p}/{n}.png", png(10 * p + n, i))
        for i, label in enumerate(("a", "b"))
        for p in range(4 * i, 4 * i + 4)
        for n in range(3)
    ]
    checked = validate(members, group_by="folder:2", split_seed=2)
    assert checked.result.ok, checked.errors
    groups = {row.group for row in checked.result.rows}
    assert groups == {f"patient{p}" for p in range(8)}
    for group in groups:
        assert len({row.split for row in checked.result.rows if row.group == group}) == 1
    shallow = validate([*members, Member("a/loose.png", png(99, 0))], group_by="folder:2")
    assert shallow.error_for("a/loose.png")["code"] == "no_group"


def test_dicom_sample_groups_by_hashed_patient_id() -> None:
    sample = sample_dataset(classes=3, head=24, imbalance=4, size=16, image_format="DICOM")
    checked = validate(sample.members, split_seed=9)
    assert checked.result.ok, checked.errors
    stats = checked.result.stats
    assert stats["split"]["group_by"] == "dicom"
    assert stats["patient_groups"]["total"] == len(set(sample.patients.values()))
    by_patient: dict[str, set[str]] = {}
    for row in checked.result.rows:
        by_patient.setdefault(sample.patients[row.path], set()).add(row.split)
        assert row.group == salted_group(sample.patients[row.path], GROUP_SALT, "patient")
    assert all(len(splits) == 1 for splits in by_patient.values())
    assert any(len([p for p in sample.patients.values() if p == q]) > 1 for q in by_patient)


def test_dicom_sample_with_fixed_splits_keeps_each_patient_in_one_split() -> None:
    sample = sample_dataset(classes=3, head=20, size=16, image_format="DICOM", with_splits=True)
    checked = validate(sample.members)
    assert checked.result.ok, checked.errors
    assert checked.result.stats["split"] == {
        "source": "given",
        "unit": "group",
        "group_by": "dicom",
    }


# --- manifest, model card, dashboard --------------------------------------------------------------


def test_a_manifest_leaking_a_group_is_refused_and_an_unsplit_one_is_split_by_group() -> None:
    text = "path,label,split,group\na.png,x,train,G1\nb.png,x,test,G1\nc.png,y,train,G2\n"
    with pytest.raises(ManifestInvalid, match="G1"):
        parse_manifest(text, source="m.csv")
    rows = [ManifestRow(f"{n}.png", "xy"[n % 2], "", group=f"G{n // 4}") for n in range(80)]
    split = assign_splits(rows, seed=1)
    assert group_leaks({r.path: r.split for r in split}, {r.path: r.group for r in split}) == {}


def test_model_card_sentence_and_dashboard_table_show_groups_per_split() -> None:
    grouped = {"source": "generated", "seed": 7, "unit": "group", "group_by": "dicom"}
    sentence = split_sentence({**grouped, "groups": {"train": 14, "val": 2, "test": 4}})
    assert "per patient group" in sentence
    assert "seed 7" in sentence
    assert "train 14, val 2, test 4" in sentence
    assert "per image" in split_sentence({"source": "given", "unit": "image"})
    counts = {"train": {"a": 5, "b": 3}, "val": {"a": 1, "b": 1}, "test": {"a": 2, "b": 1}}
    per_class = {"train": {"a": 3, "b": 2}, "val": {"a": 1, "b": 1}, "test": {"a": 1, "b": 1}}
    table = split_table(
        ["a", "b"],
        counts,
        {"per_class": per_class, "per_split": {"train": 4, "val": 2, "test": 2}},
    )
    assert table is not None
    assert table["rows"][0] == ("a", [(5, 3), (1, 1), (2, 1)])
    assert table["totals"] == [(8, 4), (2, 2), (3, 2)]
    plain = split_table(["a", "b"], counts, {})
    assert plain is not None
    assert plain["rows"][1] == ("b", [(3, None), (1, None), (1, None)])


def test_a_class_from_one_patient_is_kept_whole_and_the_user_is_told() -> None:
    members = [Member(f"a/p{p}/{n}.png", png(10 * p + n, 0)) for p in range(6) for n in range(2)]
    members += [Member(f"b/p9/{n}.png", png(100 + n, 1)) for n in range(3)]
    checked = validate(members, group_by="folder:2", split_seed=1)
    assert checked.result.ok, checked.errors
    assert {row.split for row in checked.result.rows if row.label == "b"} == {"train"}
    warned = {(w["code"], w["entry"]) for w in checked.warnings}
    assert ("single_group_class", "b/p9/0.png") in warned
    assert ("empty_split", "b/p9/0.png") in warned


def test_describe_split_counts_distinct_groups_per_split() -> None:
    rows = [("train", "A"), ("train", "A"), ("train", "B"), ("val", "C"), ("test", None)]
    assert describe_split(rows) == {"unit": "group", "groups": {"train": 2, "val": 1, "test": 1}}
    assert describe_split([("train", None), ("test", None)]) == {"unit": "image"}
