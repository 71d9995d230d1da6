"""One generic training loop for every method, with checkpoints, callbacks and typed failures.

A method is a *distiller*: given a batch it returns named losses (torchdistill style). The loop
owns the student's optimiser; a distiller may own an inner game of its own (the FPG step).

Methods: ``ce`` (cross-entropy on fc), ``bsm`` (balanced softmax on fc), ``ekd`` (released EKD,
teacher target f(x)), ``fopro`` (FPG explore step + EKD on f(x̃)), ``fopro_akd`` (as fopro, and
after ``akd_warmup_epochs`` the FPG also plays adversary to the student).
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import gc
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from foprokd.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from foprokd.data import BatchAugment, LabelledImages, index_batches, to_unit_float
from foprokd.errors import (
    CheckpointInvalid,
    NonFiniteLoss,
    TrainingCancelled,
    TrainingOutOfMemory,
)
from foprokd.fourier import FourierPromptGenerator, FourierPromptLearner
from foprokd.losses import (
    balanced_softmax_loss,
    cross_entropy_loss,
    ekd_losses,
    log_class_prior,
)
from foprokd.metrics import balanced_accuracy, confusion_matrix, macro_f1
from foprokd.student import Student, StudentOutput
from foprokd.zoo import FrozenTeacher

METHODS: tuple[str, ...] = ("ce", "bsm", "ekd", "fopro", "fopro_akd")
TEACHER_METHODS = frozenset({"ekd", "fopro", "fopro_akd"})
PROMPT_METHODS = frozenset({"fopro", "fopro_akd"})
CHECKPOINT_NAME = "checkpoint.pt"
# Fields that may change between a run and its resumption without changing the maths.
_RESUMABLE_CHANGES = frozenset({"epochs", "device", "compile", "eval_batch_size"})


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run; defaults follow the paper and its released code."""

    method: str = "fopro_akd"
    epochs: int = 30
    batch_size: int = 32
    image_size: int = 224  # must equal S of the uint8 (N, 3, S, S) images given to ``train``
    lr: float = 3e-4
    weight_decay: float = 0.0
    grad_clip_norm: float = 5.0  # 0 disables clipping
    distill_weight: float = 3.0  # λ of the EKD cosine term
    fpg_lr: float = 1e-3
    fpg_alpha: float = 0.5  # M in [1 − α, 1 + α]
    fpg_beta: float = 1.0  # weight of the probe's BSM in the FPG step
    fpg_gamma: float = 0.1  # weight of mean((M − 1)²) in the FPG step
    fpg_steps: int = 1  # FPG steps per student step
    fpg_noise_dim: int = 64
    fpg_embed_dim: int = 64
    fpg_hidden_dim: int = 256
    fpg_grid: tuple[int, int] = (16, 9)
    fpg_band: tuple[float, float] | None = None  # (r_low, r_high) radial band; None = all
    fpg_clamp: bool = True
    akd_weight: float = 1.0  # weight of the adversarial cosine term in the FPG step
    akd_warmup_epochs: int = 1  # explore-only epochs before the FPG turns adversarial
    augment: bool = True
    seed: int = 0
    device: str = "auto"  # "auto" = cuda if available, else cpu
    amp: bool = True  # bf16 autocast, CUDA only
    channels_last: bool = True  # CUDA only
    compile: bool = False  # torch.compile the student and teacher
    eval_batch_size: int = 128

    def __post_init__(self) -> None:
        self.fpg_grid = (int(self.fpg_grid[0]), int(self.fpg_grid[1]))
        if self.fpg_band is not None:
            self.fpg_band = (float(self.fpg_band[0]), float(self.fpg_band[1]))
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.batch_size < 2:
            raise ValueError("batch_size must be >= 2 (the projection head has BatchNorm)")
        positive = ("epochs", "image_size", "lr", "fpg_lr", "fpg_steps", "eval_batch_size")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.akd_warmup_epochs < 0:
            raise ValueError("akd_warmup_epochs must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        """Plain values only (tuples become lists): safe for JSON and for checkpoints."""
        data = dataclasses.asdict(self)
        data["fpg_grid"] = list(self.fpg_grid)
        data["fpg_band"] = list(self.fpg_band) if self.fpg_band is not None else None
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Inverse of ``to_dict``; unknown keys are an error (a typo must not pass silently)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {unknown}")
        values = dict(data)
        if "fpg_grid" in values:
            values["fpg_grid"] = tuple(values["fpg_grid"])
        if values.get("fpg_band") is not None:
            values["fpg_band"] = tuple(values["fpg_band"])
        return cls(**values)


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

    def on_epoch_end(self, summary: EpochSummary) -> None:
        """After each epoch's validation, before its checkpoint is written."""

    def on_checkpoint(self, path: Path, epoch: int) -> None:
        """After the checkpoint of ``epoch`` (counted from 1) is complete on disk at ``path``."""


@dataclass
class TrainResult:
    """The outcome of ``train``: ``student`` holds the best validation epoch's weights."""

    student: Student
    best_epoch: int
    best_balanced_accuracy: float
    history: list[EpochSummary]
    checkpoint_path: Path


class StepLosses(NamedTuple):
    """Named, weighted loss terms of one step (scalars)."""

    student: dict[str, torch.Tensor]  # summed and back-propagated into the student
    prompt: dict[str, torch.Tensor]  # the FPG step's terms, already optimised (detached)


class Distiller(nn.Module, abc.ABC):
    """A training method: the student forward, an optional inner step, the student's losses.

    ``epoch`` is the 0-based index of the current epoch.
    """

    def __init__(self, student: Student) -> None:
        super().__init__()
        self.student = student

    def forward(self, x01: torch.Tensor, targets: torch.Tensor, *, epoch: int) -> StepLosses:
        """x01: (B, 3, S, S) augmented float in [0, 1]; targets: (B,) int64."""
        out = self.student(x01)
        prompt = self.prompt_step(x01, targets, out, epoch=epoch)
        return StepLosses(self.student_losses(x01, targets, out), prompt)

    def prompt_step(
        self, x01: torch.Tensor, targets: torch.Tensor, out: StudentOutput, *, epoch: int
    ) -> dict[str, torch.Tensor]:
        """The inner step that runs before the student's (none by default)."""
        return {}

    @abc.abstractmethod
    def student_losses(
        self, x01: torch.Tensor, targets: torch.Tensor, out: StudentOutput
    ) -> dict[str, torch.Tensor]:
        """Weighted loss terms whose sum the trainer minimises over the student."""

    def checkpoint_state(self) -> dict[str, Any] | None:
        """State beyond the student's to checkpoint (None when there is none)."""
        return None

    def load_checkpoint_state(self, state: dict[str, Any] | None) -> None:
        """Inverse of ``checkpoint_state``."""


class LabelDistiller(Distiller):
    """``ce`` / ``bsm``: the student alone, cross-entropy or balanced softmax on fc."""

    log_prior: torch.Tensor

    def __init__(self, student: Student, log_prior: torch.Tensor | None) -> None:
        super().__init__(student)
        self.balanced = log_prior is not None
        if log_prior is not None:
            self.register_buffer("log_prior", log_prior.detach().clone())

    def student_losses(
        self, x01: torch.Tensor, targets: torch.Tensor, out: StudentOutput
    ) -> dict[str, torch.Tensor]:
        """{"bsm": BSM(fc(h), y)} or {"ce": CE(fc(h), y)}."""
        if self.balanced:
            return {"bsm": balanced_softmax_loss(out.logits, targets, self.log_prior)}
        return {"ce": cross_entropy_loss(out.logits, targets)}


class EffectiveDistiller(Distiller):
    """``ekd`` (prompt=None), ``fopro`` and ``fopro_akd`` (``adversarial_from_epoch`` set).

    The teacher's target is f(x̃) with a fresh prompt when a prompt learner is given, else f(x);
    the student always sees the raw x.
    """

    log_prior: torch.Tensor

    def __init__(
        self,
        student: Student,
        teacher: FrozenTeacher,
        log_prior: torch.Tensor,
        *,
        distill_weight: float = 3.0,
        prompt: FourierPromptLearner | None = None,
        adversarial_from_epoch: int | None = None,
    ) -> None:
        super().__init__(student)
        self.teacher = teacher
        self.prompt = prompt
        self.distill_weight = distill_weight
        self.adversarial_from_epoch = adversarial_from_epoch
        self.register_buffer("log_prior", log_prior.detach().clone())

    def is_adversarial(self, epoch: int) -> bool:
        """Whether the FPG step includes the AKD term in (0-based) ``epoch``."""
        return self.adversarial_from_epoch is not None and epoch >= self.adversarial_from_epoch

    def prompt_step(
        self, x01: torch.Tensor, targets: torch.Tensor, out: StudentOutput, *, epoch: int
    ) -> dict[str, torch.Tensor]:
        """The FPG step (explore, plus the adversary once AKD is active)."""
        if self.prompt is None:
            return {}
        student_proj = out.proj.detach() if self.is_adversarial(epoch) else None
        return self.prompt.step(self.teacher, x01, targets, student_proj)

    def student_losses(
        self, x01: torch.Tensor, targets: torch.Tensor, out: StudentOutput
    ) -> dict[str, torch.Tensor]:
        """EKD terms ``bsm``, ``bsm_proj``, ``distill`` against f(x̃) or f(x)."""
        with torch.no_grad():
            target_input = self.prompt.prompt(x01) if self.prompt is not None else x01
            teacher_features = self.teacher(target_input)
        return ekd_losses(
            out.logits,
            out.proj,
            out.proj_logits,
            targets,
            teacher_features,
            self.log_prior,
            distill_weight=self.distill_weight,
        )

    def checkpoint_state(self) -> dict[str, Any] | None:
        """The prompt learner's state (generator, probe, its optimiser)."""
        return self.prompt.checkpoint_state() if self.prompt is not None else None

    def load_checkpoint_state(self, state: dict[str, Any] | None) -> None:
        """Inverse of ``checkpoint_state``."""
        if self.prompt is not None:
            if state is None:
                raise ValueError("the checkpoint holds no FPG state for a prompt method")
            self.prompt.load_checkpoint_state(state)


def build_distiller(
    config: TrainConfig,
    student: Student,
    teacher: FrozenTeacher | None,
    log_prior: torch.Tensor,
) -> Distiller:
    """The distiller of ``config.method``; log_prior: (C,) from the training counts."""
    if config.method in ("ce", "bsm"):
        return LabelDistiller(student, log_prior if config.method == "bsm" else None)
    if teacher is None:
        raise ValueError(f"method {config.method!r} needs a teacher")
    prompt = None
    if config.method in PROMPT_METHODS:
        generator = FourierPromptGenerator(
            noise_dim=config.fpg_noise_dim,
            embed_dim=config.fpg_embed_dim,
            hidden_dim=config.fpg_hidden_dim,
            grid_size=config.fpg_grid,
            alpha=config.fpg_alpha,
            band=config.fpg_band,
            clamp=config.fpg_clamp,
        )
        prompt = FourierPromptLearner(
            generator,
            teacher.feature_dim,
            log_prior,
            lr=config.fpg_lr,
            beta=config.fpg_beta,
            gamma=config.fpg_gamma,
            adversary_weight=config.akd_weight,
            steps=config.fpg_steps,
        )
    return EffectiveDistiller(
        student,
        teacher,
        log_prior,
        distill_weight=config.distill_weight,
        prompt=prompt,
        adversarial_from_epoch=config.akd_warmup_epochs if config.method == "fopro_akd" else None,
    )


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


def train_step(
    distiller: Distiller,
    optimizer: torch.optim.Optimizer,
    x01: torch.Tensor,
    targets: torch.Tensor,
    *,
    epoch: int,
    global_step: int,
    grad_clip_norm: float,
    autocast: bool = False,
) -> dict[str, float]:
    """One step of any method: the distiller's inner step, then one student update.

    Returns the named terms as floats (``loss`` = the student's total; ``fpg_*`` = the FPG's).
    Raises NonFiniteLoss naming ``global_step`` before the student's weights change.
    """
    with torch.autocast(x01.device.type, dtype=torch.bfloat16, enabled=autocast):
        losses = distiller(x01, targets, epoch=epoch)
    total = torch.stack(list(losses.student.values())).sum()
    named = {name: value.detach() for name, value in losses.student.items()}
    named["loss"] = total.detach()
    if losses.prompt:
        named.update({f"fpg_{name}": value for name, value in losses.prompt.items()})
        named["fpg_loss"] = torch.stack(list(losses.prompt.values())).sum()
    # One device sync for all terms.
    logged = dict(
        zip(named, torch.stack([v.float() for v in named.values()]).tolist(), strict=True)
    )
    if not all(math.isfinite(v) for v in logged.values()):
        raise NonFiniteLoss(global_step, logged)
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    if grad_clip_norm > 0:
        nn.utils.clip_grad_norm_(distiller.student.parameters(), grad_clip_norm)
    optimizer.step()
    return logged


@torch.no_grad()
def _logits(
    model: nn.Module,
    images: LabelledImages,
    *,
    batch_size: int,
    device: torch.device,
    autocast: bool = False,
    channels_last: bool = False,
) -> torch.Tensor:
    """Float32 logits (N, C) on the CPU for every image, in order, model in eval mode."""
    was_training = model.training
    model.eval()
    chunks = []
    try:
        for index in index_batches(len(images), batch_size, shuffle=False, generator=None):
            x01 = to_unit_float(images.images[index].to(device))
            if channels_last:
                x01 = x01.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                chunks.append(model(x01).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(chunks) if chunks else torch.empty(0, len(images.classes))


def predict(
    model: nn.Module,
    images: LabelledImages,
    *,
    batch_size: int = 128,
    device: str | torch.device = "auto",
) -> np.ndarray:
    """Class probabilities (N, C) float32 (softmax of raw fc logits) for every image, in order.

    ``model`` maps float [0, 1] (B, 3, S, S) to logits, e.g. ``Student.classifier()``; a
    ``Student`` is accepted and its classifier used. The model is moved to ``device``.
    """
    classifier = model.classifier() if isinstance(model, Student) else model
    target = resolve_device(device)
    classifier.to(target)
    logits = _logits(classifier, images, batch_size=batch_size, device=target)
    return torch.softmax(logits, dim=1).numpy()


def _validate(
    student: Student, images: LabelledImages, *, config: TrainConfig, device: torch.device
) -> tuple[float, float, float]:
    """(mean CE of raw fc logits, balanced accuracy, macro-F1) on ``images``."""
    cuda = device.type == "cuda"
    logits = _logits(
        student.classifier(),
        images,
        batch_size=config.eval_batch_size,
        device=device,
        autocast=cuda and config.amp,
        channels_last=cuda and config.channels_last,
    )
    loss = float(nn.functional.cross_entropy(logits, images.labels).item())
    cm = confusion_matrix(images.labels.numpy(), logits.argmax(dim=1).numpy(), len(images.classes))
    return loss, balanced_accuracy(cm), macro_f1(cm)


def largest_fitting_halving(size: int, fits: Callable[[int], None]) -> int | None:
    """After an out-of-memory error at ``size``: the largest of size/2, size/4, ... ≥ 2 (≥ 1 is
    not useful: the projection head has BatchNorm) for which ``fits(n)`` runs without running out
    of memory, or None. Each try starts from an emptied CUDA cache."""
    candidate = size // 2
    while candidate >= 2:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        try:
            fits(candidate)
        except torch.OutOfMemoryError:
            candidate //= 2
            continue
        return candidate
    return None


def _train_probe(
    distiller: Distiller,
    optimizer: torch.optim.Optimizer,
    train_set: LabelledImages,
    config: TrainConfig,
    device: torch.device,
    *,
    epoch: int,
) -> Callable[[int], None]:
    """One real training step (FPG step included) on the first ``n`` training images."""
    cuda = device.type == "cuda"

    def step(n: int) -> None:
        index = torch.arange(min(n, len(train_set)))
        x01 = to_unit_float(train_set.images[index].to(device))
        if cuda and config.channels_last:
            x01 = x01.contiguous(memory_format=torch.channels_last)
        # A non-finite loss still means the forward pass fit; the loss is not what is probed.
        with contextlib.suppress(NonFiniteLoss):
            train_step(
                distiller,
                optimizer,
                x01,
                train_set.labels[index].to(device),
                epoch=epoch,
                global_step=0,
                grad_clip_norm=config.grad_clip_norm,
                autocast=cuda and config.amp,
            )
        if cuda:
            torch.cuda.synchronize(device)

    return step


def _eval_probe(
    student: Student, val_set: LabelledImages, *, config: TrainConfig, device: torch.device
) -> Callable[[int], None]:
    """The validation forward pass at batch size ``n`` on the first ``2n`` validation images."""

    def forward(n: int) -> None:
        count = min(2 * n, len(val_set))
        subset = LabelledImages(val_set.images[:count], val_set.labels[:count], val_set.classes)
        _logits(
            student.classifier(),
            subset,
            batch_size=n,
            device=device,
            autocast=device.type == "cuda" and config.amp,
            channels_last=device.type == "cuda" and config.channels_last,
        )

    return forward


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {
        name: value.detach().to("cpu", copy=True) for name, value in module.state_dict().items()
    }


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
class _RunState:
    epoch: int = 0  # epochs completed
    global_step: int = 0
    best_epoch: int = 0
    best_balanced_accuracy: float = -1.0
    best_student: dict[str, torch.Tensor] | None = None
    history: list[EpochSummary] = field(default_factory=list)


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
        best_student=best["student"],
        history=[EpochSummary(**summary) for summary in payload["history"]],
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

    Images are uint8 (N, 3, S, S) with S == ``config.image_size``. After every epoch a full
    checkpoint is written atomically to ``run_dir/checkpoint.pt``; ``resume_from`` continues
    from one bit-for-bit on the CPU. ``teacher`` may be None for ``ce`` and ``bsm``.
    Raises TrainingCancelled, NonFiniteLoss, TrainingOutOfMemory, CheckpointInvalid.
    """
    callbacks = callbacks or TrainCallbacks()
    _check_inputs(config, train_set, val_set, student, teacher)
    device = resolve_device(config.device)
    cuda = device.type == "cuda"
    if resume_from is None:
        seed_everything(config.seed)
    shuffle = torch.Generator().manual_seed(config.seed)

    distiller = build_distiller(config, student, teacher, log_class_prior(train_set.class_counts()))
    distiller.to(device)
    channels_last = cuda and config.channels_last
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
    steps_per_epoch = _steps_per_epoch(len(train_set), config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    run_start, steps_this_run, val_seconds, last_val_seconds = time.perf_counter(), 0, 0.0, 0.0
    phase, epoch = "training", run.epoch
    out_of_memory = False
    try:
        for epoch in range(run.epoch, config.epochs):
            phase = "training"
            distiller.train()
            epoch_start, images_seen = time.perf_counter(), 0
            sums: dict[str, float] = {}
            batches = index_batches(
                len(train_set), config.batch_size, shuffle=True, generator=shuffle
            )
            for step, index in enumerate((b for b in batches if b.numel() >= 2), start=1):
                if callbacks.should_cancel():
                    raise TrainingCancelled(epoch + 1, step - 1)
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
                    autocast=cuda and config.amp,
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
            val_loss, val_bacc, val_f1 = _validate(student, val_set, config=config, device=device)
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
            save_checkpoint(
                {
                    "config": config.to_dict(),
                    "classes": list(train_set.classes),
                    "epoch": run.epoch,
                    "global_step": run.global_step,
                    "student": _cpu_state(student),
                    "distiller": distiller.checkpoint_state(),
                    "optimizer": optimizer.state_dict(),
                    "rng": capture_rng_state(shuffle),
                    "best": {
                        "epoch": run.best_epoch,
                        "balanced_accuracy": run.best_balanced_accuracy,
                        "student": run.best_student,
                    },
                    "history": [dataclasses.asdict(s) for s in run.history],
                },
                checkpoint_path,
            )
            callbacks.on_checkpoint(checkpoint_path, run.epoch)
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
            fits = _eval_probe(student, val_set, config=config, device=device)
        else:
            size = config.batch_size
            fits = _train_probe(distiller, optimizer, train_set, config, device, epoch=epoch)
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
