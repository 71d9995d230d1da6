"""Train/val/test splits: split names and their aliases, and THE stratified split.

Torch-free and shared: the service splits an upload with it and ``python -m foprokd`` splits a
manifest or image folder with it, so the same items and seed give the same split everywhere.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Mapping, Sequence

SPLITS: tuple[str, ...] = ("train", "val", "test")
_ALIASES: dict[str, str] = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
}
MAX_SEED = 2**31 - 1
DEFAULT_VAL_FRACTION = 0.1
DEFAULT_TEST_FRACTION = 0.2


def normalize_split(value: str) -> str | None:
    """``train``, ``val`` or ``test`` for a split name or a common alias (``validation``,
    ``Valid``, ``testing``, ...), None for anything else."""
    return _ALIASES.get(value.strip().lower())


def new_seed() -> int:
    """A fresh split seed, recorded with the dataset so the split can be reproduced."""
    return secrets.randbelow(MAX_SEED + 1)


def split_sizes(count: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """(train, val, test) sizes for a class of ``count`` >= 2 images.

    Rounds ``count * fraction``; with 3 or more images every non-zero fraction gets at least one
    image, and train always keeps at least one. Two images: one train, one test.
    """
    if count < 2:
        raise ValueError(f"a class needs at least 2 images to be split, got {count}")
    if count == 2:
        return 1, 0, 1
    n_val = max(1, round(count * val_fraction)) if val_fraction > 0 else 0
    n_test = max(1, round(count * test_fraction)) if test_fraction > 0 else 0
    while n_val + n_test >= count:
        if n_val >= n_test and n_val > (1 if val_fraction > 0 else 0):
            n_val -= 1
        elif n_test > 1:
            n_test -= 1
        else:
            n_val -= 1
    return count - n_val - n_test, n_val, n_test


def stratified_split(
    labels: Mapping[str, str],
    *,
    seed: int,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    test_fraction: float = DEFAULT_TEST_FRACTION,
) -> dict[str, str]:
    """Assign every item (key, e.g. an image path -> class label) a split, class by class.

    Deterministic for a given seed and item set, whatever the order of ``labels``: each class's
    keys are sorted, then shuffled by one RNG seeded with ``seed`` (classes in sorted order).
    Sizes per class follow ``split_sizes``; a class of a single item goes to train (the service
    refuses such classes before splitting; the engine trains on them).
    """
    rng = random.Random(seed)
    by_class: dict[str, list[str]] = {}
    for key, label in labels.items():
        by_class.setdefault(label, []).append(key)
    splits: dict[str, str] = {}
    for label in sorted(by_class):
        members = sorted(by_class[label])
        rng.shuffle(members)
        if len(members) == 1:
            splits[members[0]] = "train"
            continue
        n_train, n_val, _ = split_sizes(len(members), val_fraction, test_fraction)
        for rank, key in enumerate(members):
            splits[key] = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
    return splits


def count_by_split(
    pairs: Sequence[tuple[str, str]], classes: Sequence[str]
) -> dict[str, dict[str, int]]:
    """``{split: {class: n}}`` over (label, split) pairs, every split and class present."""
    counts = {split: dict.fromkeys(classes, 0) for split in SPLITS}
    for label, split in pairs:
        counts[split][label] += 1
    return counts
