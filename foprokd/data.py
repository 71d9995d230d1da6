"""Images as the engine holds them: uint8 tensors ``(N, 3, S, S)`` at the training resolution S.

A split of a dataset is a ``LabelledImages`` (in memory or memory-mapped from ``ImageCache``);
epochs walk it in index batches and turn each batch to float only on the training device.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch


@dataclass
class LabelledImages:
    """One split of a dataset, in memory or memory-mapped.

    ``images``: uint8 (N, 3, S, S) on the CPU; ``labels``: int64 (N,) indices into ``classes``;
    ``classes``: index -> class name, the same list for every split of a dataset.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(
                f"images must be uint8 (N,3,S,S), got {self.images.dtype} "
                f"{tuple(self.images.shape)}"
            )
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"labels must be ({self.images.shape[0]},), got {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def class_counts(self) -> list[int]:
        """Number of images per class, ``len == len(classes)`` (zeros for absent classes)."""
        return torch.bincount(self.labels, minlength=len(self.classes)).tolist()


def index_batches(
    n: int,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None,
    drop_last: bool = False,
) -> Iterator[torch.Tensor]:
    """Yield int64 index tensors covering ``range(n)`` in batches of ``batch_size``.

    With ``shuffle`` the order is ``torch.randperm`` drawn from ``generator`` (the global CPU RNG
    when ``None``); ``drop_last`` drops a final batch smaller than ``batch_size``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        yield order[start : start + batch_size]


def to_unit_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, S, S) -> float32 in [0, 1] on the same device: the eval path (no augment)."""
    if x.dtype != torch.uint8:
        raise TypeError(f"expected a uint8 image tensor, got {x.dtype}")
    return x.to(torch.float32).div_(255.0)
