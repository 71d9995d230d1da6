"""Test data for jobs: a team with a key, and a `ready` dataset written as the datasets domain
writes one (one object per image + a manifest CSV), without going through an upload."""

from __future__ import annotations

import csv
import hashlib
import io
import secrets

import numpy as np
from sqlalchemy.orm import Session

from app.core.config import get_settings
from app.core.db import new_id
from app.core.storage import ObjectStore
from app.core.tenancy import team_object_key
from app.datasets.models import Dataset, DatasetStatus
from app.teams.models import Role
from app.teams.service import create_api_key, create_team
from foprokd.synthetic import encode_image, texture_image

MANIFEST_HEADER = ["path", "object_key", "label", "split", "sha256", "width", "height"]


def make_team_key(
    session: Session, role: Role = Role.admin, name: str | None = None
) -> tuple[str, str]:
    """A new team (unique name) with one key of ``role``; returns (team_id, plaintext key)."""
    team = create_team(session, name or f"team-{secrets.token_hex(4)}")
    _, key = create_api_key(session, team, role, get_settings().secret_key)
    session.commit()
    return team.id, key


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def split_of(number: int, per_class: int) -> str:
    """Per class: the last 20 % test, the 20 % before val, the rest train (at least 1 each)."""
    n_test = n_val = max(1, per_class // 5)
    if number >= per_class - n_test:
        return "test"
    return "val" if number >= per_class - n_test - n_val else "train"


def put_ready_dataset(
    session: Session,
    store: ObjectStore,
    team_id: str,
    *,
    num_classes: int = 4,
    per_class: int = 10,
    size: int = 32,
    seed: int = 0,
) -> Dataset:
    """Store ``num_classes × per_class`` texture PNGs and their manifest; commit a ready row."""
    dataset_id = new_id("ds")
    classes = [f"class_{i}" for i in range(num_classes)]
    rng = np.random.default_rng(seed)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(MANIFEST_HEADER)
    total_bytes = 0
    for index, label in enumerate(classes):
        for number in range(per_class):
            data = encode_image(texture_image(index, num_classes, rng, size))
            path = f"{label}/img_{number:03d}.png"
            key = team_object_key(team_id, "datasets", dataset_id, "images", path)
            store.put_bytes(key, data, content_type="image/png")
            total_bytes += len(data)
            split = split_of(number, per_class)
            sha = hashlib.sha256(data).hexdigest()
            writer.writerow([path, key, label, split, sha, size, size])
    manifest_key = team_object_key(team_id, "datasets", dataset_id, "manifest.csv")
    store.put_bytes(manifest_key, out.getvalue().encode(), content_type="text/csv")
    dataset = Dataset(
        id=dataset_id,
        team_id=team_id,
        name=f"textures-{dataset_id}",
        status=DatasetStatus.ready.value,
        manifest_key=manifest_key,
        classes=classes,
        num_images=num_classes * per_class,
        image_bytes=total_bytes,
    )
    session.add(dataset)
    session.commit()
    return dataset
