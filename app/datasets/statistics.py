"""Dataset statistics a long-tailed training run cares about: counts per split and class, the
imbalance ratio, many/medium/few-shot class groups and the distribution of image sizes."""

from __future__ import annotations

import bisect
import statistics
from collections.abc import Sequence
from typing import Any

from foprokd.metrics import FEW_SHOT_BELOW, MANY_SHOT_ABOVE
from foprokd.metrics import shot_groups as engine_shot_groups
from foprokd.splits import count_by_split, group_totals, groups_per_split

# Bins of the longer image side, in pixels; the last bin is open-ended.
SIZE_BIN_EDGES: tuple[int, ...] = (0, 64, 128, 256, 512, 1024, 2048, 4096)


def shot_groups(train_counts: dict[str, int]) -> dict[str, list[str]]:
    """Class names per group, by the engine's thresholds (``foprokd.metrics.shot_groups``)."""
    names = list(train_counts)
    groups = engine_shot_groups(list(train_counts.values()))
    return {group: [names[i] for i in members] for group, members in groups.items()}


def imbalance_ratio(train_counts: dict[str, int]) -> float:
    """Largest over smallest class in the training split (1.0 for a balanced set)."""
    counts = [n for n in train_counts.values() if n > 0]
    return round(max(counts) / min(counts), 4) if counts else 0.0


def size_histogram(sizes: Sequence[tuple[int, int]]) -> dict[str, Any]:
    """Counts of images per bin of their longer side, plus min/median/max width and height.

    ``sizes``: (width, height) in pixels per image.
    """
    counts = [0] * len(SIZE_BIN_EDGES)
    for width, height in sizes:
        counts[bisect.bisect_right(SIZE_BIN_EDGES, max(width, height)) - 1] += 1
    uppers = (*SIZE_BIN_EDGES[1:], None)
    bins = [
        {"min": low, "max": high, "count": count}
        for low, high, count in zip(SIZE_BIN_EDGES, uppers, counts, strict=True)
    ]

    def summary(values: list[int]) -> dict[str, float] | None:
        if not values:
            return None
        return {"min": min(values), "median": statistics.median(values), "max": max(values)}

    return {
        "measure": "longer side in pixels; max is exclusive, null means unbounded",
        "bins": bins,
        "width": summary([w for w, _ in sizes]),
        "height": summary([h for _, h in sizes]),
    }


def dataset_statistics(
    labelled: Sequence[tuple[str, str]],
    sizes: Sequence[tuple[int, int]],
    classes: Sequence[str],
    *,
    groups: Sequence[str | None] | None = None,
) -> dict[str, Any]:
    """The statistics block of a ready dataset.

    ``labelled``: (class, split) per image; ``sizes``: (width, height) per image; ``classes``:
    names in label-index order; ``groups``: the patient group per image (None: a group of its
    own) when the split kept groups together. Keys: ``class_counts`` ({split: {class: n}}),
    ``class_totals``, ``imbalance_ratio`` (train max/min), ``groups`` (many/medium/few by train
    count), ``group_rule``, ``image_size_histogram``; with ``groups`` also ``patient_groups``
    (``per_class`` {split: {class: n groups}}, ``per_split`` {split: n}, ``total``).
    """
    counts = count_by_split(labelled, classes)
    totals = {name: sum(counts[split][name] for split in counts) for name in classes}
    extra: dict[str, Any] = {}
    if groups is not None:
        pairs = zip(labelled, groups, strict=True)
        items = [(label, split, group) for (label, split), group in pairs]
        per_split = group_totals([(split, group) for _, split, group in items])
        extra["patient_groups"] = {
            "per_class": groups_per_split(items, classes),
            "per_split": per_split,
            "total": len({group for group in groups if group}) + groups.count(None),
        }
    return {
        **extra,
        "class_counts": counts,
        "class_totals": totals,
        "imbalance_ratio": imbalance_ratio(counts["train"]),
        "groups": shot_groups(counts["train"]),
        "group_rule": {
            "counted_on": "train",
            "many_above": MANY_SHOT_ABOVE,
            "few_below": FEW_SHOT_BELOW,
        },
        "image_size_histogram": size_histogram(sizes),
    }
