"""Training methods as *distillers* (torchdistill style): given a batch, named losses.

A distiller owns the student forward and any inner game of its own (the FPG step); the loop in
``foprokd.trainer`` owns the student's optimiser and calls ``train_step`` for every method.

Methods: ``ce`` (cross-entropy on fc), ``bsm`` (balanced softmax on fc), ``ekd`` (released EKD,
teacher target f(x)), ``fopro`` (FPG explore step + EKD on f(x̃)), ``fopro_akd`` (as fopro, and
after ``akd_warmup_epochs`` the FPG also plays adversary to the student).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import nn

from foprokd.errors import NonFiniteLoss
from foprokd.fourier import FourierPromptGenerator, FourierPromptLearner
from foprokd.hyperparams import PROMPT_METHODS, TrainConfig
from foprokd.losses import balanced_softmax_loss, cross_entropy_loss, ekd_losses
from foprokd.student import Student, StudentOutput
from foprokd.zoo import FrozenTeacher


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


def _label_distiller(
    config: TrainConfig, student: Student, teacher: FrozenTeacher | None, log_prior: torch.Tensor
) -> Distiller:
    return LabelDistiller(student, log_prior if config.method == "bsm" else None)


def _effective_distiller(
    config: TrainConfig, student: Student, teacher: FrozenTeacher | None, log_prior: torch.Tensor
) -> Distiller:
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
            statistics_weight=config.fpg_statistics_weight,
            teacher=teacher,
        )
    return EffectiveDistiller(
        student,
        teacher,
        log_prior,
        distill_weight=config.distill_weight,
        prompt=prompt,
        adversarial_from_epoch=config.akd_warmup_epochs if config.method == "fopro_akd" else None,
    )


DistillerFactory = Callable[[TrainConfig, Student, FrozenTeacher | None, torch.Tensor], Distiller]
# One entry per method of ``foprokd.hyperparams.METHODS`` (a unit test keeps them equal).
DISTILLERS: dict[str, DistillerFactory] = {
    "ce": _label_distiller,
    "bsm": _label_distiller,
    "ekd": _effective_distiller,
    "fopro": _effective_distiller,
    "fopro_akd": _effective_distiller,
}


def build_distiller(
    config: TrainConfig,
    student: Student,
    teacher: FrozenTeacher | None,
    log_prior: torch.Tensor,
) -> Distiller:
    """The distiller of ``config.method``; log_prior: (C,) from the training counts."""
    return DISTILLERS[config.method](config, student, teacher, log_prior)


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
