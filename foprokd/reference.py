"""The released code's way of training, kept as the baseline the benchmarks measure against:
PIL decode and torchvision transforms per sample every epoch (``PilImageDataset``) and its EKD
recipe (``train_reference``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision import transforms

from foprokd.image_cache import load_rgb, resolve_image_path
from foprokd.losses import ekd_losses, log_class_prior
from foprokd.manifest import ManifestRow
from foprokd.student import Student
from foprokd.zoo import FrozenTeacher


class PilImageDataset(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
    """Reference per-sample path: PIL decode + torchvision transforms on every access.

    Same resize policy as the cache; with ``augment`` the torchvision equivalent of
    ``foprokd.augment.BatchAugment``'s defaults. Items are (float (3, S, S) in [0, 1], class index).
    """

    def __init__(
        self,
        entries: Sequence[ManifestRow],
        *,
        root: Path,
        classes: Sequence[str],
        image_size: int,
        augment: bool,
    ) -> None:
        self.files = [resolve_image_path(root, e.path) for e in entries]
        index = {name: i for i, name in enumerate(classes)}
        self.labels = [index[e.label] for e in entries]
        self.image_size = image_size
        steps: list[Callable[..., object]] = []
        if augment:
            steps += [
                transforms.RandomChoice(
                    [
                        transforms.RandomAffine(0, scale=(0.95, 1.2)),
                        transforms.RandomAffine(0, translate=(0.05, 0.05)),
                        transforms.RandomRotation(45),
                    ]
                ),
                transforms.ColorJitter(brightness=0.25, contrast=0.25, saturation=0.25),
                transforms.RandomHorizontalFlip(),
                transforms.RandomVerticalFlip(),
            ]
        steps.append(transforms.ToTensor())
        self.transform = transforms.Compose(steps)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = load_rgb(self.files[index], self.image_size)
        tensor = self.transform(image)
        assert isinstance(tensor, torch.Tensor)
        return tensor, self.labels[index]


@dataclass(frozen=True)
class ReferenceRecipe:
    """The released code's EKD recipe: Adam, gradient clipping, BSM on both heads + λ·cosine,
    fp32 eager, the teacher's forward every step, and the LAST epoch's student (no selection)."""

    epochs: int = 30
    batch_size: int = 32
    lr: float = 3e-4
    grad_clip_norm: float = 5.0
    distill_weight: float = 3.0
    num_workers: int = 2
    seed: int = 0


def train_reference(
    student: Student,
    teacher: FrozenTeacher,
    rows: Sequence[ManifestRow],
    *,
    root: Path,
    classes: Sequence[str],
    image_size: int,
    recipe: ReferenceRecipe,
    on_epoch: Callable[[int, float], None] | None = None,
) -> Student:
    """Train ``student`` on the ``train`` rows the way the reference code does; returns it after
    the last epoch. ``on_epoch(epoch, mean_loss)`` reports progress. CPU only."""
    train_rows = [row for row in rows if row.split == "train"]
    dataset = PilImageDataset(
        train_rows, root=root, classes=classes, image_size=image_size, augment=True
    )
    loader = DataLoader(
        dataset,
        batch_size=recipe.batch_size,
        shuffle=True,
        num_workers=recipe.num_workers,
        generator=torch.Generator().manual_seed(recipe.seed),
    )
    counts = torch.bincount(torch.tensor(dataset.labels), minlength=len(classes)).tolist()
    log_prior = log_class_prior(counts)
    optimizer = torch.optim.Adam(student.parameters(), lr=recipe.lr)
    teacher.eval()
    for epoch in range(1, recipe.epochs + 1):
        student.train()
        total, steps = 0.0, 0
        for x, y in loader:
            if x.shape[0] < 2:  # BatchNorm in the projection head cannot train on one image
                continue
            out = student(x)
            with torch.no_grad():
                target = teacher(x)
            losses = ekd_losses(
                out.logits,
                out.proj,
                out.proj_logits,
                y,
                target,
                log_prior,
                distill_weight=recipe.distill_weight,
            )
            loss = torch.stack(list(losses.values())).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(student.parameters(), recipe.grad_clip_norm)
            optimizer.step()
            total, steps = total + float(loss.detach()), steps + 1
        if on_epoch is not None:
            on_epoch(epoch, total / max(steps, 1))
    return student
