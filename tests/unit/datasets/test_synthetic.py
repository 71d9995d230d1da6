"""The sample-archive generator: long tails, learnable textures, corrupt files on request."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from foprokd.synthetic import (
    archive_bytes,
    long_tail_counts,
    sample_dataset,
    texture_image,
    write_archive,
)


def test_long_tail_counts_fall_from_head_to_tail() -> None:
    counts = long_tail_counts(5, head=100, imbalance=20)
    assert counts[0] == 100
    assert counts[-1] == 5
    assert counts == sorted(counts, reverse=True)
    assert min(long_tail_counts(8, head=10, imbalance=100)) == 2  # every class stays splittable


def test_same_seed_gives_byte_identical_archives() -> None:
    first = archive_bytes(sample_dataset(seed=4).members, "tar.gz")
    assert first == archive_bytes(sample_dataset(seed=4).members, "tar.gz")
    assert first != archive_bytes(sample_dataset(seed=5).members, "tar.gz")


def test_textures_are_learnable_by_a_nearest_centroid_classifier() -> None:
    rng = np.random.default_rng(0)

    def features(class_index: int) -> np.ndarray:
        pixels = np.asarray(texture_image(class_index, 6, rng), dtype=np.float32) / 255
        spectrum = np.abs(np.fft.fft2(pixels.mean(axis=2)))[:8, :8].ravel()
        return np.concatenate([spectrum / spectrum.sum(), pixels.mean(axis=(0, 1))])

    train = {k: np.stack([features(k) for _ in range(10)]).mean(axis=0) for k in range(6)}
    hits = 0
    for k in range(6):
        for _ in range(10):
            x = features(k)
            hits += min(train, key=lambda c: float(np.linalg.norm(train[c] - x))) == k
    assert hits / 60 > 0.9


def test_corrupt_files_are_added_on_request_and_do_not_decode() -> None:
    sample = sample_dataset(corrupt=3, layout="csv")
    assert len(sample.corrupt) == 3
    broken = {m.name: m.data for m in sample.members if m.name in sample.corrupt}
    for data in broken.values():
        with pytest.raises(OSError, match=r"truncated|cannot identify"):
            Image.open(io.BytesIO(data)).load()
    labels = next(m.data.decode() for m in sample.members if m.name == sample.manifest)
    assert all(name in labels for name in broken)


def test_write_archive_matches_the_in_memory_archive(tmp_path: Path) -> None:
    members = sample_dataset().members
    path = write_archive(tmp_path / "sets" / "a.zip", members, "zip")
    assert path.read_bytes() == archive_bytes(members, "zip")
