"""The student: a timm backbone with the three heads of the released EKD code."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import timm
import torch
from torch import nn

from foprokd.zoo import (
    ModelSpec,
    PixelNormalisation,
    backbone_feature_dim,
    create_backbone,
    resolve_spec,
    resolve_weights,
)


class StudentOutput(NamedTuple):
    """What one student forward pass yields for a batch of B images and C classes."""

    logits: torch.Tensor  # (B, C) raw fc logits; the prediction is their argmax
    proj: torch.Tensor  # (B, D_t) projection compared with the teacher's features
    proj_logits: torch.Tensor  # (B, C) fc_proj on the projection, a training-only head


class StudentClassifier(nn.Module):
    """The deployable part of a student: [0, 1] pixels (B, 3, S, S) -> logits (B, C)."""

    def __init__(self, normalise: PixelNormalisation, backbone: nn.Module, fc: nn.Linear) -> None:
        super().__init__()
        self.normalise = normalise
        self.backbone = backbone
        self.fc = fc

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        """x01: (B, 3, S, S) float RGB in [0, 1] -> logits (B, C)."""
        return self.fc(self.backbone(self.normalise(x01)))


class Student(nn.Module):
    """Backbone features h (B, d) feed ``fc`` (d -> C), ``proj`` (d -> D_t) and ``fc_proj``.

    ``proj`` = Linear(d, d) -> BatchNorm1d -> ReLU -> Linear(d, D_t); ``fc_proj`` = Linear(D_t, C).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        teacher_dim: int,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        super().__init__()
        feature_dim = backbone_feature_dim(backbone)
        self.num_classes = num_classes
        self.teacher_dim = teacher_dim
        self.normalise = PixelNormalisation(mean, std)
        self.backbone = backbone
        self.fc = nn.Linear(feature_dim, num_classes)
        self.proj = nn.Sequential(
            nn.Linear(feature_dim, feature_dim),
            nn.BatchNorm1d(feature_dim),
            nn.ReLU(inplace=True),
            nn.Linear(feature_dim, teacher_dim),
        )
        self.fc_proj = nn.Linear(teacher_dim, num_classes)

    def forward(self, x01: torch.Tensor) -> StudentOutput:
        """x01: (B, 3, S, S) float RGB in [0, 1]; B >= 2 in training mode (BatchNorm1d)."""
        h = self.backbone(self.normalise(x01))
        p = self.proj(h)
        return StudentOutput(logits=self.fc(h), proj=p, proj_logits=self.fc_proj(p))

    def classifier(self) -> StudentClassifier:
        """Normalisation + backbone + fc, sharing this student's modules (no copy)."""
        return StudentClassifier(self.normalise, self.backbone, self.fc)


def build_student(
    arch: str | ModelSpec,
    num_classes: int,
    teacher_dim: int,
    *,
    weights: Path | str | None = None,
    weights_dir: Path | str | None = None,
    allow_random: bool = False,
) -> Student:
    """A student whose backbone starts from ImageNet weights found like a teacher's.

    Weights: explicit file, then ``<weights_dir>/<arch>.safetensors|.pth``, then the offline HF
    cache; random only with ``allow_random``. The heads always start from random init.
    """
    spec = resolve_spec(arch, "student")
    path = resolve_weights(
        spec, weights=weights, weights_dir=weights_dir, allow_random=allow_random
    )
    backbone = create_backbone(
        spec.timm_name, weights=path, allow_random=True, **dict(spec.timm_kwargs)
    )
    return Student(backbone, num_classes, teacher_dim, spec.mean, spec.std)


def build_classifier(arch: str | ModelSpec, num_classes: int) -> StudentClassifier:
    """An untrained classifier skeleton to load an exported ``StudentClassifier`` state dict into.

    Its state-dict keys (``normalise.*``, ``backbone.*``, ``fc.*``) match ``Student.classifier()``.
    """
    spec = resolve_spec(arch, "student")
    backbone = timm.create_model(
        spec.timm_name, pretrained=False, num_classes=0, **dict(spec.timm_kwargs)
    )
    fc = nn.Linear(backbone_feature_dim(backbone), num_classes)
    return StudentClassifier(PixelNormalisation(spec.mean, spec.std), backbone, fc)
