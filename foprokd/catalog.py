"""The built-in zoo as plain data: which teachers and students exist and where their weights go.

Torch-free on purpose: the API describes the zoo and checks that weights are in place without
importing torch; ``foprokd.zoo`` builds the models from these same entries.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Role = Literal["teacher", "student"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Lookup order in a weights directory: the first existing file wins.
WEIGHT_SUFFIXES = (".safetensors", ".pth")


@dataclass(frozen=True)
class ModelSpec:
    """A zoo entry.

    ``feature_dim`` is the size of the pooled pre-logit embedding (timm ``num_classes=0``),
    ``input_size`` the square resolution the published weights were trained at, ``mean``/``std``
    the per-channel normalisation of [0, 1] RGB pixels those weights expect, ``num_params`` the
    backbone's parameter count without any classifier (None when not precomputed).
    """

    name: str
    timm_name: str
    feature_dim: int
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    role: Role
    # Extra timm.create_model arguments as (key, value) pairs: a tuple keeps the spec hashable.
    timm_kwargs: tuple[tuple[str, Any], ...] = ()
    num_params: int | None = None


def _imagenet_spec(
    name: str,
    role: Role,
    feature_dim: int,
    num_params: int,
    input_size: int = 224,
    timm_kwargs: tuple[tuple[str, Any], ...] = (),
) -> ModelSpec:
    return ModelSpec(
        name=name,
        timm_name=name,
        feature_dim=feature_dim,
        input_size=input_size,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        role=role,
        timm_kwargs=timm_kwargs,
        num_params=num_params,
    )


# DINOv2 is trained at 518 px; dynamic size + padding lets it run at any training resolution.
_VIT_ANY_SIZE = (("dynamic_img_size", True), ("dynamic_img_pad", True))

TEACHERS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        _imagenet_spec("resnet50", "teacher", 2048, 23_508_032),
        _imagenet_spec("resnet18", "teacher", 512, 11_176_512),
        _imagenet_spec("efficientnet_b0", "teacher", 1280, 4_007_548),
        _imagenet_spec("vit_small_patch14_dinov2", "teacher", 384, 22_056_192, 518, _VIT_ANY_SIZE),
        _imagenet_spec("convnext_tiny", "teacher", 768, 27_820_128),
    )
}

STUDENTS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        _imagenet_spec("resnet18", "student", 512, 11_176_512),
        _imagenet_spec("mobilenetv3_large_100", "student", 1280, 4_202_032),
        _imagenet_spec("efficientnet_b0", "student", 1280, 4_007_548),
    )
}


def expected_weight_paths(name: str, weights_dir: Path | str) -> list[Path]:
    """Where ``find_weights`` looks, in order: ``<dir>/<name>.safetensors`` then ``.pth``."""
    return [Path(weights_dir) / f"{name}{suffix}" for suffix in WEIGHT_SUFFIXES]


def find_weights(name: str, weights_dir: Path | str) -> Path | None:
    """The first existing file among ``expected_weight_paths(name, weights_dir)``, else None."""
    for path in expected_weight_paths(name, weights_dir):
        if path.is_file():
            return path
    return None
