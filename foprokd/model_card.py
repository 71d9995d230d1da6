"""The model card of a distilled student: ``model_card.json``, ``model_card.md`` and curves.

Everything in the card comes from its inputs: the engine's test report
(``foprokd.metrics.classification_report``) and training history (``EpochSummary`` per epoch),
the dataset's statistics, the hyper-parameters, and the student and teacher modules plus the
exported ONNX file, which are measured here (parameters, FLOPs, CPU latency). The report and the
history are copied verbatim, so the card's numbers are the engine's numbers.
``build_model_card`` makes the card (a dict); ``write_model_card`` writes its three files.

Cost measurements: parameters are ``numel`` of the module's parameters; FLOPs are counted by
``torch.utils.flop_counter.FlopCounterMode`` for one image at the training resolution
(convolutions and matrix products, 2 FLOPs per multiply-add); latency is the median wall time of
batch-1 inference on the CPU with a fixed thread count, after warm-up. FLOPs and latency do not
depend on weight values, so a teacher built with random weights measures the same.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from foprokd.atomic import atomic_paths

MODEL_CARD_FORMAT = "foprokd-model-card"
MODEL_CARD_VERSION = 1
FILE_NAMES: dict[str, str] = {
    "json": "model_card.json",
    "markdown": "model_card.md",
    "curves": "training_curves.png",
    "reliability": "reliability_diagram.png",
}
HEADLINE_METRICS = (
    "balanced_accuracy",
    "macro_f1",
    "mcc",
    "cohen_kappa",
    "accuracy",
    "macro_precision",
    "macro_recall",
)


@dataclass(frozen=True)
class LatencyProtocol:
    """How CPU latency is measured: ``repeats`` timed batch-1 runs after ``warmup`` untimed ones,
    with ``threads`` intra-op threads for both PyTorch and onnxruntime."""

    threads: int = 1
    warmup: int = 3
    repeats: int = 20


@dataclass(frozen=True)
class ModelCost:
    """One model's size and speed: parameter elements, FLOPs per image, ms per image by runtime."""

    params: int
    flops: int
    latency_ms: dict[str, float]


def count_parameters(module: nn.Module) -> int:
    """Number of parameter elements (buffers such as BatchNorm statistics excluded)."""
    return sum(p.numel() for p in module.parameters())


def count_flops(module: nn.Module, image_size: int) -> int:
    """FLOPs of one forward pass on a (1, 3, S, S) image (S = ``image_size``), on the CPU."""
    model = _cpu_eval_copy(module)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, image_size, image_size))
    return int(counter.get_total_flops())


def torch_latency_ms(module: nn.Module, image_size: int, protocol: LatencyProtocol) -> float:
    """Median milliseconds per image of PyTorch eager batch-1 inference on the CPU."""
    model = _cpu_eval_copy(module)
    x = torch.rand(1, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    threads = torch.get_num_threads()
    torch.set_num_threads(protocol.threads)
    try:
        with torch.inference_mode():
            return _median_ms(lambda: model(x), protocol)
    finally:
        torch.set_num_threads(threads)


def onnx_latency_ms(onnx_path: Path, image_size: int, protocol: LatencyProtocol) -> float:
    """Median milliseconds per image of onnxruntime batch-1 inference on the CPU."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = protocol.threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"]
    )
    name = session.get_inputs()[0].name
    rng = np.random.default_rng(0)
    x = rng.random((1, 3, image_size, image_size), dtype=np.float32)
    return _median_ms(lambda: session.run(None, {name: x}), protocol)


def _median_ms(run: Callable[[], object], protocol: LatencyProtocol) -> float:
    for _ in range(protocol.warmup):
        run()
    times = []
    for _ in range(protocol.repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000.0)
    return float(statistics.median(times))


def _cpu_eval_copy(module: nn.Module) -> nn.Module:
    # A copy: measuring must neither move the caller's module off its device nor change its mode.
    return copy.deepcopy(module).cpu().float().eval()


def efficiency(
    student: nn.Module,
    teacher: nn.Module | None,
    *,
    onnx_path: Path,
    image_size: int,
    protocol: LatencyProtocol,
) -> dict[str, Any]:
    """Parameters, FLOPs and CPU latency of the student (PyTorch and its ONNX export) and the
    teacher (PyTorch), with teacher / student ratios."""
    student_cost = ModelCost(
        params=count_parameters(student),
        flops=count_flops(student, image_size),
        latency_ms={
            "onnxruntime": onnx_latency_ms(onnx_path, image_size, protocol),
            "pytorch": torch_latency_ms(student, image_size, protocol),
        },
    )
    result: dict[str, Any] = {
        "image_size": image_size,
        "latency_protocol": {"batch_size": 1, "device": "cpu", **dataclasses.asdict(protocol)},
        "student": dataclasses.asdict(student_cost),
        "teacher": None,
        "teacher_over_student": None,
    }
    if teacher is not None:
        teacher_cost = ModelCost(
            params=count_parameters(teacher),
            flops=count_flops(teacher, image_size),
            latency_ms={"pytorch": torch_latency_ms(teacher, image_size, protocol)},
        )
        result["teacher"] = dataclasses.asdict(teacher_cost)
        result["teacher_over_student"] = {
            "params": teacher_cost.params / max(student_cost.params, 1),
            "flops": teacher_cost.flops / max(student_cost.flops, 1),
            "latency_pytorch": teacher_cost.latency_ms["pytorch"]
            / max(student_cost.latency_ms["pytorch"], 1e-9),
        }
    return result


def _history_rows(history: Sequence[Any]) -> list[dict[str, Any]]:
    return [
        dataclasses.asdict(epoch)
        if dataclasses.is_dataclass(epoch) and not isinstance(epoch, type)
        else dict(epoch)
        for epoch in history
    ]


def build_model_card(
    *,
    report: Mapping[str, Any] | None,
    evaluated_split: str | None,
    history: Sequence[Any],
    dataset: Mapping[str, Any],
    hyper_parameters: Mapping[str, Any],
    student_name: str,
    teacher_name: str | None,
    student: nn.Module,
    teacher: nn.Module | None,
    onnx_path: Path,
    protocol: LatencyProtocol | None = None,
    trust: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The card as a JSON-friendly dict.

    ``report``: ``foprokd.metrics.classification_report`` of the exported student on
    ``evaluated_split`` (None when the dataset had no held-out split), copied verbatim.
    ``history``: the trainer's ``EpochSummary`` per epoch (dataclasses or their dicts).
    ``dataset``: at least ``name`` and ``classes`` (index order); ``class_counts`` may map a
    split to per-class image counts. ``hyper_parameters``: ``TrainConfig.to_dict()`` (its
    ``method`` and ``image_size`` are used). ``student``: the deployable classifier
    ([0, 1] (B, 3, S, S) -> logits); ``teacher``: the frozen teacher, or None when the method
    used none; ``onnx_path``: the exported student. ``trust``: ``foprokd.trust.assess`` with
    ``int8`` (``foprokd.quantize.build_int8``) added, copied verbatim.
    """
    rows = _history_rows(history)
    image_size = int(hyper_parameters["image_size"])
    last = rows[-1] if rows else {}
    return {
        "format": MODEL_CARD_FORMAT,
        "version": MODEL_CARD_VERSION,
        "model": {
            "arch": student_name,
            "image_size": image_size,
            "classes": list(dataset["classes"]),
            "input": "float32 RGB in [0,1], (B,3,S,S), resized to S x S; normalisation inside",
        },
        "method": hyper_parameters["method"],
        "teacher": teacher_name,
        "hyper_parameters": dict(hyper_parameters),
        "dataset": dict(dataset),
        "training": {
            "best_epoch": last.get("best_epoch"),
            "best_val_balanced_accuracy": last.get("best_balanced_accuracy"),
            "epochs_trained": len(rows),
            "train_seconds": sum(row["seconds"] for row in rows),
            "history": rows,
        },
        "evaluation": (
            {"split": evaluated_split, "report": dict(report)} if report is not None else None
        ),
        "efficiency": efficiency(
            student,
            teacher,
            onnx_path=onnx_path,
            image_size=image_size,
            protocol=protocol or LatencyProtocol(),
        ),
        "trust": dict(trust) if trust is not None else None,
        "files": {
            "curves": FILE_NAMES["curves"],
            **({"reliability": FILE_NAMES["reliability"]} if trust is not None else {}),
        },
    }


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(cell) for cell in row) + " |" for row in rows]
    return lines


def render_markdown(card: Mapping[str, Any]) -> str:
    """The human-readable card; every number is the JSON card's, rounded to 4 decimals."""
    model, training = card["model"], card["training"]
    classes = list(model["classes"])
    lines = [
        f"# Model card: {model['arch']} student for {card['dataset'].get('name', 'a dataset')}",
        "",
        f"Distilled with **{card['method']}** from teacher **{card['teacher'] or 'none'}**. "
        f"Input: {model['input']} (S = {model['image_size']}). "
        f"Output: logits over {len(classes)} classes in the order of `config.json`.",
        "",
        *_evaluation_lines(card["evaluation"]),
        *_trust_lines(card.get("trust"), card["files"]),
        "## Cost: student vs teacher",
        "",
        *_efficiency_lines(card["efficiency"]),
        "",
        "## Training",
        "",
        f"Best epoch {training['best_epoch']} of {training['epochs_trained']} by validation "
        f"balanced accuracy ({_fmt(training['best_val_balanced_accuracy'])}); this is the "
        "exported student.",
        "",
        f"![training curves]({card['files']['curves']})",
        "",
        *_table(
            ["epoch", "train loss", "val loss", "val balanced accuracy", "val macro-F1"],
            [
                (
                    e["epoch"],
                    e["train_losses"].get("loss"),
                    e["val_loss"],
                    e["val_balanced_accuracy"],
                    e["val_macro_f1"],
                )
                for e in training["history"]
            ],
        ),
        "",
        "## Data",
        "",
        *_dataset_lines(card["dataset"], classes),
        "",
        "## Hyper-parameters",
        "",
        *_table(["name", "value"], sorted(card["hyper_parameters"].items())),
        "",
        "## Limitations",
        "",
        "Measured on the held-out split of one dataset; validate on your own data and population "
        "before relying on the model, especially for the few-shot classes.",
        "",
    ]
    return "\n".join(lines)


def _evaluation_lines(evaluation: Mapping[str, Any] | None) -> list[str]:
    if evaluation is None:
        return [
            "## Results",
            "",
            "The dataset had no test split, so no held-out evaluation was made; the validation "
            "curves below are the only measure of quality.",
            "",
        ]
    report, split = evaluation["report"], evaluation["split"]
    classes = list(report["class_names"])
    intervals = report.get("intervals") or {}
    headline = intervals.get("headline") or {}
    per_class_bounds = intervals.get("per_class") or [{} for _ in report["per_class"]]
    lines = [
        f"## Results on the {split} split ({report['num_samples']} images)",
        "",
        *_table(
            ["metric", "value", "95 % interval"],
            [(m, report[m], _interval(headline.get(m))) for m in HEADLINE_METRICS],
        ),
        "",
        "### Per class",
        "",
    ]
    with_counts = any("train_count" in row for row in report["per_class"])
    lines += _table(
        [
            "class",
            *(["train images"] if with_counts else []),
            "support",
            "precision",
            "recall",
            "F1",
        ],
        [
            (
                row["class"],
                *([row.get("train_count")] if with_counts else []),
                row["support"],
                *(_with_interval(row[m], bounds.get(m)) for m in ("precision", "recall", "f1")),
            )
            for row, bounds in zip(report["per_class"], per_class_bounds, strict=True)
        ],
    )
    if intervals:
        lines += [
            "",
            "Intervals: 95 %, Wilson score for per-class precision and recall, a percentile "
            f"bootstrap ({intervals['bootstrap']['resamples']} resamples of the images, seed "
            f"{intervals['bootstrap']['seed']}) for F1 and the headline metrics.",
        ]
    groups = report.get("shot_groups")
    if groups:
        lines += [
            "",
            f"### Many / medium / few-shot (many: > {groups['many_above']} train images, "
            f"few: < {groups['few_below']})",
            "",
            *_table(
                ["group", "classes", "accuracy (mean recall)"],
                [
                    (g, ", ".join(groups[g]["classes"]) or "—", groups[g]["accuracy"])
                    for g in ("many", "medium", "few")
                ],
            ),
        ]
    return [
        *lines,
        "",
        "### Confusion matrix (rows: true class, columns: predicted)",
        "",
        *_table(
            ["true \\ predicted", *classes],
            [(name, *row) for name, row in zip(classes, report["confusion_matrix"], strict=True)],
        ),
        "",
    ]


def _interval(bounds: Sequence[float] | None) -> str:
    return "—" if bounds is None else f"[{bounds[0]:.4f}, {bounds[1]:.4f}]"


def _with_interval(value: float, bounds: Sequence[float] | None) -> str:
    return _fmt(value) if bounds is None else f"{value:.4f} {_interval(bounds)}"


def _trust_lines(trust: Mapping[str, Any] | None, files: Mapping[str, str]) -> list[str]:
    """Small-split warnings, calibration, operating points and the INT8 comparison."""
    if trust is None:
        return []
    lines: list[str] = []
    if trust["small_classes"]:
        lines += [
            "### Warnings: classes with fewer than 10 images in a split",
            "",
            *[f"- **{w['split']}**: {w['message']}" for w in trust["small_classes"]],
            "",
        ]
    calibration = trust["calibration"]
    before, after = calibration["uncalibrated"], calibration["calibrated"]
    lines += [
        "## Calibration",
        "",
        f"Temperature T = {calibration['temperature']:.4f}, fitted on the "
        f"{calibration['fitted_on']} split by minimising the negative log-likelihood; it is in "
        "`config.json` and `predict` applies it (probabilities = softmax(logits / T)). "
        f"Measured on the {calibration['measured_on']} split, {calibration['bins']} equal-width "
        "confidence bins.",
        "",
        *_table(
            ["", "ECE", "NLL (nats)"],
            [
                ("before (T = 1)", before["ece"], before["nll"]),
                ("after temperature scaling", after["ece"], after["nll"]),
            ],
        ),
        "",
        f"![reliability diagram]({files['reliability']})",
        "",
        *_operating_point_lines(trust["operating_points"]),
        *_int8_lines(trust.get("int8")),
    ]
    return lines


def _operating_point_lines(points: Mapping[str, Any]) -> list[str]:
    split = points["reported_on"]
    header = ["class", "ROC AUC", "PR AUC"]
    for profile, target in points["profiles"].items():
        header += [
            f"{profile} threshold (sens ≥ {target:.2f} on {points['chosen_on']})",
            f"{profile} {split} sensitivity",
            f"{profile} {split} specificity",
        ]
    rows = []
    for row in points["per_class"]:
        cells: list[Any] = [row["class"], row["roc_auc"], row["pr_auc"]]
        for profile in points["profiles"]:
            point = row["operating_points"][profile]
            at = point.get(split) or {}
            cells += [point["threshold"], at.get("sensitivity"), at.get("specificity")]
        rows.append(cells)
    return [
        "## Operating points (one class against the rest)",
        "",
        f"Thresholds on the calibrated probability, chosen on {points['chosen_on']} to reach "
        f"the target sensitivity and reported on {split}; `predict?threshold_profile=NAME` flags "
        "the classes whose probability reaches them. AUCs are on "
        f"{split} (— where the split lacks positives or negatives).",
        "",
        *_table(header, rows),
        "",
    ]


def _int8_lines(int8: Mapping[str, Any] | None) -> list[str]:
    if int8 is None:
        return []
    reasons = "; ".join(int8["reasons"])
    verdict = (
        f"**withheld**: {reasons}"
        if not int8["published"]
        else f"published as `{int8['file']}`" + (f", although {reasons}" if reasons else "")
    )
    lines = ["## INT8 student", "", f"Mode `{int8['mode']}`: {verdict}.", ""]
    if "fp32" not in int8:
        return lines
    fp32, int8_side, deltas = int8["fp32"], int8["int8"], int8["deltas"]
    protocol = int8["latency_protocol"]
    lines += [
        *_table(
            ["", "FP32", "INT8", "INT8 − FP32"],
            [
                ("size (MB)", fp32["size_mb"], int8_side["size_mb"], None),
                (
                    "batch-1 CPU latency p50 (ms)",
                    fp32["latency_ms"]["p50"],
                    int8_side["latency_ms"]["p50"],
                    None,
                ),
                (
                    "batch-1 CPU latency p95 (ms)",
                    fp32["latency_ms"]["p95"],
                    int8_side["latency_ms"]["p95"],
                    None,
                ),
                *[
                    (m, fp32["report"][m], int8_side["report"][m], deltas[m])
                    for m in HEADLINE_METRICS
                ],
                *[
                    (
                        f"{g}-shot accuracy",
                        fp32["report"]["shot_groups"][g]["accuracy"],
                        int8_side["report"]["shot_groups"][g]["accuracy"],
                        (deltas.get("shot_groups") or {}).get(g),
                    )
                    for g in ("many", "medium", "few")
                    if "shot_groups" in fp32["report"]
                ],
                *[
                    (f"recall {a['class']}", a["recall"], b["recall"], d["recall"])
                    for a, b, d in zip(
                        fp32["report"]["per_class"],
                        int8_side["report"]["per_class"],
                        deltas["per_class"],
                        strict=True,
                    )
                ],
            ],
        ),
        "",
        f"Both models in onnxruntime on the {int8['evaluated_split']} split; static QDQ "
        f"quantization (per-channel int8 weights, uint8 activations) calibrated on "
        f"{int8['calibration_images']} training images. Latency: batch 1, "
        f"{protocol['threads']} CPU thread(s), {protocol['repeats']} runs after "
        f"{protocol['warmup']} warm-up; batch-1 p50 speed-up ×{int8['speedup_p50']:.2f}.",
        "",
    ]
    return lines


def plot_reliability(calibration: Mapping[str, Any], path: Path) -> None:
    """Accuracy against mean confidence per bin, before and after temperature scaling (PNG)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5, 5), layout="constrained")
    axes = figure.subplots()
    axes.plot([0, 1], [0, 1], "k:", label="perfect calibration")
    for key, style in (("uncalibrated", "o--"), ("calibrated", "s-")):
        bins = [b for b in calibration[key]["reliability"] if b["count"]]
        axes.plot(
            [b["confidence"] for b in bins],
            [b["accuracy"] for b in bins],
            style,
            label=f"{key} (ECE {calibration[key]['ece']:.3f})",
        )
    axes.set(
        xlabel="confidence (max probability)",
        ylabel="accuracy",
        title=f"Reliability, T = {calibration['temperature']:.3f}",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    axes.legend(fontsize="small", loc="upper left")
    figure.savefig(path, format="png", dpi=100)


def _efficiency_lines(cost: Mapping[str, Any]) -> list[str]:
    student, teacher = cost["student"], cost["teacher"]
    protocol = cost["latency_protocol"]
    rows: list[Sequence[Any]] = [
        (
            "student",
            student["params"],
            student["flops"] / 1e9,
            student["latency_ms"]["onnxruntime"],
            student["latency_ms"]["pytorch"],
        )
    ]
    if teacher is not None:
        ratio = cost["teacher_over_student"]
        rows += [
            (
                "teacher",
                teacher["params"],
                teacher["flops"] / 1e9,
                None,
                teacher["latency_ms"]["pytorch"],
            ),
            ("teacher / student", ratio["params"], ratio["flops"], None, ratio["latency_pytorch"]),
        ]
    return [
        *_table(
            ["model", "parameters", "GFLOPs", "CPU ms/image (ONNX)", "CPU ms/image (PyTorch)"],
            rows,
        ),
        "",
        f"One {cost['image_size']}×{cost['image_size']} image, batch 1, {protocol['threads']} CPU "
        f"thread(s), median of {protocol['repeats']} runs after {protocol['warmup']} warm-up runs.",
    ]


def _dataset_lines(dataset: Mapping[str, Any], classes: Sequence[str]) -> list[str]:
    lines = [
        f"- {key}: {value}"
        for key, value in dataset.items()
        if key not in {"classes", "class_counts"} and not isinstance(value, (dict, list))
    ]
    if dataset.get("split"):
        lines.append(f"- split: {split_sentence(dataset['split'])}")
    counts = dataset.get("class_counts") or {}
    if counts:
        splits = list(counts)
        lines += [
            "",
            *_table(
                ["class", *splits],
                [(name, *(counts[s][i] for s in splits)) for i, name in enumerate(classes)],
            ),
        ]
    return lines


def split_sentence(split: Mapping[str, Any]) -> str:
    """How the split was made, in words: per image or per patient group, who made it (the user,
    or the service with a seed) and how many groups each split holds."""
    made = {"given": "given by the user", "generated": "made by the service"}.get(
        str(split.get("source")), "of unrecorded origin"
    )
    seed = f" with seed {split['seed']}" if split.get("seed") is not None else ""
    if split.get("unit") != "group":
        return (
            f"per image ({made}{seed}); images of one patient may be in two splits, which "
            "inflates held-out metrics when a patient has several images"
        )
    rule = f", groups from {split['group_by']}" if split.get("group_by") else ""
    groups = split.get("groups") or {}
    counts = ", ".join(f"{name} {count}" for name, count in groups.items())
    return (
        f"per patient group ({made}{seed}{rule}): all images of a group are in one split; "
        f"groups per split: {counts or 'not recorded'}"
    )


def plot_training_curves(history: Sequence[Any], path: Path) -> None:
    """Losses (left) and validation balanced accuracy / macro-F1 (right) per epoch, as PNG."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    rows = _history_rows(history)
    epochs = [row["epoch"] for row in rows]
    figure = Figure(figsize=(11, 4), layout="constrained")
    losses, scores = figure.subplots(1, 2)
    for term in sorted({t for row in rows for t in row["train_losses"]}):
        losses.plot(epochs, [row["train_losses"].get(term) for row in rows], label=f"train {term}")
    losses.plot(epochs, [row["val_loss"] for row in rows], "k--", label="val cross-entropy")
    losses.set(xlabel="epoch", ylabel="loss", title="Losses")
    losses.legend(fontsize="small")
    scores.plot(epochs, [row["val_balanced_accuracy"] for row in rows], label="balanced accuracy")
    scores.plot(epochs, [row["val_macro_f1"] for row in rows], label="macro-F1")
    best = [row["epoch"] for row in rows if row["is_best"]]
    if best:
        scores.axvline(best[-1], color="grey", linestyle=":", label=f"best epoch {best[-1]}")
    scores.set(xlabel="epoch", ylabel="score", title="Validation", ylim=(0.0, 1.0))
    scores.legend(fontsize="small")
    for axes in (losses, scores):
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    figure.savefig(path, format="png", dpi=100)


def write_model_card(out_dir: Path, card: Mapping[str, Any]) -> dict[str, Path]:
    """Write ``model_card.json``, ``model_card.md`` and ``training_curves.png`` for ``card``
    (from ``build_model_card``) into ``out_dir``; return their paths keyed by ``FILE_NAMES``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    trust = card.get("trust")
    order = ("curves", *(("reliability",) if trust else ()), "markdown", "json")
    paths = {kind: out_dir / FILE_NAMES[kind] for kind in order}
    with atomic_paths([paths[kind] for kind in order]) as temps:
        temp = dict(zip(order, temps, strict=True))
        plot_training_curves(card["training"]["history"], temp["curves"])
        if trust:
            plot_reliability(trust["calibration"], temp["reliability"])
        temp["markdown"].write_text(render_markdown(card), encoding="utf-8")
        temp["json"].write_text(json.dumps(card, indent=2, allow_nan=False), encoding="utf-8")
    return paths
