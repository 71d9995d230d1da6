"""The service and ``python -m foprokd`` split the same images with the same seed identically."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import pytest

from foprokd.cli import load_rows
from foprokd.synthetic import Member, sample_dataset
from tests.unit.datasets.ingest.conftest import validate


def _extract(members: Sequence[Member], root: Path) -> None:
    for member in members:
        path = root / member.name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(member.data)


@pytest.mark.parametrize("seed", [0, 11, 2024])
def test_an_image_folder_splits_alike(tmp_path: Path, seed: int) -> None:
    sample = sample_dataset(classes=4, head=30, imbalance=10.0, size=8, seed=1)
    service = validate(sample.members, split_seed=seed).result
    assert not service.log.failed
    _extract(sample.members, tmp_path)
    engine = load_rows(tmp_path, None, seed)  # what `python -m foprokd train --data` uses
    assert {r.path: r.split for r in engine} == {r.path: r.split for r in service.rows}
    assert len({r.split for r in engine}) == 3


def test_a_manifest_splits_alike(tmp_path: Path) -> None:
    sample = sample_dataset(classes=3, head=25, imbalance=5.0, size=8, seed=2, layout="csv")
    service = validate(sample.members, split_seed=7).result
    assert not service.log.failed
    _extract(sample.members, tmp_path)
    manifest = tmp_path / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        writer.writerows([r.path, r.label] for r in service.rows)
    engine = load_rows(tmp_path, manifest, 7)  # `python -m foprokd train --manifest`
    assert {r.path: r.split for r in engine} == {r.path: r.split for r in service.rows}
    other_seed = load_rows(tmp_path, manifest, 8)
    assert {r.path: r.split for r in other_seed} != {r.path: r.split for r in service.rows}
