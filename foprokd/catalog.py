"""The built-in zoo as plain data: which teachers and students exist and where their weights go.

Torch-free on purpose: the API describes the zoo and checks that weights are in place without
importing torch; ``foprokd.zoo`` builds the models from these same entries.
"""

from __future__ import annotations

import os
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
    # Hugging Face repo of timm's default weights (an offline HF cache may already hold them).
    hf_hub_id: str | None = None


def _imagenet_spec(
    name: str,
    role: Role,
    feature_dim: int,
    num_params: int,
    hf_tag: str,
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
        hf_hub_id=f"timm/{name}.{hf_tag}",
    )


# DINOv2 is trained at 518 px; dynamic size + padding lets it run at any training resolution.
_VIT_ANY_SIZE = (("dynamic_img_size", True), ("dynamic_img_pad", True))


def _by_name(*specs: ModelSpec) -> dict[str, ModelSpec]:
    return {spec.name: spec for spec in specs}


TEACHERS: dict[str, ModelSpec] = _by_name(
    _imagenet_spec("resnet50", "teacher", 2048, 23_508_032, "a1_in1k"),
    _imagenet_spec("resnet18", "teacher", 512, 11_176_512, "a1_in1k"),
    _imagenet_spec("efficientnet_b0", "teacher", 1280, 4_007_548, "ra_in1k"),
    _imagenet_spec(
        "vit_small_patch14_dinov2", "teacher", 384, 22_056_192, "lvd142m", 518, _VIT_ANY_SIZE
    ),
    _imagenet_spec("convnext_tiny", "teacher", 768, 27_820_128, "in12k_ft_in1k"),
)

STUDENTS: dict[str, ModelSpec] = _by_name(
    _imagenet_spec("resnet18", "student", 512, 11_176_512, "a1_in1k"),
    _imagenet_spec("mobilenetv3_large_100", "student", 1280, 4_202_032, "ra_in1k"),
    _imagenet_spec("efficientnet_b0", "student", 1280, 4_007_548, "ra_in1k"),
    # The smallest: 1.5 M parameters, 0.06 GFLOPs at 224 px, for a clinic PC without a GPU.
    _imagenet_spec("mobilenetv3_small_100", "student", 1024, 1_517_856, "lamb_in1k"),
)


def expected_weight_paths(name: str, weights_dir: Path | str) -> list[Path]:
    """Where ``find_weights`` looks, in order: ``<dir>/<name>.safetensors`` then ``.pth``."""
    return [Path(weights_dir) / f"{name}{suffix}" for suffix in WEIGHT_SUFFIXES]


def find_weights(name: str, weights_dir: Path | str) -> Path | None:
    """The first existing file among ``expected_weight_paths(name, weights_dir)``; for a zoo
    entry then its timm default weights in the offline HF cache; else None."""
    for path in expected_weight_paths(name, weights_dir):
        if path.is_file():
            return path
    spec = TEACHERS.get(name) or STUDENTS.get(name)
    if spec is not None and spec.hf_hub_id is not None:
        return find_hub_cache_file(spec.hf_hub_id)
    return None


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, honouring HF_HUB_CACHE and HF_HOME like huggingface_hub does."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    hf_home = os.environ.get("HF_HOME") or os.path.join(Path.home(), ".cache", "huggingface")
    return Path(hf_home) / "hub"


def find_hub_cache_file(hf_hub_id: str, cache_dir: Path | None = None) -> Path | None:
    """The weights file of repo ``hf_hub_id`` in an HF hub cache (``refs/main`` first, else any
    snapshot), without network access; None when the cache does not hold it."""
    repo_dir = (cache_dir or hub_cache_dir()) / ("models--" + hf_hub_id.replace("/", "--"))
    ref = repo_dir / "refs" / "main"
    if ref.is_file():
        snapshots = [repo_dir / "snapshots" / ref.read_text().strip()]
    else:
        snapshots = sorted((repo_dir / "snapshots").glob("*"))
    for snapshot in snapshots:
        for filename in ("model.safetensors", "pytorch_model.bin"):
            if (snapshot / filename).is_file():
                return snapshot / filename
    return None
