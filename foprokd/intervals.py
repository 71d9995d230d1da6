"""95 % intervals for the card's metrics, and warnings where a split is too small to judge.

A long-tailed test split often holds one or two images of a rare class, so a recall of 0 % or
100 % says little. Per-class recall and precision are binomial proportions and get Wilson score
intervals (sound at n = 1 and at 0 or n successes); metrics of the whole confusion matrix
(balanced accuracy, macro-F1, MCC, ...) and per-class F1 get a seeded percentile bootstrap over
the evaluated images. Torch-free (numpy only).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from foprokd.metrics import confusion_matrix, headline_scores, per_class_scores

Z_95 = 1.959963984540054
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
# Fewer images than this of a class in a split and its per-class numbers are flagged.
MIN_IMAGES_PER_CLASS = 10


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float] | None:
    """Wilson score interval of a proportion ``successes / trials``; None when trials is 0."""
    if trials <= 0:
        return None
    if not 0 <= successes <= trials:
        raise ValueError(f"{successes} successes out of {trials} trials")
    p = successes / trials
    z2 = z * z
    centre = (p + z2 / (2 * trials)) / (1 + z2 / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / (1 + z2 / trials)
    return (max(0.0, centre - half), min(1.0, centre + half))


def bootstrap_intervals(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    num_classes: int,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Percentile bootstrap over images (resampled with replacement, ``seed``-ed) of every
    headline metric and of per-class F1: ``{"headline": {metric: (lo, hi)}, "f1": [(lo, hi)]}``.
    Empty input gives None intervals."""
    true = np.asarray(y_true, dtype=np.int64).ravel()
    pred = np.asarray(y_pred, dtype=np.int64).ravel()
    names = list(headline_scores(np.zeros((num_classes, num_classes), dtype=np.int64)))
    if true.size == 0:
        return {"headline": dict.fromkeys(names), "f1": [None] * num_classes}
    rng = np.random.default_rng(seed)
    headline = np.empty((resamples, len(names)))
    f1 = np.empty((resamples, num_classes))
    for r in range(resamples):
        pick = rng.integers(0, true.size, size=true.size)
        cm = confusion_matrix(true[pick], pred[pick], num_classes)
        scores = headline_scores(cm)
        headline[r] = [scores[name] for name in names]
        f1[r] = per_class_scores(cm)["f1"]
    tail = (1.0 - confidence) / 2.0 * 100.0
    lo_h, hi_h = np.percentile(headline, [tail, 100.0 - tail], axis=0)
    lo_f, hi_f = np.percentile(f1, [tail, 100.0 - tail], axis=0)
    return {
        "headline": {n: (float(lo_h[i]), float(hi_h[i])) for i, n in enumerate(names)},
        "f1": [(float(lo_f[c]), float(hi_f[c])) for c in range(num_classes)],
    }


def report_intervals(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    class_names: Sequence[str],
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, Any]:
    """95 % intervals for a ``classification_report`` of the same (y_true, y_pred): Wilson
    for per-class recall and precision, the bootstrap for F1 and the headline metrics.
    Intervals are [lo, hi] lists (JSON), None where the metric is undefined (no images)."""
    num_classes = len(class_names)
    cm = confusion_matrix(y_true, y_pred, num_classes)
    tp, support, predicted = np.diag(cm), cm.sum(axis=1), cm.sum(axis=0)
    boot = bootstrap_intervals(y_true, y_pred, num_classes, resamples=resamples, seed=seed)

    def listed(pair: tuple[float, float] | None) -> list[float] | None:
        return None if pair is None else [pair[0], pair[1]]

    return {
        "confidence": 0.95,
        "method": {
            "recall": "wilson",
            "precision": "wilson",
            "f1": "bootstrap",
            "headline": "bootstrap",
        },
        "bootstrap": {"resamples": resamples, "seed": seed},
        "headline": {name: listed(pair) for name, pair in boot["headline"].items()},
        "per_class": [
            {
                "class": name,
                "recall": listed(wilson_interval(int(tp[c]), int(support[c]))),
                "precision": listed(wilson_interval(int(tp[c]), int(predicted[c]))),
                "f1": listed(boot["f1"][c]) if support[c] + predicted[c] else None,
            }
            for c, name in enumerate(class_names)
        ],
    }


def small_class_warnings(
    class_counts: Mapping[str, Sequence[int]],
    class_names: Sequence[str],
    *,
    minimum: int = MIN_IMAGES_PER_CLASS,
) -> list[dict[str, Any]]:
    """One warning per (split, class) holding fewer than ``minimum`` images (empty splits are
    skipped: a dataset without a test split is said elsewhere)."""
    warnings = []
    for split, counts in class_counts.items():
        if not sum(counts):
            continue
        for name, count in zip(class_names, counts, strict=True):
            if count < minimum:
                warnings.append(
                    {
                        "split": split,
                        "class": name,
                        "images": int(count),
                        "message": f"{split} holds {count} image(s) of {name} (< {minimum}): "
                        "its per-class numbers there are too uncertain to rely on.",
                    }
                )
    return warnings
