"""Wilson intervals against published values; the bootstrap is seeded and honest."""

from __future__ import annotations

import numpy as np
import pytest

from foprokd.intervals import (
    bootstrap_intervals,
    report_intervals,
    small_class_warnings,
    wilson_interval,
)
from foprokd.metrics import classification_report


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [(0, 1, 0.0, 0.7935), (1, 1, 0.2065, 1.0), (8, 10, 0.4902, 0.9433), (0, 10, 0.0, 0.2775)],
)
def test_wilson_matches_tabulated_values(k: int, n: int, low: float, high: float) -> None:
    interval = wilson_interval(k, n)
    assert interval is not None
    assert interval == pytest.approx((low, high), abs=1e-4)


def test_wilson_undefined_without_trials() -> None:
    assert wilson_interval(0, 0) is None
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(3, 2)


def test_bootstrap_is_seeded_and_brackets_the_estimate() -> None:
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 3, 200)
    y_pred = np.where(rng.random(200) < 0.7, y_true, rng.integers(0, 3, 200))
    first = bootstrap_intervals(y_true, y_pred, 3, resamples=300, seed=1)
    assert first == bootstrap_intervals(y_true, y_pred, 3, resamples=300, seed=1)
    assert first != bootstrap_intervals(y_true, y_pred, 3, resamples=300, seed=2)
    report = classification_report(y_true, y_pred, ["a", "b", "c"])
    for metric in ("balanced_accuracy", "macro_f1", "accuracy", "mcc"):
        low, high = first["headline"][metric]
        assert low <= report[metric] <= high
        assert high - low > 0.02  # 200 images cannot pin a metric to a point


def test_a_rare_class_gets_a_wide_recall_interval() -> None:
    y_true = [0] * 50 + [1]
    y_pred = [0] * 50 + [1]
    intervals = report_intervals(y_true, y_pred, ["common", "rare"], resamples=200)
    common, rare = intervals["per_class"]
    assert rare["recall"][1] == 1.0
    assert rare["recall"][0] < 0.25
    assert common["recall"][0] > 0.9
    assert intervals["headline"]["accuracy"] == [1.0, 1.0]


def test_small_class_warnings_per_split() -> None:
    counts = {"train": [120, 9], "val": [30, 10], "test": [0, 0]}
    warnings = small_class_warnings(counts, ["benign", "melanoma"])
    assert [(w["split"], w["class"], w["images"]) for w in warnings] == [("train", "melanoma", 9)]
