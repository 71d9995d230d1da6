"""The INT8 student: close to FP32 on golden inputs, and withheld when it breaks the gate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from foprokd.bundle import GOLDEN_OUTPUTS, verify_bundle, write_bundle
from foprokd.metrics import classification_report
from foprokd.quantize import (
    Int8Gate,
    LatencySpec,
    build_int8,
    gate_reasons,
    onnx_logits,
    stratified_sample,
)

CLASSES = ["red", "green", "blue"]
TRAIN_COUNTS = [200, 50, 5]  # blue is few-shot (< 20 train images)
SIZE = 16
FAST = LatencySpec(threads=1, warmup=1, repeats=3)


def colour_images(labels: np.ndarray, seed: int) -> np.ndarray:
    """uint8 (N, 3, S, S): the channel of the class bright, the others dim, plus noise."""
    rng = np.random.default_rng(seed)
    images = rng.normal(60, 15, (len(labels), 3, SIZE, SIZE))
    images[np.arange(len(labels)), labels] += 130
    return np.clip(images, 0, 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def fp32_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_colour_model(tmp_path_factory.mktemp("int8") / "student.onnx")


def export_colour_model(path: Path) -> Path:
    """A conv net that classifies by the brightest channel (FP32 accuracy 100 %)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 3),
    ).eval()
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias.zero_()
        for c in range(3):  # channels 0-2 pass the colour through, 3-7 stay random and small
            model[0].weight[c, c, 1, 1] = 1.0
        model[0].weight[3:] = torch.randn(5, 3, 3, 3) * 0.05
        model[4].weight.copy_(torch.cat([8.0 * torch.eye(3), torch.zeros(3, 5)], 1))
        model[4].bias.fill_(-4.0)
    torch.onnx.export(
        model,
        (torch.rand(2, 3, SIZE, SIZE),),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
    )
    return path


def _build(fp32: Path, calibration: np.ndarray, mode: str = "auto") -> tuple[dict, Path]:
    labels = np.repeat(np.arange(3), 20)
    out = fp32.parent / "student.int8.onnx"
    out.unlink(missing_ok=True)
    record = build_int8(
        fp32,
        out,
        mode=mode,  # type: ignore[arg-type]
        calibration=calibration,
        eval_images=colour_images(labels, seed=2),
        eval_labels=labels,
        class_names=CLASSES,
        train_counts=TRAIN_COUNTS,
        gate=Int8Gate(min_speedup=None),  # a 16 px model measures noise, not speed
        latency=FAST,
        evaluated_split="test",
    )
    return record, out


def test_int8_is_close_to_fp32_on_golden_inputs(fp32_model: Path) -> None:
    train_labels = np.repeat(np.arange(3), [40, 20, 5])
    calibration = colour_images(train_labels, seed=1)[stratified_sample(train_labels, 32)]
    record, int8 = _build(fp32_model, calibration)
    assert record["published"], record["reasons"]
    assert int8.exists()
    assert record["deltas"]["balanced_accuracy"] == pytest.approx(0.0, abs=0.01)
    assert record["int8"]["size_mb"] > 0
    assert record["fp32"]["latency_ms"]["p95"] > 0

    # The golden files prove the two models agree, and verify_bundle checks them.
    labels = np.repeat(np.arange(3), 4)
    images = colour_images(labels, seed=3)
    folder = fp32_model.parent
    (folder / "config.json").write_text(
        json.dumps(
            {
                "classes": CLASSES,
                "image_size": SIZE,
                "input": {"name": "image"},
                "output": {"name": "logits"},
                "mean": [0.0] * 3,
                "std": [1.0] * 3,
                "temperature": 1.5,
            }
        )
    )
    write_bundle(
        folder,
        config=json.loads((folder / "config.json").read_text()),
        images=images,
        labels=labels.tolist(),
        models={"fp32": fp32_model, "int8": int8},
        provenance={"method": "test"},
    )
    fp32_out = np.load(folder / GOLDEN_OUTPUTS["fp32"])
    int8_out = np.load(folder / GOLDEN_OUTPUTS["int8"])
    assert np.array_equal(fp32_out.argmax(1), int8_out.argmax(1))
    assert np.abs(int8_out - fp32_out).max() <= 0.05 * np.ptp(fp32_out)
    assert verify_bundle(folder).passed
    # Clinic IT has onnxruntime and numpy, not torch: verification must not need it.
    blocked = (
        "import sys; sys.modules['torch'] = None; from pathlib import Path; "
        "from foprokd.bundle import verify_bundle; "
        f"sys.exit(0 if verify_bundle(Path({str(folder)!r})).passed else 1)"
    )
    assert subprocess.run([sys.executable, "-c", blocked], check=False).returncode == 0


def test_an_absurd_calibration_set_is_withheld(fp32_model: Path) -> None:
    # Calibrating on near-black images (pixels 0-5) sets activation ranges 40x too narrow:
    # every channel saturates at the same value on real images and the classes collapse.
    dark = np.random.default_rng(0).integers(0, 6, (16, 3, SIZE, SIZE)).astype(np.uint8)
    record, int8 = _build(fp32_model, dark)
    assert not record["published"]
    assert not int8.exists()
    assert any("balanced accuracy drops" in reason for reason in record["reasons"])
    assert any("few-shot class blue" in reason for reason in record["reasons"])
    assert record["int8"]["report"]["balanced_accuracy"] < 0.9
    # `always` publishes it anyway, still saying which limits it broke.
    forced, int8 = _build(fp32_model, dark, mode="always")
    assert forced["published"]
    assert int8.exists()
    assert forced["reasons"]


def test_never_makes_no_model(fp32_model: Path) -> None:
    record, int8 = _build(fp32_model, np.zeros((1, 3, SIZE, SIZE), np.uint8), mode="never")
    assert record["published"] is False
    assert not int8.exists()
    assert "int8: never" in record["reasons"][0]


def test_gate_protects_a_few_shot_class_the_average_hides() -> None:
    # 20 classes of 10 images; the INT8 model misses one image of few-shot class 19:
    # balanced accuracy drops 0.5 points (allowed), class 19's recall 10 points (not allowed).
    names = [f"c{i}" for i in range(20)]
    y_true = np.repeat(np.arange(20), 10)
    int8_pred = y_true.copy()
    int8_pred[-1] = 0
    counts = [100] * 19 + [5]
    fp32 = classification_report(y_true, y_true, names, train_counts=counts)
    int8 = classification_report(y_true, int8_pred, names, train_counts=counts)
    reasons = gate_reasons(fp32, int8, counts, Int8Gate(), speedup=2.0)
    assert reasons == ["few-shot class c19 loses 10.00 points of recall (limit 5.00)"]
    # The same loss on a many-shot class passes, and a slower model fails min_speedup.
    assert gate_reasons(fp32, int8, [100] * 20, Int8Gate(), speedup=2.0) == []
    slow = gate_reasons(fp32, fp32, counts, Int8Gate(min_speedup=1.0), speedup=0.8)
    assert slow
    assert "not faster" in slow[0]


def test_onnx_logits_take_pixels_or_unit_floats(fp32_model: Path) -> None:
    images = colour_images(np.arange(3), seed=4)
    from_pixels = onnx_logits(fp32_model, images)
    from_floats = onnx_logits(fp32_model, images.astype(np.float32) / 255.0)
    assert np.array_equal(from_pixels, from_floats)
    assert list(from_pixels.argmax(1)) == [0, 1, 2]


def test_stratified_sample_includes_the_rarest_class() -> None:
    labels = np.array([0] * 500 + [1] * 3)
    picked = stratified_sample(labels, 8)
    assert len(picked) == 8
    assert (labels[picked] == 1).sum() == 3
