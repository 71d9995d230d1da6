"""Where the engine runs and how a run is made repeatable: the device choice and the seeds."""

from __future__ import annotations

import random

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
