"""foprokd.errors: messages tell the user what to do; errors survive pickling (Celery)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from foprokd.errors import (
    CheckpointInvalid,
    EngineError,
    NonFiniteLoss,
    TrainingCancelled,
    TrainingOutOfMemory,
    WeightsInvalid,
    WeightsNotFound,
)


def test_weights_not_found_names_the_file_to_fill_and_the_command() -> None:
    error = WeightsNotFound("resnet50", [Path("/w/resnet50.safetensors"), Path("/w/resnet50.pth")])
    assert str(error) == (
        "Teacher weights for 'resnet50' not found. Put a timm state dict at "
        "/w/resnet50.safetensors (or /w/resnet50.pth), or run "
        "`fopro admin weights add resnet50 FILE`."
    )


@pytest.mark.parametrize(
    "error",
    [
        WeightsNotFound("resnet18", [Path("/w/resnet18.pth")], role="student"),
        WeightsInvalid(Path("/w/x.pth"), "missing 3 keys"),
        NonFiniteLoss(17, {"loss": float("nan"), "bsm": 1.0}),
        TrainingOutOfMemory(64, 32),
        TrainingOutOfMemory(64, None, "validation"),
        TrainingCancelled(2, 5),
        CheckpointInvalid(Path("/r/checkpoint.pt"), "other config"),
    ],
)
def test_errors_round_trip_through_pickle(error: EngineError) -> None:
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is type(error)
    assert str(clone) == str(error)
    assert isinstance(clone, EngineError)


def test_non_finite_loss_names_the_step() -> None:
    assert "step 17" in str(NonFiniteLoss(17, {"loss": float("inf")}))
    assert "batch size 32" in str(TrainingOutOfMemory(64, 32))
