"""Where the engine runs and how a run is made repeatable: the device choice and the seeds."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> cuda when available, else cpu; anything else as torch understands it."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA); call before building models for a rerun."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass(frozen=True)
class Precision:
    """How a run computes on its device: bf16 autocast, and channels_last memory format."""

    autocast: bool
    channels_last: bool


def has_fast_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast pays on ``device``: CUDA with bf16 support, or a CPU whose oneDNN
    has native bf16 kernels (AVX512-BF16 or AMX); elsewhere bf16 would be emulated and slower."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


class PrecisionSettings(Protocol):
    amp: bool
    cpu_bf16: bool
    channels_last: bool


def precision_for(settings: PrecisionSettings, device: torch.device) -> Precision:
    """The run's precision from its settings (a ``TrainConfig``) and the hardware.

    CUDA: bf16 autocast with ``amp`` where supported, channels_last with ``channels_last``.
    CPU: bf16 with ``cpu_bf16`` (the default) where the CPU has native bf16 kernels, else fp32;
    channels_last only together with bf16 (oneDNN's fp32 convolutions here were 2x slower in
    NHWC, its bf16 ones faster: ``bench/cpu_speed.py``). The trainer checks bf16 gradients
    against fp32 first, because oneDNN returned garbage bf16 gradients (~1e30) for strided
    convolutions on 1x1 feature maps (BENCHMARKS.md).
    """
    if device.type == "cuda":
        autocast = settings.amp and has_fast_bf16(device)
        return Precision(autocast, settings.channels_last)
    autocast = settings.cpu_bf16 and has_fast_bf16(device)
    return Precision(autocast, settings.channels_last and autocast)
