"""How far a student's probabilities can be trusted: ECE, NLL and temperature scaling.

Torch-free (numpy only): the API applies the fitted temperature to onnxruntime logits with the
same ``softmax``. Temperature scaling (Guo et al., ICML 2017) divides every logit by one scalar
T > 0 fitted on the validation split by minimising the negative log-likelihood; it leaves the
argmax, and so every argmax metric, unchanged.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

ECE_BINS = 15
# log T is searched in [log 0.05, log 20]: wide enough for any real student, and bounded so
# that a degenerate validation split (one class, perfectly separated) cannot run T to 0 or inf.
LOG_T_BOUNDS = (math.log(0.05), math.log(20.0))
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def softmax(logits: ArrayLike, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of (N, C) logits / ``temperature``, float64."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def negative_log_likelihood(
    logits: ArrayLike, labels: ArrayLike, temperature: float = 1.0
) -> float:
    """Mean −log p(label) in nats of softmax(logits / T); (N, C) logits, (N,) class indices."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    y = np.asarray(labels, dtype=np.int64)
    if z.shape[0] == 0:
        raise ValueError("the negative log-likelihood needs at least one image")
    top = z.max(axis=1, keepdims=True)
    log_norm = top[:, 0] + np.log(np.exp(z - top).sum(axis=1))
    return float((log_norm - z[np.arange(len(y)), y]).mean())


def reliability_bins(
    probabilities: ArrayLike, labels: ArrayLike, bins: int = ECE_BINS
) -> list[dict[str, Any]]:
    """Equal-width confidence bins over (0, 1]: per bin its range, image count, mean confidence
    (max probability) and accuracy (None for an empty bin). A confidence c falls in the bin
    (lo, hi] with lo < c <= hi, as in Guo et al."""
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    confidence = p.max(axis=1)
    correct = p.argmax(axis=1) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    # ceil(c * bins) - 1 is the (lo, hi] bin; clip keeps c == 0 in the first bin.
    index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    rows = []
    for b in range(bins):
        members = index == b
        count = int(members.sum())
        rows.append(
            {
                "lower": float(edges[b]),
                "upper": float(edges[b + 1]),
                "count": count,
                "confidence": float(confidence[members].mean()) if count else None,
                "accuracy": float(correct[members].mean()) if count else None,
            }
        )
    return rows


def expected_calibration_error(
    probabilities: ArrayLike, labels: ArrayLike, bins: int = ECE_BINS
) -> float:
    """ECE: sum over bins of (bin share of images) × |accuracy − mean confidence|."""
    rows = reliability_bins(probabilities, labels, bins)
    total = sum(row["count"] for row in rows)
    if total == 0:
        raise ValueError("the calibration error needs at least one image")
    return float(
        sum(
            row["count"] / total * abs(row["accuracy"] - row["confidence"])
            for row in rows
            if row["count"]
        )
    )


def fit_temperature(
    logits: ArrayLike, labels: ArrayLike, *, tolerance: float = 1e-5, max_steps: int = 200
) -> float:
    """The T in ``LOG_T_BOUNDS`` minimising the NLL of softmax(logits / T) on (logits, labels).

    A golden-section search on log T: the NLL is convex in 1/T, hence unimodal in log T, so the
    bracket always holds the minimum.
    """
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)

    def loss(log_t: float) -> float:
        return negative_log_likelihood(z, y, math.exp(log_t))

    low, high = LOG_T_BOUNDS
    a = high - _GOLDEN * (high - low)
    b = low + _GOLDEN * (high - low)
    fa, fb = loss(a), loss(b)
    for _ in range(max_steps):
        if high - low < tolerance:
            break
        if fa <= fb:
            high, b, fb = b, a, fa
            a = high - _GOLDEN * (high - low)
            fa = loss(a)
        else:
            low, a, fa = a, b, fb
            b = low + _GOLDEN * (high - low)
            fb = loss(b)
    return float(math.exp((low + high) / 2.0))


def calibration_report(
    val_logits: ArrayLike,
    val_labels: ArrayLike,
    eval_logits: ArrayLike,
    eval_labels: ArrayLike,
    *,
    bins: int = ECE_BINS,
) -> dict[str, Any]:
    """Temperature fitted on val; ECE, NLL and the reliability bins on the evaluated split
    before (T = 1) and after scaling. JSON-friendly."""
    temperature = fit_temperature(val_logits, val_labels)
    out: dict[str, Any] = {"temperature": temperature, "bins": bins, "fitted_on": "val"}
    for key, t in (("uncalibrated", 1.0), ("calibrated", temperature)):
        probabilities = softmax(eval_logits, t)
        out[key] = {
            "ece": expected_calibration_error(probabilities, eval_labels, bins),
            "nll": negative_log_likelihood(eval_logits, eval_labels, t),
            "reliability": reliability_bins(probabilities, eval_labels, bins),
        }
    return out
