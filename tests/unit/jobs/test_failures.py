"""Failure reasons a person can act on, from engine errors and from how a process died."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from app.core.storage import StoreUnavailable
from app.teachers.service import UnknownTeacher
from foprokd.errors import (
    CheckpointInvalid,
    ImageDecodeError,
    NonFiniteLoss,
    TrainingOutOfMemory,
    WeightsInvalid,
    WeightsNotFound,
)
from workers.failures import DatasetUnusable, describe_exit, describe_failure


@pytest.mark.parametrize(
    ("error", "code", "needle"),
    [
        (
            WeightsNotFound("resnet50", [Path("/w/resnet50.safetensors"), Path("/w/resnet50.pth")]),
            "weights_not_found",
            "/w/resnet50.safetensors",
        ),
        (WeightsInvalid(Path("/w/x.pth"), "shape mismatch"), "weights_invalid", "shape mismatch"),
        (TrainingOutOfMemory(64, 32), "out_of_memory", "batch size 32"),
        (NonFiniteLoss(17, {"loss": float("nan")}), "non_finite_loss", "step 17"),
        (ImageDecodeError("img_3.png cannot be decoded"), "invalid_dataset", "img_3.png"),
        (DatasetUnusable("its manifest is missing"), "invalid_dataset", "manifest is missing"),
        (CheckpointInvalid(Path("c.pt"), "other config"), "checkpoint_invalid", "other config"),
        (UnknownTeacher("Unknown teacher 'mine'."), "unknown_teacher", "'mine'"),
        (RuntimeError("boom"), "internal_error", "RuntimeError: boom"),
    ],
)
def test_engine_errors_become_final_failures_with_their_reason(
    error: Exception, code: str, needle: str
) -> None:
    failure = describe_failure(error)
    assert (failure.code, failure.retryable) == (code, False)
    assert needle in failure.reason


@pytest.mark.parametrize(
    "error",
    [StoreUnavailable("s3 down"), OperationalError("SELECT 1", {}, Exception("db down"))],
)
def test_infrastructure_hiccups_are_retried(error: Exception) -> None:
    failure = describe_failure(error)
    assert failure.retryable
    assert failure.code == "infrastructure"


def test_exit_descriptions_name_the_signal() -> None:
    assert "SIGKILL" in describe_exit(-signal.SIGKILL)
    assert "out-of-memory" in describe_exit(-signal.SIGKILL)
    assert "SIGSEGV" in describe_exit(-signal.SIGSEGV)
    assert "code 3" in describe_exit(3)
