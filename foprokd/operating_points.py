"""Per-class ranking quality and screening operating points, one class against the rest.

Torch-free (numpy only). Scores are the student's calibrated probabilities, the very numbers
``predict`` returns, so a threshold chosen here flags exactly what the API flags. Thresholds
are chosen on the validation split and reported on the evaluated split, so the reported
sensitivity is an honest estimate rather than the target met by construction.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

# Profile name -> the sensitivity (recall of the class) its threshold must reach on val.
PROFILES: dict[str, float] = {"sens90": 0.90, "sens95": 0.95}


def roc_auc(scores: ArrayLike, positive: ArrayLike) -> float | None:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties count
    half (Mann-Whitney U with average ranks). None without both positives and negatives."""
    s = np.asarray(scores, dtype=np.float64)
    pos = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_scores = s[order]
    # Average 1-based ranks over runs of tied scores.
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], len(s)]
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + 1 + end) / 2.0
    u = ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def average_precision(scores: ArrayLike, positive: ArrayLike) -> float | None:
    """Area under the precision-recall curve as average precision: the sum over distinct
    thresholds of (recall gained) × precision there. None without positives."""
    s = np.asarray(scores, dtype=np.float64)
    pos = np.asarray(positive, dtype=bool)
    n_pos = int(pos.sum())
    if n_pos == 0:
        return None
    order = np.argsort(-s, kind="mergesort")
    s_sorted, pos_sorted = s[order], pos[order]
    tp = np.cumsum(pos_sorted)
    fp = np.cumsum(~pos_sorted)
    # Only the last index of each run of tied scores is a threshold.
    last = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    tp, fp = tp[last], fp[last]
    precision = tp / (tp + fp)
    recall = tp / n_pos
    gained = np.diff(np.r_[0.0, recall])
    return float((gained * precision).sum())


def threshold_for_sensitivity(
    scores: ArrayLike, positive: ArrayLike, target: float
) -> float | None:
    """The highest score threshold t such that flagging ``score >= t`` catches at least
    ``target`` of the positives; None without positives."""
    s = np.asarray(scores, dtype=np.float64)
    pos = np.asarray(positive, dtype=bool)
    positives = np.sort(s[pos])[::-1]
    if positives.size == 0:
        return None
    needed = max(1, math.ceil(target * positives.size - 1e-9))
    return float(positives[needed - 1])


def rates_at(scores: ArrayLike, positive: ArrayLike, threshold: float) -> dict[str, Any]:
    """Sensitivity and specificity of flagging ``score >= threshold`` (None where undefined)."""
    s = np.asarray(scores, dtype=np.float64)
    pos = np.asarray(positive, dtype=bool)
    flagged = s >= threshold
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return {
        "sensitivity": float((flagged & pos).sum() / n_pos) if n_pos else None,
        "specificity": float((~flagged & ~pos).sum() / n_neg) if n_neg else None,
        "positives": n_pos,
        "negatives": n_neg,
    }


def operating_points(
    val_probabilities: ArrayLike,
    val_labels: ArrayLike,
    eval_probabilities: ArrayLike,
    eval_labels: ArrayLike,
    class_names: list[str],
    *,
    evaluated_split: str = "test",
    profiles: dict[str, float] = PROFILES,
) -> dict[str, Any]:
    """Per class: ROC AUC and PR AUC on the evaluated split, and per profile the threshold
    chosen on val with its sensitivity/specificity on val and on the evaluated split.

    Probabilities: (N, C) float; labels: (N,) class indices. ``thresholds`` maps each profile
    to one threshold per class (None where val holds no image of the class): what
    ``config.json`` carries for ``predict``'s ``threshold_profile``.
    """
    vp = np.asarray(val_probabilities, dtype=np.float64)
    vy = np.asarray(val_labels, dtype=np.int64)
    ep = np.asarray(eval_probabilities, dtype=np.float64)
    ey = np.asarray(eval_labels, dtype=np.int64)
    rows = []
    thresholds: dict[str, list[float | None]] = {name: [] for name in profiles}
    for c, name in enumerate(class_names):
        row: dict[str, Any] = {
            "class": name,
            "roc_auc": roc_auc(ep[:, c], ey == c),
            "pr_auc": average_precision(ep[:, c], ey == c),
            "operating_points": {},
        }
        for profile, target in profiles.items():
            t = threshold_for_sensitivity(vp[:, c], vy == c, target)
            thresholds[profile].append(t)
            row["operating_points"][profile] = {
                "target_sensitivity": target,
                "threshold": t,
                "val": rates_at(vp[:, c], vy == c, t) if t is not None else None,
                evaluated_split: rates_at(ep[:, c], ey == c, t) if t is not None else None,
            }
        rows.append(row)
    return {
        "chosen_on": "val",
        "reported_on": evaluated_split,
        "profiles": dict(profiles),
        "per_class": rows,
        "thresholds": thresholds,
    }
