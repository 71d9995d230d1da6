"""foprokd.metrics agrees with scikit-learn on random labels, including absent classes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn import metrics as skm

from foprokd.metrics import classification_report, confusion_matrix, shot_groups


def _labels(seed: int, n: int, num_classes: int, skip: int | None) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    classes = [c for c in range(num_classes) if c != skip]
    y_true = rng.choice(classes, size=n, p=None)
    # Predictions agree with the truth 60% of the time so the scores are far from 0 and 1.
    y_pred = np.where(rng.random(n) < 0.6, y_true, rng.integers(0, num_classes, size=n))
    return y_true, y_pred


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
@pytest.mark.parametrize(("seed", "skip"), [(0, None), (1, None), (2, 3), (3, 0)])
def test_report_matches_sklearn(seed: int, skip: int | None) -> None:
    num_classes = 6
    y_true, y_pred = _labels(seed, 300, num_classes, skip)
    names = [f"c{i}" for i in range(num_classes)]
    report = classification_report(y_true, y_pred, names)

    assert report["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y_true, y_pred))
    assert report["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert report["macro_f1"] == pytest.approx(
        skm.f1_score(y_true, y_pred, average="macro", zero_division=0)
    )
    assert report["macro_precision"] == pytest.approx(
        skm.precision_score(y_true, y_pred, average="macro", zero_division=0)
    )
    assert report["macro_recall"] == pytest.approx(
        skm.recall_score(y_true, y_pred, average="macro", zero_division=0)
    )
    assert report["mcc"] == pytest.approx(skm.matthews_corrcoef(y_true, y_pred))
    assert report["cohen_kappa"] == pytest.approx(skm.cohen_kappa_score(y_true, y_pred))
    expected_cm = skm.confusion_matrix(y_true, y_pred, labels=list(range(num_classes)))
    assert np.array_equal(np.array(report["confusion_matrix"]), expected_cm)

    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=list(range(num_classes)), zero_division=0
    )
    for i, row in enumerate(report["per_class"]):
        assert row["class"] == names[i]
        assert row["precision"] == pytest.approx(precision[i])
        assert row["recall"] == pytest.approx(recall[i])
        assert row["f1"] == pytest.approx(f1[i])
        assert row["support"] == support[i]
    json.dumps(report, allow_nan=False)


def test_degenerate_predictions_stay_json_friendly() -> None:
    y_true = np.array([0, 0, 1, 2])
    y_pred = np.zeros(4, dtype=np.int64)
    report = classification_report(y_true, y_pred, ["a", "b", "c"])
    assert report["mcc"] == pytest.approx(skm.matthews_corrcoef(y_true, y_pred))
    assert report["cohen_kappa"] == pytest.approx(skm.cohen_kappa_score(y_true, y_pred))
    json.dumps(report, allow_nan=False)


def test_shot_groups_use_strict_thresholds() -> None:
    groups = shot_groups([500, 101, 100, 20, 19, 0])
    assert groups == {"many": [0, 1], "medium": [2, 3], "few": [4, 5]}
    assert shot_groups([50, 5], many_above=40, few_below=6) == {
        "many": [0],
        "medium": [],
        "few": [1],
    }


def test_group_accuracy_is_the_mean_recall_of_its_classes() -> None:
    # Class 0 (many): 3/4 right; class 1 (medium): 1/2; class 2 (few): 0/2; class 3 never tested.
    y_true = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 0, 0, 1, 1, 0, 0, 1])
    report = classification_report(y_true, y_pred, ["a", "b", "c", "d"], [300, 50, 10, 5])
    groups = report["shot_groups"]
    assert groups["many"] == {"classes": ["a"], "accuracy": pytest.approx(0.75)}
    assert groups["medium"] == {"classes": ["b"], "accuracy": pytest.approx(0.5)}
    assert groups["few"] == {"classes": ["c", "d"], "accuracy": pytest.approx(0.0)}
    assert report["per_class"][3]["train_count"] == 5


def test_confusion_matrix_rejects_out_of_range_labels() -> None:
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix([0, 3], [0, 1], 3)
