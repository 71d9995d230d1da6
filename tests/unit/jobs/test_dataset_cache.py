"""From a ready dataset in the store to the engine's decoded splits."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from app.core.config import get_settings
from app.core.storage import ObjectStore
from app.datasets.models import Dataset
from foprokd.pipeline import DatasetSplits
from tests.unit.jobs.conftest import Team
from workers.dataset_cache import fetch_dataset, local_path
from workers.failures import DatasetUnusable


def load(store: ObjectStore, dataset: Dataset, image_size: int = 16) -> DatasetSplits:
    images = fetch_dataset(
        store,
        dataset_id=dataset.id,
        manifest_key=dataset.manifest_key,
        classes=list(dataset.classes),
        cache_root=get_settings().data_dir / "cache",
    )
    return images.load(image_size, None)


def test_downloads_once_and_decodes_every_split(
    store: ObjectStore, session: Session, team: Team
) -> None:
    dataset = session.get_one(Dataset, team.dataset_id)
    stages: list[tuple[str, int, int]] = []
    images = fetch_dataset(
        store,
        dataset_id=dataset.id,
        manifest_key=dataset.manifest_key,
        classes=list(dataset.classes),
        cache_root=get_settings().data_dir / "cache",
        on_progress=lambda done, total: stages.append(("downloading", done, total)),
    )
    splits = images.load(16, lambda done, total: stages.append(("decoding", done, total)))
    assert splits.classes == dataset.classes
    assert splits.sizes() == {"train": 12, "val": 4, "test": 4}
    assert splits.train.images.shape[1:] == (3, 16, 16)
    assert ("downloading", 20, 20) in stages
    assert ("decoding", 20, 20) in stages

    # Second run: nothing to download, nothing to decode.
    again = load(store, dataset)
    assert again.decoded == 0


def test_an_image_whose_bytes_changed_is_refused(
    store: ObjectStore, session: Session, team: Team
) -> None:
    dataset = session.get_one(Dataset, team.dataset_id)
    manifest = store.get_bytes(dataset.manifest_key or "").decode()
    first_key = manifest.splitlines()[1].split(",")[1]
    store.put_bytes(first_key, b"not the image the manifest hashed")
    with pytest.raises(DatasetUnusable, match="does not match its manifest sha256"):
        load(store, dataset)


def test_a_missing_manifest_or_image_is_named(
    store: ObjectStore, session: Session, team: Team
) -> None:
    dataset = session.get_one(Dataset, team.dataset_id)
    manifest = store.get_bytes(dataset.manifest_key or "").decode()
    store.delete(manifest.splitlines()[2].split(",")[1])
    with pytest.raises(DatasetUnusable, match="missing from the object store"):
        load(store, dataset)
    store.delete(dataset.manifest_key or "")
    with pytest.raises(DatasetUnusable, match="manifest is missing"):
        load(store, dataset)


@pytest.mark.parametrize("path", ["../escape.png", "/etc/passwd", "a//b.png", "a\\b.png", ""])
def test_manifest_paths_cannot_leave_the_cache(path: str) -> None:
    with pytest.raises(DatasetUnusable, match="unsafe image path"):
        local_path(Path("/cache/files"), path)
