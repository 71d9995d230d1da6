"""The built-in model zoo as the API sees it: the engine's registries as plain data, no torch.

``foprokd.zoo`` builds models and needs torch; the API only needs to *describe* them and check that
their weights are in place. This table mirrors ``foprokd.zoo.TEACHERS`` / ``STUDENTS`` field for
field, with the backbone parameter counts precomputed; ``tests/unit/teachers/test_catalog.py``
fails the moment the two drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Role = Literal["teacher", "student"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Same order as foprokd.zoo.WEIGHT_SUFFIXES: the first existing file wins.
WEIGHT_SUFFIXES = (".safetensors", ".pth")


@dataclass(frozen=True)
class ZooEntry:
    """One built-in architecture.

    ``num_params`` counts the backbone only (timm ``num_classes=0``: no ImageNet classifier),
    ``feature_dim`` is its pooled embedding size, ``input_size`` the square resolution its
    published weights were trained at, ``mean``/``std`` the normalisation of [0, 1] RGB pixels.
    """

    name: str
    timm_name: str
    feature_dim: int
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    role: Role
    num_params: int
    timm_kwargs: tuple[tuple[str, Any], ...] = ()


def _imagenet(
    name: str,
    role: Role,
    feature_dim: int,
    num_params: int,
    input_size: int = 224,
    timm_kwargs: tuple[tuple[str, Any], ...] = (),
) -> ZooEntry:
    return ZooEntry(
        name=name,
        timm_name=name,
        feature_dim=feature_dim,
        input_size=input_size,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        role=role,
        num_params=num_params,
        timm_kwargs=timm_kwargs,
    )


_VIT_ANY_SIZE = (("dynamic_img_size", True), ("dynamic_img_pad", True))

ZOO_TEACHERS: dict[str, ZooEntry] = {
    entry.name: entry
    for entry in (
        _imagenet("resnet50", "teacher", 2048, 23_508_032),
        _imagenet("resnet18", "teacher", 512, 11_176_512),
        _imagenet("efficientnet_b0", "teacher", 1280, 4_007_548),
        _imagenet("vit_small_patch14_dinov2", "teacher", 384, 22_056_192, 518, _VIT_ANY_SIZE),
        _imagenet("convnext_tiny", "teacher", 768, 27_820_128),
    )
}

ZOO_STUDENTS: dict[str, ZooEntry] = {
    entry.name: entry
    for entry in (
        _imagenet("resnet18", "student", 512, 11_176_512),
        _imagenet("mobilenetv3_large_100", "student", 1280, 4_202_032),
        _imagenet("efficientnet_b0", "student", 1280, 4_007_548),
    )
}


def expected_weight_paths(name: str, weights_dir: Path) -> list[Path]:
    """Where the engine looks for ``name``'s weights, in order (``foprokd.zoo.find_weights``)."""
    return [weights_dir / f"{name}{suffix}" for suffix in WEIGHT_SUFFIXES]


def find_zoo_weights(name: str, weights_dir: Path) -> Path | None:
    """The weights file the engine would load for ``name`` from ``weights_dir``, or None."""
    for path in expected_weight_paths(name, weights_dir):
        if path.is_file():
            return path
    return None
