"""The model zoo: which teachers and students exist, where their weights live, how to build them.

Nothing here ever downloads: timm models are created with ``pretrained=False`` and weights come
from a local file, a weights directory or an already-populated Hugging Face cache.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from foprokd.catalog import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    STUDENTS,
    TEACHERS,
    ModelSpec,
    Role,
    expected_weight_paths,
    find_hub_cache_file,
    find_weights,
)
from foprokd.errors import WeightsInvalid, WeightsNotFound


def backbone_feature_dim(backbone: nn.Module) -> int:
    """Size of the vector a ``num_classes=0`` timm backbone returns per image."""
    # head_hidden_size differs from num_features where a conv head follows pooling (MobileNetV3).
    for attribute in ("head_hidden_size", "num_features"):
        value = getattr(backbone, attribute, None)
        if isinstance(value, int) and value > 0:
            return value
    raise TypeError(f"{type(backbone).__name__} exposes neither head_hidden_size nor num_features")


def resolve_spec(name_or_spec: str | ModelSpec, role: Role) -> ModelSpec:
    """The zoo entry for a name, or a spec derived from timm's own config for any other timm model.

    Raises KeyError when timm does not know the name either.
    """
    if isinstance(name_or_spec, ModelSpec):
        return name_or_spec
    registry = TEACHERS if role == "teacher" else STUDENTS
    if name_or_spec in registry:
        return registry[name_or_spec]
    if not timm.is_model(name_or_spec):
        known = ", ".join(sorted(registry))
        raise KeyError(f"Unknown {role} {name_or_spec!r}; known: {known} (or any timm model name)")
    cfg = timm.models.get_pretrained_cfg(name_or_spec)
    with torch.device("meta"):
        backbone = timm.create_model(name_or_spec, pretrained=False, num_classes=0)
    input_size = cfg.input_size[-1] if cfg is not None else 224
    mean = tuple(cfg.mean) if cfg is not None else IMAGENET_MEAN
    std = tuple(cfg.std) if cfg is not None else IMAGENET_STD
    return ModelSpec(
        name=name_or_spec,
        timm_name=name_or_spec,
        feature_dim=backbone_feature_dim(backbone),
        input_size=int(input_size),
        mean=(float(mean[0]), float(mean[1]), float(mean[2])),
        std=(float(std[0]), float(std[1]), float(std[2])),
        role=role,
        hf_hub_id=cfg.hf_hub_id if cfg is not None else None,
    )


def find_hub_cache_weights(timm_name: str, cache_dir: Path | None = None) -> Path | None:
    """Weights for timm's default tag of ``timm_name`` if an offline HF cache already holds them."""
    cfg = timm.models.get_pretrained_cfg(timm_name)
    if cfg is None or not cfg.hf_hub_id:
        return None
    return find_hub_cache_file(cfg.hf_hub_id, cache_dir)


def load_state_dict_file(path: Path | str) -> dict[str, torch.Tensor]:
    """Read a state dict from safetensors or a ``torch.save`` file, never executing pickled code.

    Accepts the common wrappers ``{"state_dict": ...}`` / ``{"model": ...}`` and a ``module.``
    prefix from DataParallel. Raises WeightsInvalid for anything that is not name -> tensor.
    """
    path = Path(path)
    raw: Any
    try:
        if path.suffix == ".safetensors":
            raw = load_file(path, device="cpu")
        else:
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except (SafetensorError, pickle.UnpicklingError) as exc:
        raise WeightsInvalid(
            path, f"not a plain tensor state dict (refused without running its code: {exc})"
        ) from exc
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise WeightsInvalid(path, f"cannot be read ({exc})") from exc
    if isinstance(raw, Mapping):
        for wrapper in ("state_dict", "model"):
            if isinstance(raw.get(wrapper), Mapping):
                raw = raw[wrapper]
                break
    if not isinstance(raw, Mapping) or not raw:
        raise WeightsInvalid(path, "expected a non-empty mapping of parameter names to tensors")
    state: dict[str, torch.Tensor] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise WeightsInvalid(path, f"entry {key!r} is not a named tensor")
        state[key.removeprefix("module.")] = value
    return state


def _classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    classifier = getattr(model, "pretrained_cfg", {}).get("classifier") or ()
    names = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    return tuple(f"{name}." for name in names)


def _checked_state_dict(model: nn.Module, path: Path) -> dict[str, torch.Tensor]:
    """The file's tensors that ``model`` needs, after checking they match it exactly.

    The ImageNet classifier in a published checkpoint is dropped: the backbone has no head.
    """
    loaded = load_state_dict_file(path)
    expected = model.state_dict()
    classifier = _classifier_prefixes(model)
    missing = sorted(k for k in expected if k not in loaded)
    unexpected = sorted(k for k in loaded if k not in expected and not k.startswith(classifier))
    wrong_shape = sorted(
        f"{k}: file {tuple(loaded[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in loaded and loaded[k].shape != v.shape
    )
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", wrong_shape)):
        if keys:
            shown = ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")
            problems.append(f"{label} {len(keys)}: {shown}")
    if problems:
        name = getattr(model, "pretrained_cfg", {}).get("architecture", type(model).__name__)
        raise WeightsInvalid(path, f"does not match {name}; " + "; ".join(problems))
    return {k: loaded[k] for k in expected}


def verify_weights(timm_name: str, path: Path | str, **timm_kwargs: Any) -> None:
    """Check that ``path`` holds a state dict for ``timm_name`` (classifier keys may be extra).

    Builds the model on the meta device, so checking a large teacher costs no memory.
    Raises WeightsInvalid naming the missing, unexpected and mis-shaped keys.
    """
    with torch.device("meta"):
        model = timm.create_model(timm_name, pretrained=False, num_classes=0, **timm_kwargs)
    _checked_state_dict(model, Path(path))


def create_backbone(
    timm_name: str,
    *,
    weights: Path | str | None,
    allow_random: bool = False,
    **timm_kwargs: Any,
) -> nn.Module:
    """A timm backbone returning pooled features (B, D) with weights from ``weights``.

    ``weights=None`` is refused unless ``allow_random`` (random weights are for tests only).
    """
    if weights is None and not allow_random:
        raise WeightsNotFound(timm_name, [], role="model")
    model = timm.create_model(timm_name, pretrained=False, num_classes=0, **timm_kwargs)
    if weights is not None:
        model.load_state_dict(_checked_state_dict(model, Path(weights)), strict=True)
    return model


class PixelNormalisation(nn.Module):
    """(x - mean) / std per channel, kept inside the model so callers always feed [0, 1] pixels."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        """x01: (B, 3, H, W) float in [0, 1] -> (B, 3, H, W) normalised."""
        return (x01 - self.mean) / self.std


class FrozenTeacher(nn.Module):
    """A teacher that maps [0, 1] pixels to its pooled features and can never be trained.

    Gradients may flow through it to its *input* (the FPG needs that), never into its weights.
    """

    def __init__(self, backbone: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.normalise = PixelNormalisation(mean, std)
        self.backbone = backbone
        self.feature_dim = backbone_feature_dim(backbone)
        self.backbone.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> FrozenTeacher:
        """Stay in eval mode whatever the caller asks: BatchNorm statistics must not drift."""
        return super().train(False)

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        """x01: (B, 3, H, W) float in [0, 1] -> features (B, feature_dim)."""
        return self.backbone(self.normalise(x01))


def resolve_weights(
    spec: ModelSpec,
    *,
    weights: Path | str | None = None,
    weights_dir: Path | str | None = None,
    allow_random: bool = False,
) -> Path | None:
    """The weights file to use: explicit path, then the weights dir, then the offline HF cache.

    Returns None only when ``allow_random``; otherwise raises WeightsNotFound naming the
    path(s) to fill.
    """
    if weights is not None:
        if not Path(weights).is_file():
            raise WeightsNotFound(spec.name, [Path(weights)], role=spec.role)
        return Path(weights)
    if weights_dir is not None:
        found = find_weights(spec.name, weights_dir)
        if found is not None:
            return found
    cached = find_hub_cache_weights(spec.timm_name)
    if cached is not None:
        return cached
    if allow_random:
        return None
    expected = expected_weight_paths(spec.name, weights_dir) if weights_dir is not None else []
    raise WeightsNotFound(spec.name, expected, role=spec.role)


def load_teacher(
    name_or_spec: str | ModelSpec,
    *,
    weights: Path | str | None = None,
    weights_dir: Path | str | None = None,
    allow_random: bool = False,
) -> FrozenTeacher:
    """A frozen teacher from the zoo (or any timm name), weights resolved by ``resolve_weights``."""
    spec = resolve_spec(name_or_spec, "teacher")
    path = resolve_weights(
        spec, weights=weights, weights_dir=weights_dir, allow_random=allow_random
    )
    backbone = create_backbone(
        spec.timm_name, weights=path, allow_random=True, **dict(spec.timm_kwargs)
    )
    return FrozenTeacher(backbone, spec.mean, spec.std)
