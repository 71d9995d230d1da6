"""Train/val/test splits: split names and their aliases, THE stratified split, and its grouped
form (all images of one patient in one split).

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


def stratified_group_split(
    labels: Mapping[str, str],
    groups: Mapping[str, str],
    *,
    seed: int,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    test_fraction: float = DEFAULT_TEST_FRACTION,
) -> dict[str, str]:
    """Assign every item a split so that all items of one group (a patient) share it, keeping each
    class's train/val/test shares as close to the fractions as whole groups allow.

    ``labels``: item -> class; ``groups``: item -> group (items absent from ``groups`` are groups
    of their own). Greedy, in the spirit of scikit-learn's ``StratifiedGroupKFold``: groups are
    visited largest first (ties in an order shuffled by ``seed``), and each goes to the split
    that, relative to each class's target, most lacks the classes it holds. Deterministic for a
    given seed and item set, whatever the order of the mappings.
    """
    members: dict[str, list[str]] = {}
    for key in sorted(labels):
        members.setdefault(groups.get(key) or f"\0{key}", []).append(key)
    classes = sorted(set(labels.values()))
    totals = dict.fromkeys(classes, 0)
    for label in labels.values():
        totals[label] += 1
    fractions = {"train": 1.0 - val_fraction - test_fraction, "val": val_fraction}
    fractions["test"] = test_fraction
    assigned = {split: dict.fromkeys(classes, 0) for split in SPLITS}
    order = sorted(members)
    random.Random(seed).shuffle(order)
    order.sort(key=lambda group: -len(members[group]))  # stable: the shuffle breaks ties
    splits: dict[str, str] = {}
    for group in order:
        counts: dict[str, int] = {}
        for key in members[group]:
            counts[labels[key]] = counts.get(labels[key], 0) + 1
        best = max(
            (split for split in SPLITS if fractions[split] > 0),
            key=lambda split: _lack(split, counts, assigned, totals, fractions),
        )
        for label, count in counts.items():
            assigned[best][label] += count
        for key in members[group]:
            splits[key] = best
    return splits


def _lack(
    split: str,
    counts: Mapping[str, int],
    assigned: Mapping[str, Mapping[str, int]],
    totals: Mapping[str, int],
    fractions: Mapping[str, float],
) -> tuple[float, float]:
    """How much ``split`` lacks the classes in ``counts``: the shortfall below target, in share of
    each class, weighted by the group's images of it; ties go to the split with the larger
    overall shortfall (then to ``SPLITS`` order, by ``max`` keeping the first)."""
    need = 0.0
    for label, count in counts.items():
        target = fractions[split] * totals[label]
        need += count * (target - assigned[split][label]) / totals[label]
    overall = sum(
        fractions[split] * totals[label] - assigned[split][label] for label in totals
    ) / max(sum(totals.values()), 1)
    return need, overall


def group_leaks(splits: Mapping[str, str], groups: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """Groups whose items lie in more than one split: ``{group: {split: first item}}``.

    ``splits``: item -> split; ``groups``: item -> group (items without one never leak).
    """
    seen: dict[str, dict[str, str]] = {}
    for key in sorted(splits):
        group = groups.get(key)
        if group:
            seen.setdefault(group, {}).setdefault(splits[key], key)
    return {group: where for group, where in sorted(seen.items()) if len(where) > 1}


def groups_per_split(
    items: Sequence[tuple[str, str, str | None]], classes: Sequence[str]
) -> dict[str, dict[str, int]]:
    """``{split: {class: n groups}}`` over (label, split, group) items; an item without a group
    counts as a group of its own. A patient with images of two classes counts in both."""
    seen: dict[str, dict[str, set[str]]] = {
        split: {name: set() for name in classes} for split in SPLITS
    }
    for index, (label, split, group) in enumerate(items):
        seen[split][label].add(group or f"\0{index}")
    return {
        split: {name: len(found) for name, found in by_class.items()}
        for split, by_class in seen.items()
    }


def group_totals(items: Sequence[tuple[str, str | None]]) -> dict[str, int]:
    """``{split: n distinct groups}`` over (split, group) items (no group: a group of its own)."""
    seen: dict[str, set[str]] = {split: set() for split in SPLITS}
    for index, (split, group) in enumerate(items):
        seen[split].add(group or f"\0{index}")
    return {split: len(found) for split, found in seen.items()}


def describe_split(items: Sequence[tuple[str, str | None]]) -> dict[str, object]:
    """How a split was made, for model cards: ``unit`` ``group`` when any of the (split, group)
    items names a group (then ``groups``: distinct groups per split), else ``image``."""
    if not any(group for _, group in items):
        return {"unit": "image"}
    return {"unit": "group", "groups": group_totals(items)}
