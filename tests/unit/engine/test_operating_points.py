"""Per-class AUCs agree with scikit-learn, and thresholds reach their sensitivity on val."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from foprokd.operating_points import (
    average_precision,
    operating_points,
    rates_at,
    roc_auc,
    threshold_for_sensitivity,
)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_aucs_equal_scikit_learn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    positive = rng.random(300) < 0.2
    # Rounded scores: many ties, the case a hand-written AUC gets wrong.
    scores = np.round(rng.random(300) * 0.6 + positive * 0.3, 1)
    assert roc_auc(scores, positive) == pytest.approx(roc_auc_score(positive, scores))
    assert average_precision(scores, positive) == pytest.approx(
        average_precision_score(positive, scores)
    )


def test_aucs_undefined_without_both_kinds() -> None:
    assert roc_auc([0.1, 0.9], [True, True]) is None
    assert average_precision([0.1, 0.9], [False, False]) is None


@pytest.mark.parametrize("target", [0.90, 0.95])
def test_threshold_reaches_the_target_and_is_the_highest_that_does(target: float) -> None:
    rng = np.random.default_rng(4)
    positive = rng.random(500) < 0.1
    scores = rng.random(500) * 0.5 + positive * 0.4
    t = threshold_for_sensitivity(scores, positive, target)
    assert t is not None
    at = rates_at(scores, positive, t)
    assert at["sensitivity"] >= target
    above = scores[positive & (scores > t)]
    if above.size:  # the next positive score up would miss the target
        assert rates_at(scores, positive, float(above.min()))["sensitivity"] < target


def test_operating_points_chosen_on_val_reported_on_test() -> None:
    rng = np.random.default_rng(5)
    classes = ["a", "b", "c"]

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, 2, n)  # class c never occurs
        logits = rng.normal(0, 1, (n, 3))
        logits[np.arange(n), labels] += 2.0
        e = np.exp(logits)
        return e / e.sum(1, keepdims=True), labels

    val_p, val_y = split(400)
    test_p, test_y = split(300)
    points = operating_points(val_p, val_y, test_p, test_y, classes)
    assert set(points["thresholds"]) == {"sens90", "sens95"}
    for c in (0, 1):
        row = points["per_class"][c]
        for profile, target in (("sens90", 0.9), ("sens95", 0.95)):
            point = row["operating_points"][profile]
            assert point["threshold"] == points["thresholds"][profile][c]
            assert point["val"]["sensitivity"] >= target
            assert point["test"] == rates_at(test_p[:, c], test_y == c, point["threshold"])
        assert row["roc_auc"] == pytest.approx(roc_auc_score(test_y == c, test_p[:, c]))
    # A class val never holds gets no threshold, so predict never flags it.
    assert points["thresholds"]["sens90"][2] is None
    assert points["per_class"][2]["roc_auc"] is None
