"""A static INT8 student (onnxruntime quantization) and the check that decides whether to ship it.

Torch-free: images arrive as uint8 numpy arrays (N, 3, S, S), the engine's decoded pixels, and
both models run in onnxruntime, so the FP32 and INT8 numbers come from one harness. Weights are
quantized per output channel to int8, activations to uint8 (the U8S8 kernels x86 VNNI runs) in
the QDQ format, with MinMax ranges from a class-stratified sample of training images.

Compression hurts the rare classes first, so the gate looks at them, not only at the average:
under ``auto`` the INT8 file is published only when balanced accuracy drops by at most
``max_balanced_accuracy_drop`` and no few-shot class loses more than
``max_few_shot_recall_drop`` of recall, and (unless ``min_speedup`` is None) when it is not
slower than FP32 at batch 1 on this machine.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from foprokd.hyperparams import Int8Mode
from foprokd.metrics import classification_report, shot_groups

INT8_FILE = "student.int8.onnx"
CALIBRATION_IMAGES = 128
CALIBRATION_BATCH = 16
INFERENCE_BATCH = 32


@dataclass(frozen=True)
class Int8Gate:
    """When ``auto`` publishes: metric drops in fractions (0.01 = 1 point) and, unless
    ``min_speedup`` is None, an FP32 / INT8 batch-1 p50 latency ratio of at least that (an INT8
    model slower than FP32 helps no clinic: mobilenetv3 is, on x86, see BENCHMARKS.md)."""

    max_balanced_accuracy_drop: float = 0.01
    max_few_shot_recall_drop: float = 0.05
    min_speedup: float | None = 1.0


@dataclass(frozen=True)
class LatencySpec:
    """Batch-1 CPU latency: ``repeats`` timed runs after ``warmup``, ``threads`` intra-op."""

    threads: int = 1
    warmup: int = 5
    repeats: int = 50


class CalibrationImages:
    """onnxruntime's ``CalibrationDataReader`` protocol over uint8 (N, 3, S, S) images:
    float32 [0, 1] batches of ``batch_size`` under the model's input name."""

    def __init__(self, images: np.ndarray, input_name: str, batch_size: int = CALIBRATION_BATCH):
        self.images = images
        self.input_name = input_name
        self.batch_size = batch_size
        self._batches: Iterator[np.ndarray] = iter(())
        self.rewind()

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {self.input_name: batch}

    def rewind(self) -> None:
        self._batches = (
            to_unit_float(self.images[i : i + self.batch_size])
            for i in range(0, len(self.images), self.batch_size)
        )


def to_unit_float(images: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [0, 1], the students' input (as ``foprokd.data``)."""
    return np.ascontiguousarray(images, dtype=np.float32) / np.float32(255.0)


def stratified_sample(labels: ArrayLike, count: int, seed: int = 0) -> np.ndarray:
    """Up to ``count`` indices taking classes in turn (shuffled within each class, ``seed``),
    so a rare class is in the calibration set even when the head classes dominate."""
    y = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    pools = [list(rng.permutation(np.flatnonzero(y == c))) for c in np.unique(y)]
    picked: list[int] = []
    while len(picked) < min(count, len(y)):
        for pool in pools:
            if pool and len(picked) < count:
                picked.append(int(pool.pop()))
    return np.sort(np.asarray(picked, dtype=np.int64))


def session(path: Path, threads: int | None = None) -> Any:
    """A CPU onnxruntime session, with ``threads`` intra-op threads when given."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(
        str(path), sess_options=options, providers=["CPUExecutionProvider"]
    )


def onnx_logits(path: Path, images: np.ndarray, batch_size: int = INFERENCE_BATCH) -> np.ndarray:
    """Float32 logits (N, C) of the ONNX model at ``path`` on (N, 3, S, S) images: uint8
    pixels, or float32 already in [0, 1]."""
    runner = session(path)
    name = runner.get_inputs()[0].name

    def prepared(batch: np.ndarray) -> np.ndarray:
        if batch.dtype == np.uint8:
            return to_unit_float(batch)
        return np.ascontiguousarray(batch, dtype=np.float32)

    chunks = [
        np.asarray(runner.run(None, {name: prepared(images[i : i + batch_size])})[0])
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(chunks).astype(np.float32)


def quantize_student(fp32: Path, out: Path, calibration: np.ndarray) -> None:
    """Write the static INT8 QDQ model of ``fp32`` to ``out``, activation ranges from the
    uint8 (N, 3, S, S) ``calibration`` images."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(calibration) == 0:
        raise ValueError("INT8 calibration needs at least one image")
    with tempfile.TemporaryDirectory(prefix="foprokd-int8-") as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        # Shape inference + graph fusion first, as onnxruntime recommends before quantizing.
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        name = session(prepared).get_inputs()[0].name
        quantize_static(
            prepared,
            out,
            CalibrationImages(calibration, name),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )


def latency_ms(
    paths: Mapping[str, Path], image_size: int, spec: LatencySpec, batch: int = 1
) -> dict[str, dict[str, float]]:
    """CPU latency of each ONNX model in ``paths`` on ``batch`` images: p50 and p95
    milliseconds per model. The models take turns pass by pass, so load from other processes
    on a shared worker falls on all of them alike and the speed-up the gate reads holds even
    when the absolute figures drift (timed one after the other, mobilenetv3's ratio swung
    from x0.83 to x1.30 between runs)."""
    x = np.random.default_rng(0).random((batch, 3, image_size, image_size), dtype=np.float32)
    runs = {}
    for kind, path in paths.items():
        runner = session(path, spec.threads)
        feed = {runner.get_inputs()[0].name: x}
        runs[kind] = functools.partial(runner.run, None, feed)
    times = _timed(runs, spec)
    return {
        kind: {"p50": float(statistics.median(t)), "p95": float(np.percentile(t, 95))}
        for kind, t in times.items()
    }


def _timed(runs: Mapping[str, Callable[[], object]], spec: LatencySpec) -> dict[str, list[float]]:
    for run in runs.values():
        for _ in range(spec.warmup):
            run()
    times: dict[str, list[float]] = {kind: [] for kind in runs}
    for _ in range(spec.repeats):
        for kind, run in runs.items():
            start = time.perf_counter()
            run()
            times[kind].append((time.perf_counter() - start) * 1000.0)
    return times


def metric_deltas(fp32: dict[str, Any], int8: dict[str, Any]) -> dict[str, Any]:
    """INT8 minus FP32 for every headline metric, per-class recall/precision/F1 and group."""
    headline = (
        "accuracy",
        "balanced_accuracy",
        "macro_precision",
        "macro_recall",
        "macro_f1",
        "mcc",
        "cohen_kappa",
    )
    deltas: dict[str, Any] = {m: int8[m] - fp32[m] for m in headline}
    deltas["per_class"] = [
        {
            "class": a["class"],
            **{k: b[k] - a[k] for k in ("precision", "recall", "f1")},
        }
        for a, b in zip(fp32["per_class"], int8["per_class"], strict=True)
    ]
    groups_a, groups_b = fp32.get("shot_groups"), int8.get("shot_groups")
    if groups_a and groups_b:
        deltas["shot_groups"] = {
            g: (
                groups_b[g]["accuracy"] - groups_a[g]["accuracy"]
                if groups_a[g]["accuracy"] is not None
                else None
            )
            for g in ("many", "medium", "few")
        }
    return deltas


def gate_reasons(
    fp32: dict[str, Any],
    int8: dict[str, Any],
    train_counts: Sequence[int],
    gate: Int8Gate,
    speedup: float | None,
) -> list[str]:
    """Why the INT8 model fails ``gate`` (empty when it passes). Reports are
    ``classification_report``s of the two models on the same images."""
    reasons = []
    drop = fp32["balanced_accuracy"] - int8["balanced_accuracy"]
    # A tolerance of 1e-9 so that a drop of exactly the limit passes despite float rounding.
    if drop > gate.max_balanced_accuracy_drop + 1e-9:
        reasons.append(
            f"balanced accuracy drops by {100 * drop:.2f} points "
            f"(limit {100 * gate.max_balanced_accuracy_drop:.2f})"
        )
    few = shot_groups(train_counts)["few"]
    for c in few:
        a, b = fp32["per_class"][c], int8["per_class"][c]
        if a["support"] == 0:
            continue
        lost = a["recall"] - b["recall"]
        if lost > gate.max_few_shot_recall_drop + 1e-9:
            reasons.append(
                f"few-shot class {a['class']} loses {100 * lost:.2f} points of recall "
                f"(limit {100 * gate.max_few_shot_recall_drop:.2f})"
            )
    if gate.min_speedup is not None and speedup is not None and speedup < gate.min_speedup:
        reasons.append(
            f"INT8 is not faster: batch-1 p50 speed-up {speedup:.2f}x "
            f"(at least {gate.min_speedup:.2f}x required)"
        )
    return reasons


def build_int8(
    fp32: Path,
    out: Path,
    *,
    mode: Int8Mode,
    calibration: np.ndarray,
    eval_images: np.ndarray,
    eval_labels: np.ndarray,
    class_names: Sequence[str],
    train_counts: Sequence[int],
    gate: Int8Gate,
    latency: LatencySpec,
    evaluated_split: str,
) -> dict[str, Any]:
    """Quantize, compare with the FP32 model on ``eval_images`` and decide; JSON-friendly.

    ``published`` says whether ``out`` was left in place: under ``auto`` only when the gate
    passes, under ``always`` whenever quantization succeeded, never under ``never``. ``reasons``
    say why it was withheld (or, under ``always``, which limits it broke).
    """
    record: dict[str, Any] = {
        "mode": mode,
        "file": INT8_FILE,
        "published": False,
        "evaluated_split": evaluated_split,
        "gate": {
            "max_balanced_accuracy_drop": gate.max_balanced_accuracy_drop,
            "max_few_shot_recall_drop": gate.max_few_shot_recall_drop,
            "min_speedup": gate.min_speedup,
        },
        "reasons": [],
    }
    if mode == "never":
        out.unlink(missing_ok=True)  # an earlier export's, when re-exporting into its folder
        record["reasons"] = ["the job asked for no INT8 model (int8: never)"]
        return record
    image_size = int(eval_images.shape[-1])
    try:
        quantize_student(fp32, out, calibration)
    except Exception as exc:  # onnxruntime raises plain exceptions for unsupported graphs
        out.unlink(missing_ok=True)
        record["reasons"] = [f"quantization failed: {type(exc).__name__}: {exc}"]
        return record
    labels = np.asarray(eval_labels, dtype=np.int64)
    reports = {
        kind: classification_report(
            labels,
            onnx_logits(path, eval_images).argmax(axis=1),
            class_names,
            train_counts=train_counts,
        )
        for kind, path in (("fp32", fp32), ("int8", out))
    }
    timing = latency_ms({"fp32": fp32, "int8": out}, image_size, latency)
    sizes = {kind: os.path.getsize(path) / 1e6 for kind, path in (("fp32", fp32), ("int8", out))}
    speedup = timing["fp32"]["p50"] / max(timing["int8"]["p50"], 1e-9)
    reasons = gate_reasons(reports["fp32"], reports["int8"], train_counts, gate, speedup)
    published = mode == "always" or not reasons
    if not published:
        out.unlink()
    record.update(
        {
            "published": published,
            "reasons": reasons,
            "calibration_images": len(calibration),
            "latency_protocol": {"batch_size": 1, "device": "cpu", **dataclasses.asdict(latency)},
            "speedup_p50": speedup,
            **{
                kind: {"size_mb": sizes[kind], "latency_ms": timing[kind], "report": reports[kind]}
                for kind in ("fp32", "int8")
            },
            "deltas": metric_deltas(reports["fp32"], reports["int8"]),
        }
    )
    return record
