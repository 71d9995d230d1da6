"""Scoring a classifier on labelled images: logits, probabilities, the classification report."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from foprokd.data import LabelledImages, index_batches, to_unit_float
from foprokd.hyperparams import TrainConfig
from foprokd.metrics import balanced_accuracy, classification_report, confusion_matrix, macro_f1
from foprokd.runtime import precision_for, resolve_device
from foprokd.student import Student


@torch.no_grad()
def batch_logits(
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
    logits = split_logits(model, images, batch_size=batch_size, device=device)
    return torch.softmax(torch.from_numpy(logits), dim=1).numpy()


def split_logits(
    model: nn.Module,
    images: LabelledImages,
    *,
    batch_size: int = 128,
    device: str | torch.device = "auto",
) -> np.ndarray:
    """Raw logits (N, C) float32 for every image, in order; ``model`` as for ``predict``."""
    classifier = model.classifier() if isinstance(model, Student) else model
    target = resolve_device(device)
    classifier.to(target)
    return batch_logits(classifier, images, batch_size=batch_size, device=target).numpy()


def validation_scores(
    student: Student, images: LabelledImages, *, config: TrainConfig, device: torch.device
) -> tuple[float, float, float]:
    """(mean CE of raw fc logits, balanced accuracy, macro-F1) on ``images``."""
    precision = precision_for(config, device)
    logits = batch_logits(
        student.classifier(),
        images,
        batch_size=config.eval_batch_size,
        device=device,
        autocast=precision.autocast,
        channels_last=precision.channels_last,
    )
    loss = float(nn.functional.cross_entropy(logits, images.labels).item())
    cm = confusion_matrix(images.labels.numpy(), logits.argmax(dim=1).numpy(), len(images.classes))
    return loss, balanced_accuracy(cm), macro_f1(cm)


def evaluate_images(
    classifier: nn.Module,
    images: LabelledImages,
    *,
    train_counts: Sequence[int] | None,
    batch_size: int,
    device: str,
) -> dict[str, Any]:
    """Classification report (``foprokd.metrics.classification_report``) of a [0, 1] classifier."""
    probs = predict(classifier, images, batch_size=batch_size, device=device)
    predicted = np.asarray(probs).argmax(axis=1) if len(images) else np.zeros(0, dtype=np.int64)
    return classification_report(
        images.labels.numpy(), predicted, images.classes, train_counts=train_counts
    )


def concat_images(parts: Sequence[LabelledImages]) -> LabelledImages:
    """Several splits of one dataset as one ``LabelledImages`` (in the given order)."""
    return LabelledImages(
        torch.cat([p.images for p in parts]),
        torch.cat([p.labels for p in parts]),
        list(parts[0].classes),
    )
