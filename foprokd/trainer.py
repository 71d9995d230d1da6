"""One generic training loop for every method, with checkpoints, callbacks and typed failures.

The loop owns the student's optimiser, the epochs, validation on val (the best epoch by balanced
accuracy is kept), atomic checkpoints and resume; each method is a distiller
(``foprokd.distillers``) and out-of-memory probing lives in ``foprokd.oom``.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from foprokd.augment import BatchAugment
from foprokd.checkpoint import (
    best_student_state,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from foprokd.data import LabelledImages, index_batches, to_unit_float
from foprokd.distillers import Distiller, build_distiller, train_step
from foprokd.errors import (
    CheckpointInvalid,
    TrainingCancelled,
    TrainingOutOfMemory,
    TrainingSuspended,
)
from foprokd.evaluation import validation_scores
from foprokd.hyperparams import TEACHER_METHODS, TrainConfig
from foprokd.losses import log_class_prior
from foprokd.oom import eval_probe, largest_fitting_halving, train_probe
from foprokd.runtime import Precision, precision_for, resolve_device, seed_everything
from foprokd.student import Student
from foprokd.zoo import FrozenTeacher

CHECKPOINT_NAME = "checkpoint.pt"
# Fields that may change between a run and its resumption without changing the maths.
_RESUMABLE_CHANGES = frozenset({"epochs", "device", "compile", "eval_batch_size"})


@dataclass(frozen=True)
class Progress:
    """Reported after every training step. ``epoch`` and ``step`` count from 1."""

    epoch: int
    epochs: int
    step: int
    steps_per_epoch: int
    global_step: int
    total_steps: int
    images_per_s: float  # over the current epoch so far
    eta_s: float  # seconds until the last epoch's validation ends, estimated
    losses: dict[str, float]  # this step's named terms, "loss" = student total


@dataclass(frozen=True)
class EpochSummary:
    """One finished epoch: mean training losses and validation on the val split."""

    epoch: int
    epochs: int
    train_losses: dict[str, float]
    val_loss: float  # mean cross-entropy of the raw fc logits
    val_balanced_accuracy: float
    val_macro_f1: float
    is_best: bool
    best_epoch: int
    best_balanced_accuracy: float
    seconds: float
    images_per_s: float


class TrainCallbacks:
    """Hooks the loop calls; subclass and override what you need (all default to no-ops)."""

    def on_progress(self, progress: Progress) -> None:
        """After every step."""

    def should_cancel(self) -> bool:
        """Polled before every step; True stops training with TrainingCancelled."""
        return False

    def should_suspend(self) -> bool:
        """Polled before every step, after ``should_cancel``; True writes a checkpoint of this
        step boundary, hands it to ``on_checkpoint`` and stops with TrainingSuspended, so that
        a shutdown loses no finished step."""
        return False

    def on_epoch_end(self, summary: EpochSummary) -> None:
        """After each epoch's validation, before its checkpoint is written."""

    def on_checkpoint(self, path: Path, epoch: int, step: int) -> None:
        """After a checkpoint is complete on disk at ``path``: ``epoch`` epochs (counted from 1)
        are done, plus ``step`` steps of the next one (0 at an epoch's end, the usual case;
        more only for a suspension's checkpoint)."""

    def on_warning(self, message: str) -> None:
        """Something a person should know about the run (random weights, no test split,
        a precision fallback)."""


@dataclass
class TrainResult:
    """The outcome of ``train``: ``student`` holds the best validation epoch's weights."""

    student: Student
    best_epoch: int
    best_balanced_accuracy: float
    history: list[EpochSummary]
    checkpoint_path: Path


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {
        name: value.detach().to("cpu", copy=True) for name, value in module.state_dict().items()
    }


def _total_stride(student: Student) -> int:
    """How much the student's backbone downsamples (timm's ``feature_info``; 32 when unknown,
    as for every zoo student)."""
    info = getattr(student.backbone, "feature_info", None)
    try:
        return int(info[-1]["reduction"])  # type: ignore[index]
    except (TypeError, KeyError, IndexError, ValueError):
        return 32


def bf16_gradients_agree(
    student: Student, train_set: LabelledImages, batch_size: int, *, max_error: float = 4.0
) -> bool:
    """Whether one bf16-autocast backward pass on the CPU gives the student's fp32 gradients.

    Some oneDNN bf16 kernels return garbage (values near 1e30, or inf) for convolutions on tiny
    feature maps, e.g. a strided 3x3 on a 1x1 input; fp32 is unaffected. Checked on a copy of
    the student (no BatchNorm statistics or RNG state change) with the first un-augmented batch:
    every parameter's bf16 gradient must be finite and its error at most ``max_error`` times
    the fp32 gradient's norm. Rounding errors seen stay under 0.5; the faulty kernels are off
    by factors near 1e30.
    """
    probe = copy.deepcopy(student).train()
    # A few images are enough to exercise every layer's kernels at this image size.
    index = torch.arange(min(max(min(batch_size, 8), 2), len(train_set)))
    x01 = to_unit_float(train_set.images[index])
    labels = train_set.labels[index]
    gradients = []
    for autocast in (False, True):
        probe.zero_grad(set_to_none=True)
        try:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                out = probe(x01)
                logits, proj = out.logits.float(), out.proj.float()
                loss = nn.functional.cross_entropy(logits, labels) + proj.pow(2).mean()
            loss.backward()
        except torch.OutOfMemoryError:
            return True  # not checkable here; training's own OOM handling reports the limit
        gradients.append([p.grad for p in probe.parameters()])
    pairs = [(e, r) for e, r in zip(*gradients, strict=True) if e is not None and r is not None]
    if not all(bool(torch.isfinite(r).all()) for _, r in pairs):
        return False
    total = float(torch.sqrt(sum((e.double() ** 2).sum() for e, _ in pairs)))
    for exact, rounded in pairs:
        # A parameter whose exact gradient is ~0 (a bias before BatchNorm) may show only
        # rounding noise, hence the model-wide floor.
        error = float((rounded.double() - exact.double()).norm())
        if error > max_error * float(exact.double().norm()) + 1e-3 * total:
            return False
    return True


def _check_inputs(
    config: TrainConfig,
    train_set: LabelledImages,
    val_set: LabelledImages,
    student: Student,
    teacher: FrozenTeacher | None,
) -> None:
    if train_set.classes != val_set.classes:
        raise ValueError("train and val splits must share one class list")
    if len(train_set) < 2 or len(val_set) < 1:
        raise ValueError(
            f"need >= 2 training and >= 1 validation images, got {len(train_set)}/{len(val_set)}"
        )
    size = train_set.images.shape[-1]
    if size != config.image_size or val_set.images.shape[-1] != size:
        raise ValueError(
            f"config.image_size is {config.image_size} but the images are {size}x{size}: "
            "decode the dataset at the training resolution"
        )
    if student.num_classes != len(train_set.classes):
        raise ValueError(
            f"student has {student.num_classes} classes, data has {len(train_set.classes)}"
        )
    if config.method in TEACHER_METHODS:
        if teacher is None:
            raise ValueError(f"method {config.method!r} needs a teacher")
        if teacher.feature_dim != student.teacher_dim:
            raise ValueError(
                f"student projects to {student.teacher_dim} but the teacher gives "
                f"{teacher.feature_dim} features"
            )


def _steps_per_epoch(n: int, batch_size: int) -> int:
    # A trailing batch of one image is skipped: BatchNorm cannot train on it.
    return n // batch_size + (1 if n % batch_size >= 2 else 0)


@dataclass
class _InEpoch:
    """The part of an epoch done before a suspension: its checkpoint resumes with the next step."""

    step: int
    images_seen: int
    seconds: float
    loss_sums: dict[str, float]


@dataclass
class _RunState:
    epoch: int = 0  # epochs completed
    global_step: int = 0
    best_epoch: int = 0
    best_balanced_accuracy: float = -1.0
    best_student: dict[str, torch.Tensor] | None = None
    history: list[EpochSummary] = field(default_factory=list)
    # Set when resuming from a suspension's checkpoint: how far into epoch ``epoch + 1`` it got.
    in_epoch: _InEpoch | None = None


def _resume(
    path: Path,
    config: TrainConfig,
    train_set: LabelledImages,
    distiller: Distiller,
    optimizer: torch.optim.Optimizer,
) -> tuple[_RunState, dict[str, Any]]:
    """Load a checkpoint into the models and optimisers; returns the run state and RNG states."""
    payload = load_checkpoint(path)
    saved = payload["config"]
    current = config.to_dict()
    changed = sorted(
        k for k in current if k not in _RESUMABLE_CHANGES and saved.get(k) != current[k]
    )
    if changed:
        shown = ", ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in changed)
        raise CheckpointInvalid(path, f"it was written with another configuration ({shown})")
    if payload["classes"] != train_set.classes:
        raise CheckpointInvalid(path, "it was written for another class list")
    distiller.student.load_state_dict(payload["student"])
    distiller.load_checkpoint_state(payload["distiller"])
    optimizer.load_state_dict(payload["optimizer"])
    best = payload["best"]
    state = _RunState(
        epoch=payload["epoch"],
        global_step=payload["global_step"],
        best_epoch=best["epoch"],
        best_balanced_accuracy=best["balanced_accuracy"],
        best_student=best_student_state(payload),
        history=[EpochSummary(**summary) for summary in payload["history"]],
        in_epoch=_InEpoch(**payload["in_epoch"]) if payload.get("in_epoch") else None,
    )
    return state, payload["rng"]


def train(
    config: TrainConfig,
    train_set: LabelledImages,
    val_set: LabelledImages,
    student: Student,
    teacher: FrozenTeacher | None,
    *,
    run_dir: Path,
    callbacks: TrainCallbacks | None = None,
    resume_from: Path | None = None,
) -> TrainResult:
    """Train ``student`` with ``config.method``; keep the epoch with the best val balanced accuracy.

    Images are uint8 (N, 3, S, S) with S == ``config.image_size``. After every epoch, and at
    the step where ``callbacks.should_suspend()`` asks for it, a full checkpoint is written
    atomically to ``run_dir/checkpoint.pt``; ``resume_from`` continues from one bit-for-bit on
    the CPU. ``teacher`` may be None for ``ce`` and ``bsm``.
    Raises TrainingCancelled, TrainingSuspended, NonFiniteLoss, TrainingOutOfMemory,
    CheckpointInvalid.
    """
    callbacks = callbacks or TrainCallbacks()
    _check_inputs(config, train_set, val_set, student, teacher)
    device = resolve_device(config.device)
    if resume_from is None:
        seed_everything(config.seed)
    shuffle = torch.Generator().manual_seed(config.seed)

    distiller = build_distiller(config, student, teacher, log_class_prior(train_set.class_counts()))
    distiller.to(device)
    precision = precision_for(config, device)
    if precision.autocast and device.type == "cpu" and config.image_size < _total_stride(student):
        # Its last strided convolution would see a 1x1 map: the oneDNN bf16 fault's home. One
        # such run passed the gradient check and went NaN two steps later. fp32, silently: it
        # is a choice of kernels for small images, not a fault of the user's run.
        precision = Precision(autocast=False, channels_last=False)
    if (
        precision.autocast
        and device.type == "cpu"
        and not bf16_gradients_agree(student, train_set, config.batch_size)
    ):
        precision = Precision(autocast=False, channels_last=False)
        callbacks.on_warning(
            "bf16 autocast gave gradients unlike fp32 for this model and image size on this "
            "CPU (a oneDNN kernel fault); training in fp32 instead."
        )
    channels_last = precision.channels_last
    if channels_last:
        distiller.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(
        student.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    augment = BatchAugment() if config.augment else None

    run = _RunState()
    if resume_from is not None:
        run, rng_state = _resume(Path(resume_from), config, train_set, distiller, optimizer)
        restore_rng_state(rng_state, shuffle)
    if config.compile:
        student.compile()
        if teacher is not None:
            teacher.compile()

    checkpoint_path = Path(run_dir) / CHECKPOINT_NAME

    def checkpoint(rng: dict[str, Any], in_epoch: _InEpoch | None = None) -> None:
        # At the end of the epoch that set the best, the best weights are the student's own:
        # stored once (``best_student_state`` reads them back).
        best_is_current = (
            in_epoch is None and run.best_student is not None and run.best_epoch == run.epoch
        )
        save_checkpoint(
            {
                "config": config.to_dict(),
                "classes": list(train_set.classes),
                "epoch": run.epoch,
                "global_step": run.global_step,
                # The best epoch's copy is this very state: reuse it rather than copy again.
                "student": run.best_student if best_is_current else _cpu_state(student),
                "distiller": distiller.checkpoint_state(),
                "optimizer": optimizer.state_dict(),
                "rng": rng,
                "best": {
                    "epoch": run.best_epoch,
                    "balanced_accuracy": run.best_balanced_accuracy,
                    "student": None if best_is_current else run.best_student,
                    "student_is_current": best_is_current,
                },
                "history": [dataclasses.asdict(s) for s in run.history],
                "in_epoch": dataclasses.asdict(in_epoch) if in_epoch is not None else None,
            },
            checkpoint_path,
        )
        callbacks.on_checkpoint(checkpoint_path, run.epoch, in_epoch.step if in_epoch else 0)

    steps_per_epoch = _steps_per_epoch(len(train_set), config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    run_start, steps_this_run, val_seconds, last_val_seconds = time.perf_counter(), 0, 0.0, 0.0
    phase, epoch = "training", run.epoch
    out_of_memory = False
    try:
        for epoch in range(run.epoch, config.epochs):
            phase = "training"
            distiller.train()
            done = run.in_epoch or _InEpoch(step=0, images_seen=0, seconds=0.0, loss_sums={})
            run.in_epoch = None
            epoch_start = time.perf_counter() - done.seconds
            images_seen, sums = done.images_seen, dict(done.loss_sums)
            # The shuffle generator as the epoch starts: a suspension's checkpoint stores it, so
            # the resumed epoch draws the same order and skips the steps already done.
            shuffle_at_start = shuffle.get_state()
            batches = index_batches(
                len(train_set), config.batch_size, shuffle=True, generator=shuffle
            )
            remaining = itertools.islice((b for b in batches if b.numel() >= 2), done.step, None)
            for step, index in enumerate(remaining, start=done.step + 1):
                if callbacks.should_cancel():
                    raise TrainingCancelled(epoch + 1, step - 1)
                if callbacks.should_suspend():
                    if step > 1:  # at step 1 the last epoch's checkpoint is this boundary
                        rng = {**capture_rng_state(shuffle), "shuffle": shuffle_at_start}
                        checkpoint(
                            rng,
                            _InEpoch(
                                step=step - 1,
                                images_seen=images_seen,
                                seconds=time.perf_counter() - epoch_start,
                                loss_sums=sums,
                            ),
                        )
                    raise TrainingSuspended(epoch + 1, step - 1)
                x = train_set.images[index].to(device, non_blocking=True)
                y = train_set.labels[index].to(device, non_blocking=True)
                x01 = augment(x) if augment is not None else to_unit_float(x)
                if channels_last:
                    x01 = x01.contiguous(memory_format=torch.channels_last)
                losses = train_step(
                    distiller,
                    optimizer,
                    x01,
                    y,
                    epoch=epoch,
                    global_step=run.global_step + 1,
                    grad_clip_norm=config.grad_clip_norm,
                    autocast=precision.autocast,
                )
                run.global_step += 1
                steps_this_run += 1
                images_seen += int(index.numel())
                for name, value in losses.items():
                    sums[name] = sums.get(name, 0.0) + value
                now = time.perf_counter()
                seconds_per_step = (now - run_start - val_seconds) / steps_this_run
                callbacks.on_progress(
                    Progress(
                        epoch=epoch + 1,
                        epochs=config.epochs,
                        step=step,
                        steps_per_epoch=steps_per_epoch,
                        global_step=run.global_step,
                        total_steps=total_steps,
                        images_per_s=images_seen / max(now - epoch_start, 1e-9),
                        eta_s=seconds_per_step * (total_steps - run.global_step)
                        + last_val_seconds * (config.epochs - epoch),
                        losses=losses,
                    )
                )
            train_seconds = time.perf_counter() - epoch_start

            phase, val_start = "validation", time.perf_counter()
            val_loss, val_bacc, val_f1 = validation_scores(
                student, val_set, config=config, device=device
            )
            last_val_seconds = time.perf_counter() - val_start
            val_seconds += last_val_seconds

            is_best = val_bacc > run.best_balanced_accuracy
            if is_best:
                run.best_epoch, run.best_balanced_accuracy = epoch + 1, val_bacc
                run.best_student = _cpu_state(student)
            summary = EpochSummary(
                epoch=epoch + 1,
                epochs=config.epochs,
                train_losses={name: total / steps_per_epoch for name, total in sums.items()},
                val_loss=val_loss,
                val_balanced_accuracy=val_bacc,
                val_macro_f1=val_f1,
                is_best=is_best,
                best_epoch=run.best_epoch,
                best_balanced_accuracy=run.best_balanced_accuracy,
                seconds=train_seconds + last_val_seconds,
                images_per_s=images_seen / max(train_seconds, 1e-9),
            )
            run.history.append(summary)
            run.epoch = epoch + 1
            callbacks.on_epoch_end(summary)
            checkpoint(capture_rng_state(shuffle))
    except torch.OutOfMemoryError:
        out_of_memory = True
    if out_of_memory:
        # Probe only now, outside the ``except``: the error's traceback holds the failed step's
        # frames, whose activations would otherwise stay on the device and make every probe
        # fail. The run is over either way: the probe may leave the in-memory student
        # mid-step, and a retry resumes from the last checkpoint on disk.
        optimizer.zero_grad(set_to_none=True)
        gc.collect()
        if phase == "validation":
            size = config.eval_batch_size
            fits = eval_probe(student, val_set, config=config, device=device)
        else:
            size = config.batch_size
            fits = train_probe(distiller, optimizer, train_set, config, device, epoch=epoch)
        raise TrainingOutOfMemory(size, largest_fitting_halving(size, fits), phase)

    if run.best_student is not None:
        student.load_state_dict(run.best_student)
    return TrainResult(
        student=student,
        best_epoch=run.best_epoch,
        best_balanced_accuracy=run.best_balanced_accuracy,
        history=run.history,
        checkpoint_path=checkpoint_path,
    )
