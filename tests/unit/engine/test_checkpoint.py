"""foprokd.checkpoint: RNG states round-trip exactly; files are atomic and code-free."""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from foprokd.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from foprokd.errors import CheckpointInvalid


def _draws(shuffle: torch.Generator) -> tuple[list[float], list[float], float, list[int]]:
    return (
        torch.rand(3).tolist(),
        np.random.rand(3).tolist(),
        random.random(),
        torch.randperm(6, generator=shuffle).tolist(),
    )


def test_rng_state_survives_a_checkpoint_file(tmp_path: Path) -> None:
    shuffle = torch.Generator().manual_seed(5)
    np.random.randn()  # leave a cached Gaussian in numpy's state
    state = capture_rng_state(shuffle)
    save_checkpoint({"rng": state}, tmp_path / "c.pt")
    expected = _draws(shuffle)

    other = torch.Generator().manual_seed(77)
    restore_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"], other)
    assert _draws(other) == expected


def test_a_failed_write_leaves_the_previous_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"epoch": 1}, path)
    with pytest.raises((TypeError, AttributeError, pickle.PicklingError)):
        save_checkpoint({"epoch": 2, "bad": lambda: None}, path)
    assert load_checkpoint(path)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_load_refuses_foreign_or_broken_files(tmp_path: Path) -> None:
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointInvalid, match="unreadable"):
        load_checkpoint(tmp_path / "garbage.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "weights.pt")
    with pytest.raises(CheckpointInvalid, match="format"):
        load_checkpoint(tmp_path / "weights.pt")
