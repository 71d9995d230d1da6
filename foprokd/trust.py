"""What a clinic needs to trust a student beyond argmax metrics, from its logits on val and on
the evaluated split: calibration (temperature fitted on val), per-class operating points,
95 % intervals and small-split warnings. Torch-free; the pipeline supplies the logits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from foprokd.calibration import calibration_report, softmax
from foprokd.intervals import report_intervals, small_class_warnings
from foprokd.operating_points import operating_points


def assess(
    *,
    val_logits: np.ndarray,
    val_labels: np.ndarray,
    eval_logits: np.ndarray,
    eval_labels: np.ndarray,
    class_names: Sequence[str],
    class_counts: Mapping[str, Sequence[int]],
    evaluated_split: str,
    seed: int = 0,
) -> dict[str, Any]:
    """``calibration`` (ECE/NLL before and after temperature scaling), ``operating_points``
    (on the calibrated probabilities ``predict`` returns), ``intervals`` (for the report of
    argmax(eval_logits)) and ``small_classes`` warnings. Logits: (N, C); labels: (N,)."""
    calibration = calibration_report(val_logits, val_labels, eval_logits, eval_labels)
    calibration["measured_on"] = evaluated_split
    temperature = calibration["temperature"]
    points = operating_points(
        softmax(val_logits, temperature),
        val_labels,
        softmax(eval_logits, temperature),
        eval_labels,
        list(class_names),
        evaluated_split=evaluated_split,
    )
    return {
        "calibration": calibration,
        "operating_points": points,
        "intervals": report_intervals(
            eval_labels, eval_logits.argmax(axis=1), class_names, seed=seed
        ),
        "small_classes": small_class_warnings(class_counts, class_names),
    }


def config_entries(trust: Mapping[str, Any]) -> dict[str, Any]:
    """What ``config.json`` carries for serving: the temperature ``predict`` applies and the
    per-class thresholds of each ``threshold_profile``."""
    calibration = trust["calibration"]
    return {
        "temperature": calibration["temperature"],
        "calibration": {
            "fitted_on": calibration["fitted_on"],
            "ece_before": calibration["uncalibrated"]["ece"],
            "ece_after": calibration["calibrated"]["ece"],
        },
        "operating_points": trust["operating_points"]["thresholds"],
    }


def summary(trust: Mapping[str, Any], int8: Mapping[str, Any] | None) -> dict[str, Any]:
    """The compact view the job row keeps for the dashboard (the card has everything)."""
    calibration = trust["calibration"]
    out: dict[str, Any] = {
        "calibration": {
            "temperature": calibration["temperature"],
            "measured_on": calibration["measured_on"],
            **{
                f"{metric}_{when}": calibration[key][metric]
                for metric in ("ece", "nll")
                for when, key in (("before", "uncalibrated"), ("after", "calibrated"))
            },
        },
        "small_classes": list(trust["small_classes"]),
        "operating_points": _points_summary(trust["operating_points"]),
        "int8": None,
    }
    if int8 is not None:
        out["int8"] = {
            key: int8.get(key)
            for key in ("mode", "published", "reasons", "speedup_p50", "evaluated_split")
        }
        for side in ("fp32", "int8"):
            if side in int8:
                out["int8"][side] = {
                    "size_mb": int8[side]["size_mb"],
                    "latency_ms": int8[side]["latency_ms"],
                    "balanced_accuracy": int8[side]["report"]["balanced_accuracy"],
                }
        if "deltas" in int8:
            deltas = int8["deltas"]
            out["int8"]["deltas"] = {
                k: v for k, v in deltas.items() if k not in {"per_class", "shot_groups"}
            }
            out["int8"]["deltas"]["few_shot_accuracy"] = (deltas.get("shot_groups") or {}).get(
                "few"
            )
    return out


def _points_summary(points: Mapping[str, Any]) -> dict[str, Any]:
    """Per class: the AUCs and, per profile, the threshold chosen on val with the sensitivity
    and specificity it gives on the reported split (the card also has the val rates)."""
    split = points["reported_on"]
    rows = []
    for row in points["per_class"]:
        at: dict[str, Any] = {}
        for profile, point in row["operating_points"].items():
            rates = point.get(split) or {}
            at[profile] = {
                "threshold": point["threshold"],
                "sensitivity": rates.get("sensitivity"),
                "specificity": rates.get("specificity"),
            }
        rows.append(
            {"class": row["class"], "roc_auc": row["roc_auc"], "pr_auc": row["pr_auc"], "at": at}
        )
    return {
        "chosen_on": points["chosen_on"],
        "reported_on": split,
        "profiles": dict(points["profiles"]),
        "per_class": rows,
    }
