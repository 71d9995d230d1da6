"""Typed engine errors. Each message tells the user what to do next; the service maps them to
job failure reasons and HTTP answers in one place."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


class EngineError(Exception):
    """Base class of every error the engine raises on purpose."""

    def _init_args(self) -> tuple[Any, ...]:
        return self.args

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuild from the constructor arguments, not the message, so errors survive pickling.
        return (type(self), self._init_args())


class WeightsNotFound(EngineError):
    """No weights file for a model; names every path that would have been accepted."""

    def __init__(
        self, name: str, expected_paths: Sequence[Path | str], role: str = "teacher"
    ) -> None:
        self.name = name
        self.expected_paths = [Path(p) for p in expected_paths]
        self.role = role
        if self.expected_paths:
            first, *others = self.expected_paths
            where = f"Put a timm state dict at {first}"
            if others:
                where += " (or " + ", ".join(str(p) for p in others) + ")"
        else:
            where = "Configure a weights directory and put a timm state dict there"
        super().__init__(
            f"{role.capitalize()} weights for {name!r} not found. {where}, "
            f"or run `fopro admin weights add {name} FILE`."
        )

    def _init_args(self) -> tuple[Any, ...]:
        return (self.name, self.expected_paths, self.role)


class FileUnusable(EngineError):
    """A file exists but cannot be used; ``message`` is formatted with ``path`` and ``reason``."""

    message = "{path} is not usable: {reason}"

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(self.message.format(path=self.path, reason=reason))

    def _init_args(self) -> tuple[Any, ...]:
        return (self.path, self.reason)


class WeightsInvalid(FileUnusable):
    """A weights file exists but cannot be used for the model it was meant for."""

    message = "Weights file {path} is not usable: {reason}"


class NonFiniteLoss(EngineError):
    """A loss became NaN or infinite; training stops instead of silently corrupting weights."""

    def __init__(self, step: int, losses: Mapping[str, float]) -> None:
        self.step = step
        self.losses = dict(losses)
        shown = ", ".join(f"{k}={v:.4g}" for k, v in self.losses.items())
        super().__init__(
            f"Loss is not finite at step {step} ({shown}). Lower the learning rate, check the "
            "data for corrupt images, or disable mixed precision."
        )

    def _init_args(self) -> tuple[Any, ...]:
        return (self.step, self.losses)


class TrainingOutOfMemory(EngineError):
    """The accelerator ran out of memory at the configured batch size.

    ``suggested_batch_size`` is the largest halving of ``batch_size`` that completed a probe step
    on the same device, or None when even a batch of 2 does not fit. ``phase`` is "training" or
    "validation" (the latter is about ``eval_batch_size``).
    """

    def __init__(
        self, batch_size: int, suggested_batch_size: int | None, phase: str = "training"
    ) -> None:
        self.batch_size = batch_size
        self.suggested_batch_size = suggested_batch_size
        self.phase = phase
        setting = "batch size" if phase == "training" else "eval batch size"
        where = f"Out of GPU memory in {phase} at {setting} {batch_size}."
        if suggested_batch_size is None:
            advice = (
                f"Even {setting} 2 does not fit: use a smaller image size, a smaller student or "
                "teacher, or a GPU with more memory."
            )
        else:
            advice = f"Retry with {setting} {suggested_batch_size} or a smaller image size."
        super().__init__(f"{where} {advice}")

    def _init_args(self) -> tuple[Any, ...]:
        return (self.batch_size, self.suggested_batch_size, self.phase)


class TrainingCancelled(EngineError):
    """The caller asked training to stop; raised at the next step boundary."""

    def __init__(self, epoch: int, step: int) -> None:
        self.epoch = epoch
        self.step = step
        super().__init__(f"Training cancelled at epoch {epoch}, step {step}.")

    def _init_args(self) -> tuple[Any, ...]:
        return (self.epoch, self.step)


class TrainingSuspended(TrainingCancelled):
    """The caller asked training to pause (its worker is shutting down): a checkpoint of the
    step boundary it stopped at is on disk, and resuming from it continues with the next step."""

    def __init__(self, epoch: int, step: int) -> None:
        super().__init__(epoch, step)
        self.args = (f"Training suspended at epoch {epoch}, step {step}.",)


class CheckpointInvalid(FileUnusable):
    """A training checkpoint cannot be resumed (unreadable, other format, or another config)."""

    message = "Cannot resume from {path}: {reason}"


class ManifestInvalid(EngineError):
    """A dataset manifest or image folder cannot be used as given; the message says why."""


class ImageDecodeError(ManifestInvalid):
    """An image of the manifest is missing or cannot be decoded; the message names the file."""


class ExportParityError(EngineError):
    """An exported format disagrees with the PyTorch model beyond the tolerance."""

    def __init__(
        self, export_format: str, batch_size: int, max_abs_diff: float, tolerance: float
    ) -> None:
        self.export_format = export_format
        self.batch_size = batch_size
        self.max_abs_diff = max_abs_diff
        self.tolerance = tolerance
        super().__init__(
            f"The {export_format} export differs from PyTorch by {max_abs_diff:.3g} on a batch of "
            f"{batch_size} (tolerance {tolerance:.1g}). The model likely has input-dependent "
            "control flow or an unsupported op; export it in eval mode or report the architecture."
        )

    def _init_args(self) -> tuple[Any, ...]:
        return (self.export_format, self.batch_size, self.max_abs_diff, self.tolerance)
