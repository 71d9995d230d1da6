"""Why a run failed, in words a person can act on: one mapping from exceptions to job failures.

Engine errors already carry actionable messages (the weights path to fill, the batch size that
fits, the step whose loss went NaN); they become the job's ``failure_reason`` as they are.
Infrastructure hiccups (object store or database unreachable) are ``retryable``: the job goes
back to the queue while attempts are left instead of failing for good.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

from sqlalchemy.exc import OperationalError

from app.core.errors import ServiceError
from app.core.storage import StorageFull, StoreUnavailable
from foprokd.errors import (
    CheckpointInvalid,
    ExportParityError,
    ManifestInvalid,
    NonFiniteLoss,
    TrainingOutOfMemory,
    WeightsInvalid,
    WeightsNotFound,
)


class DatasetUnusable(Exception):
    """The dataset cannot be trained on as stored (manifest missing or wrong, split too small)."""


@dataclass(frozen=True)
class Failure:
    """A job failure: a stable ``code`` (API, dashboards) and a ``reason`` for people."""

    code: str
    reason: str
    retryable: bool = False


_BY_TYPE: tuple[tuple[type[BaseException], str], ...] = (
    (WeightsNotFound, "weights_not_found"),
    (WeightsInvalid, "weights_invalid"),
    (TrainingOutOfMemory, "out_of_memory"),
    (NonFiniteLoss, "non_finite_loss"),
    (ManifestInvalid, "invalid_dataset"),
    (DatasetUnusable, "invalid_dataset"),
    (CheckpointInvalid, "checkpoint_invalid"),
    (ExportParityError, "export_failed"),
)


def describe_failure(exc: BaseException) -> Failure:
    """The job failure ``exc`` stands for (unknown exceptions: ``internal_error``)."""
    if isinstance(exc, ServiceError):  # e.g. the team teacher was deleted since the submit
        return Failure(exc.code, exc.message)
    for kind, code in _BY_TYPE:
        if isinstance(exc, kind):
            reason = str(exc)
            if code == "invalid_dataset":
                reason = f"The dataset cannot be used: {exc}"
            return Failure(code, reason)
    if isinstance(exc, StorageFull):
        return Failure(
            "storage_full",
            f"The object store is full: {exc}. Nothing partial was kept; free space, then "
            "retry the job (it resumes from its last checkpoint).",
        )
    if isinstance(exc, StoreUnavailable | OperationalError):
        return Failure(
            "infrastructure",
            f"The object store or database was unreachable ({type(exc).__name__}: {exc}).",
            retryable=True,
        )
    if isinstance(exc, MemoryError):
        return Failure(
            "out_of_host_memory",
            "The worker ran out of RAM. Use a smaller image size or batch size, or a worker "
            "with more memory.",
        )
    return Failure(
        "internal_error",
        f"Unexpected error {type(exc).__name__}: {exc}. The worker log has the traceback.",
    )


def describe_exit(exitcode: int | None) -> str:
    """Why a training process ended without finishing its job, from its exit code."""
    if exitcode is None:
        return "the training process did not exit"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        if -exitcode == signal.SIGKILL:
            return (
                f"the training process was killed by {name} (often the kernel's out-of-memory "
                "killer: the host ran out of RAM)"
            )
        if -exitcode == signal.SIGSEGV:
            return f"the training process crashed with {name} (segmentation fault)"
        return f"the training process was killed by {name}"
    return f"the training process exited with code {exitcode} before finishing the job"
