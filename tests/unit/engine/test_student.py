"""foprokd.student: the three heads, and a deployable classifier that is exactly fc's path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

from foprokd.errors import WeightsNotFound
from foprokd.student import Student, build_classifier, build_student


def test_heads_have_the_released_shapes(make_student: Callable[..., Student]) -> None:
    student = make_student(num_classes=5, teacher_dim=256)
    assert isinstance(student.proj[0], nn.Linear)
    assert isinstance(student.proj[1], nn.BatchNorm1d)
    assert isinstance(student.proj[2], nn.ReLU)
    assert (student.proj[0].in_features, student.proj[0].out_features) == (96, 96)
    assert (student.proj[3].in_features, student.proj[3].out_features) == (96, 256)
    assert (student.fc.in_features, student.fc.out_features) == (96, 5)
    assert (student.fc_proj.in_features, student.fc_proj.out_features) == (256, 5)

    out = student(torch.rand(4, 3, 16, 16))
    assert out.logits.shape == (4, 5)
    assert out.proj.shape == (4, 256)
    assert out.proj_logits.shape == (4, 5)


def test_classifier_is_normalisation_backbone_and_fc_only(
    make_student: Callable[..., Student],
) -> None:
    student = make_student(num_classes=3, teacher_dim=64).eval()
    classifier = student.classifier()
    x = torch.rand(6, 3, 16, 16)
    assert torch.equal(classifier(x), student(x).logits)
    keys = set(classifier.state_dict())
    assert not any(k.startswith(("proj", "fc_proj")) for k in keys)
    assert keys == set(build_classifier("test_resnet", 3).state_dict())
    # The classifier shares the student's modules: training the student updates it.
    with torch.no_grad():
        student.fc.bias.add_(1.0)
    assert torch.allclose(classifier(x), student(x).logits)


def test_student_normalises_inside_the_model(make_student: Callable[..., Student]) -> None:
    student = make_student(num_classes=2, teacher_dim=8).eval()
    x01 = torch.rand(2, 3, 16, 16)
    normalised = (x01 - student.normalise.mean) / student.normalise.std
    expected = student.fc(student.backbone(normalised))
    assert torch.allclose(student.classifier()(x01), expected)


def test_build_student_loads_backbone_weights_from_the_weights_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    torch.manual_seed(0)
    published = timm.create_model("test_resnet", pretrained=False, num_classes=1000).state_dict()
    save_file(published, str(tmp_path / "test_resnet.safetensors"))

    student = build_student("test_resnet", 4, 32, weights_dir=tmp_path)
    assert isinstance(student, Student)
    for name, value in student.backbone.state_dict().items():
        assert torch.equal(value, published[name]), name

    with pytest.raises(WeightsNotFound, match="Student weights for 'resnet18'"):
        build_student("resnet18", 4, 32, weights_dir=tmp_path / "empty")
