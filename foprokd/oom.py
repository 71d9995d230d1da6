"""After an out-of-memory error: find the largest batch size that fits, with real steps.

The suggestion goes into ``TrainingOutOfMemory`` so a person (or a retry) can pick a size that
works instead of halving by hand.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

from foprokd.data import LabelledImages, to_unit_float
from foprokd.distillers import Distiller, train_step
from foprokd.errors import NonFiniteLoss
from foprokd.evaluation import batch_logits
from foprokd.hyperparams import TrainConfig
from foprokd.runtime import precision_for
from foprokd.student import Student


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


def train_probe(
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
    precision = precision_for(config, device)

    def step(n: int) -> None:
        index = torch.arange(min(n, len(train_set)))
        x01 = to_unit_float(train_set.images[index].to(device))
        if precision.channels_last:
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
                autocast=precision.autocast,
            )
        if cuda:
            torch.cuda.synchronize(device)

    return step


def eval_probe(
    student: Student, val_set: LabelledImages, *, config: TrainConfig, device: torch.device
) -> Callable[[int], None]:
    """The validation forward pass at batch size ``n`` on the first ``2n`` validation images."""
    precision = precision_for(config, device)

    def forward(n: int) -> None:
        count = min(2 * n, len(val_set))
        subset = LabelledImages(val_set.images[:count], val_set.labels[:count], val_set.classes)
        batch_logits(
            student.classifier(),
            subset,
            batch_size=n,
            device=device,
            autocast=precision.autocast,
            channels_last=precision.channels_last,
        )

    return forward
