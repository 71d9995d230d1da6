"""Training checkpoints: atomic files that only ever contain tensors and plain Python values.

Loading uses ``torch.load(weights_only=True)``, so a checkpoint cannot carry code; RNG states are
stored as tensors and lists for the same reason.
"""

from __future__ import annotations

import pickle
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from foprokd.atomic import atomic_path
from foprokd.errors import CheckpointInvalid

CHECKPOINT_FORMAT = 1


def capture_rng_state(shuffle_generator: torch.Generator) -> dict[str, Any]:
    """Every RNG the training loop draws from: torch CPU and CUDA, numpy, python, the shuffle."""
    algorithm, keys, position, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "algorithm": str(algorithm),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": random.getstate(),
        "shuffle": shuffle_generator.get_state(),
    }


def restore_rng_state(state: dict[str, Any], shuffle_generator: torch.Generator) -> None:
    """Inverse of ``capture_rng_state``; CUDA states are restored only where CUDA exists."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["algorithm"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    shuffle_generator.set_state(state["shuffle"])


def save_checkpoint(payload: dict[str, Any], path: Path) -> Path:
    """Write ``payload`` to ``path`` atomically: a reader sees the old file or the new, never half.

    The payload gets a ``format`` key. Returns ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, fsync=True) as tmp:
        torch.save({**payload, "format": CHECKPOINT_FORMAT}, tmp)
    return path


def best_student_state(payload: Mapping[str, Any]) -> dict[str, Any] | None:
    """The best epoch's student weights in a checkpoint (None before any epoch was best).

    A checkpoint written at the end of the epoch that set the best stores those weights once,
    as its ``student``, with ``best.student_is_current``: a copy would double the student's share
    of every such file (45 MB of a resnet18 checkpoint's 183).
    """
    best = payload["best"]
    state: dict[str, Any] | None = (
        payload["student"] if best.get("student_is_current") else best["student"]
    )
    return state


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint`` onto the CPU, never running pickled code.

    Raises CheckpointInvalid when the file is unreadable or of another format.
    """
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        raise CheckpointInvalid(path, f"unreadable ({exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointInvalid(path, f"not a format-{CHECKPOINT_FORMAT} training checkpoint")
    return payload
