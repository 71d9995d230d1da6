"""Classification metrics for long-tailed data, all derived from one confusion matrix.

Conventions follow scikit-learn: undefined precision/recall/F1 count as 0, balanced accuracy
averages recall over the classes present in ``y_true``, macro averages run over the classes that
occur in ``y_true`` or ``y_pred``. Everything returned is JSON-friendly (no NaN).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

# Shot groups by training images per class, the long-tail convention (Liu et al., CVPR 2019);
# the service's dataset statistics use the same groups.
MANY_SHOT_ABOVE = 100
FEW_SHOT_BELOW = 20


def confusion_matrix(y_true: ArrayLike, y_pred: ArrayLike, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts; row = true class, column = predicted class."""
    true = np.asarray(y_true, dtype=np.int64).ravel()
    pred = np.asarray(y_pred, dtype=np.int64).ravel()
    if true.shape != pred.shape:
        raise ValueError(f"y_true has {true.size} labels but y_pred has {pred.size}")
    for name, labels in (("y_true", true), ("y_pred", pred)):
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"{name} has labels outside [0, {num_classes})")
    flat = np.bincount(true * num_classes + pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def _safe_ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    out = np.zeros(numerator.shape, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def per_class_scores(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class ``precision``, ``recall``, ``f1`` (float64, 0 where undefined) and ``support``."""
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = _safe_ratio(tp, predicted.astype(np.float64))
    recall = _safe_ratio(tp, support.astype(np.float64))
    f1 = _safe_ratio(2 * tp, (support + predicted).astype(np.float64))
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def balanced_accuracy(cm: np.ndarray) -> float:
    """Mean recall over the classes with at least one true sample."""
    support = cm.sum(axis=1)
    present = support > 0
    if not present.any():
        return 0.0
    return float((np.diag(cm)[present] / support[present]).mean())


def macro_f1(cm: np.ndarray) -> float:
    """Unweighted mean F1 over the classes that occur in y_true or y_pred."""
    occurs = (cm.sum(axis=1) + cm.sum(axis=0)) > 0
    if not occurs.any():
        return 0.0
    return float(per_class_scores(cm)["f1"][occurs].mean())


def matthews_corrcoef(cm: np.ndarray) -> float:
    """Multiclass Matthews correlation coefficient (Gorodkin's R_K); 0 when undefined."""
    c = cm.astype(np.float64)
    t_sum, p_sum = c.sum(axis=1), c.sum(axis=0)
    n = c.sum()
    cov_tp = np.trace(c) * n - t_sum @ p_sum
    cov_pp = n * n - p_sum @ p_sum
    cov_tt = n * n - t_sum @ t_sum
    if cov_pp * cov_tt == 0:
        return 0.0
    return float(cov_tp / np.sqrt(cov_tt * cov_pp))


def cohen_kappa(cm: np.ndarray) -> float:
    """Cohen's kappa between truth and prediction; 1.0 / 0.0 when chance agreement is total."""
    c = cm.astype(np.float64)
    n = c.sum()
    if n == 0:
        return 0.0
    observed = np.trace(c) / n
    expected = (c.sum(axis=1) @ c.sum(axis=0)) / (n * n)
    if expected == 1.0:
        return 1.0 if observed == 1.0 else 0.0
    return float((observed - expected) / (1.0 - expected))


def headline_scores(cm: np.ndarray) -> dict[str, float]:
    """The card's headline metrics of one confusion matrix (macro averages over the classes
    that occur in y_true or y_pred)."""
    scores = per_class_scores(cm)
    occurs = (cm.sum(axis=1) + cm.sum(axis=0)) > 0
    n = int(cm.sum())
    return {
        "accuracy": float(np.trace(cm) / n) if n else 0.0,
        "balanced_accuracy": balanced_accuracy(cm),
        "macro_precision": float(scores["precision"][occurs].mean()) if occurs.any() else 0.0,
        "macro_recall": float(scores["recall"][occurs].mean()) if occurs.any() else 0.0,
        "macro_f1": macro_f1(cm),
        "mcc": matthews_corrcoef(cm),
        "cohen_kappa": cohen_kappa(cm),
    }


def shot_groups(
    train_counts: Sequence[int],
    *,
    many_above: int = MANY_SHOT_ABOVE,
    few_below: int = FEW_SHOT_BELOW,
) -> dict[str, list[int]]:
    """Class indices per group: ``many`` (> many_above train images), ``few`` (< few_below),
    ``medium`` (the rest)."""
    groups: dict[str, list[int]] = {"many": [], "medium": [], "few": []}
    for index, count in enumerate(train_counts):
        key = "many" if count > many_above else "few" if count < few_below else "medium"
        groups[key].append(index)
    return groups


def classification_report(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    class_names: Sequence[str],
    train_counts: Sequence[int] | None = None,
    *,
    many_above: int = MANY_SHOT_ABOVE,
    few_below: int = FEW_SHOT_BELOW,
) -> dict[str, Any]:
    """Every metric of the model card as one JSON-friendly dict.

    y_true, y_pred: (N,) class indices into ``class_names``. ``train_counts`` (per class) adds
    the many/medium/few-shot groups: each group's accuracy is the mean recall of its classes
    that occur in y_true (None when there are none).
    """
    num_classes = len(class_names)
    cm = confusion_matrix(y_true, y_pred, num_classes)
    scores = per_class_scores(cm)
    report: dict[str, Any] = {
        "num_samples": int(cm.sum()),
        **headline_scores(cm),
        "class_names": list(class_names),
        "confusion_matrix": cm.tolist(),
        "per_class": [
            {
                "class": name,
                "precision": float(scores["precision"][i]),
                "recall": float(scores["recall"][i]),
                "f1": float(scores["f1"][i]),
                "support": int(scores["support"][i]),
                **({"train_count": int(train_counts[i])} if train_counts is not None else {}),
            }
            for i, name in enumerate(class_names)
        ],
    }
    if train_counts is not None:
        if len(train_counts) != num_classes:
            raise ValueError(
                f"train_counts has {len(train_counts)} entries for {num_classes} classes"
            )
        groups = shot_groups(train_counts, many_above=many_above, few_below=few_below)
        support = scores["support"]
        report["shot_groups"] = {
            "many_above": many_above,
            "few_below": few_below,
            **{
                group: {
                    "classes": [class_names[i] for i in members],
                    "accuracy": (
                        float(scores["recall"][evaluated].mean())
                        if (evaluated := [i for i in members if support[i] > 0])
                        else None
                    ),
                }
                for group, members in groups.items()
            },
        }
    return report
