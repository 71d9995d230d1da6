"""The released code's input path, kept as the baseline the benchmarks measure against: PIL
decode and torchvision transforms per sample, every epoch."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torchvision import transforms

from foprokd.image_cache import load_rgb, resolve_image_path
from foprokd.manifest import ManifestRow


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
