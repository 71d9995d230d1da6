"""foprokd.export: every format matches PyTorch, files appear atomically, reload round-trips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import timm
import torch
from torch import nn

from foprokd.errors import ExportParityError
from foprokd.export import export_student, load_exported
from foprokd.student import StudentClassifier
from foprokd.zoo import IMAGENET_MEAN, IMAGENET_STD, PixelNormalisation

SIZE = 32
CLASSES = ["nevus", "melanoma", "bcc"]


def _tiny_classifier() -> StudentClassifier:
    torch.manual_seed(0)
    backbone = timm.create_model("test_resnet", pretrained=False, num_classes=0)
    classifier = StudentClassifier(
        PixelNormalisation(IMAGENET_MEAN, IMAGENET_STD), backbone, nn.Linear(96, len(CLASSES))
    )
    # A few train-mode passes so BatchNorm running stats are not the trivial (0, 1).
    with torch.no_grad():
        for _ in range(3):
            classifier(torch.rand(4, 3, SIZE, SIZE))
    return classifier


def _export(classifier: nn.Module, out_dir: Path) -> dict[str, Path]:
    return export_student(
        classifier,
        classes=CLASSES,
        image_size=SIZE,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        arch="test_resnet",
        out_dir=out_dir,
        extra_config={"method": "fopro_akd"},
    )


def test_export_writes_every_format_with_parity(tmp_path: Path) -> None:
    classifier = _tiny_classifier()
    rng_before = torch.get_rng_state()
    paths = _export(classifier, tmp_path / "student")

    assert classifier.training, "the caller's module must not be switched to eval"
    assert torch.equal(rng_before, torch.get_rng_state())
    assert sorted(p.name for p in (tmp_path / "student").iterdir()) == sorted(
        ["config.json", "student.onnx", "student.safetensors", "student.torchscript.pt"]
    )
    assert set(paths) == {"safetensors", "config", "torchscript", "onnx"}
    config = json.loads(paths["config"].read_text())
    assert config["classes"] == CLASSES
    assert config["image_size"] == SIZE
    assert config["arch"] == "test_resnet"
    assert config["mean"] == pytest.approx(IMAGENET_MEAN)
    assert (
        config["input"]["spec"] == "float32 RGB in [0,1], (B,3,S,S), normalisation inside the model"
    )
    assert config["method"] == "fopro_akd"
    assert config["parity_max_abs_diff"]["onnx"] <= 1e-4

    x = torch.rand(7, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = classifier.eval()(x)
    session = onnxruntime.InferenceSession(str(paths["onnx"]), providers=["CPUExecutionProvider"])
    onnx_logits = session.run(["logits"], {"image": x.numpy()})[0]
    assert np.abs(onnx_logits - expected.numpy()).max() <= 1e-4
    scripted = torch.jit.load(str(paths["torchscript"]))
    assert torch.allclose(scripted(x), expected, atol=1e-4)

    exported = load_exported(tmp_path / "student")
    assert exported.classes == CLASSES
    assert exported.image_size == SIZE
    assert not exported.classifier.training
    with torch.no_grad():
        assert torch.equal(exported.classifier(x), expected)


class _BatchSizeLeak(nn.Module):
    """Adds the batch size to the logits: tracing freezes it, so exports disagree with eager."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, len(CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(2, 3))) + float(x.shape[0])


def test_parity_failure_raises_and_leaves_nothing(tmp_path: Path) -> None:
    out_dir = tmp_path / "student"
    with pytest.raises(ExportParityError, match="batch of 5") as caught:
        _export(_BatchSizeLeak(), out_dir)
    assert caught.value.max_abs_diff > 1e-4
    assert list(out_dir.iterdir()) == []


def test_class_count_must_match_outputs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="4 classes"):
        export_student(
            _tiny_classifier(),
            classes=[*CLASSES, "extra"],
            image_size=SIZE,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            arch="test_resnet",
            out_dir=tmp_path,
        )


def test_mean_and_std_default_to_the_classifiers_own_normalisation(tmp_path: Path) -> None:
    classifier = _tiny_classifier()
    classifier.normalise = PixelNormalisation((0.2, 0.3, 0.4), (0.5, 0.6, 0.7))
    paths = export_student(
        classifier, classes=CLASSES, image_size=SIZE, arch="test_resnet", out_dir=tmp_path / "s"
    )
    config = json.loads(paths["config"].read_text())
    assert config["mean"] == pytest.approx([0.2, 0.3, 0.4])
    assert config["std"] == pytest.approx([0.5, 0.6, 0.7])

    bare = nn.Sequential(nn.Flatten(), nn.Linear(3 * SIZE * SIZE, len(CLASSES)))
    with pytest.raises(ValueError, match="pass mean and std"):
        export_student(
            bare, classes=CLASSES, image_size=SIZE, arch="linear", out_dir=tmp_path / "b"
        )
    assert not (tmp_path / "b").exists()
