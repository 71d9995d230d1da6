"""Validating in-memory archives with ``validate_archive``: a sink that keeps images in memory,
small limits, and the problems found."""

from __future__ import annotations

import hashlib
import io
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.datasets.ingest.archive import open_archive
from app.datasets.ingest.entries import IngestLimits, StoredImage
from app.datasets.ingest.images import CheckedImage
from app.datasets.ingest.validation import IngestResult, validate_archive
from app.datasets.schemas import IngestOptions
from foprokd.synthetic import ArchiveKind, Member, archive_bytes

GROUP_SALT = "unit-test-salt"
LIMITS = IngestLimits(
    max_file_bytes=4 * 1024 * 1024,
    max_total_bytes=16 * 1024 * 1024,
    max_entries=1000,
    max_image_pixels=1_000_000,
    max_compression_ratio=50.0,
)


@dataclass
class MemorySink:
    """Images a validation stored, by key (what a sink receives is what the store would hold)."""

    objects: dict[str, CheckedImage] = field(default_factory=dict)

    def __call__(self, image: CheckedImage, source_sha256: str) -> StoredImage:
        key = f"images/{source_sha256}.{image.extension}"
        self.objects[key] = image
        return StoredImage(key, hashlib.sha256(image.data).hexdigest())


@dataclass
class Validated:
    result: IngestResult
    sink: MemorySink

    @property
    def errors(self) -> list[dict[str, str]]:
        return [p.as_dict() for p in self.result.log.errors]

    @property
    def warnings(self) -> list[dict[str, str]]:
        return [p.as_dict() for p in self.result.log.warnings]

    def codes(self) -> set[str]:
        return {p["code"] for p in self.errors}

    def error_for(self, entry: str) -> dict[str, str]:
        found = [p for p in self.errors if p["entry"] == entry]
        assert found, f"no error for {entry!r}; errors: {self.errors}"
        return found[0]


def validate(
    members: Sequence[Member],
    kind: ArchiveKind = "zip",
    *,
    limits: IngestLimits = LIMITS,
    **options: Any,
) -> Validated:
    """Validate ``members`` packed as ``kind`` with ``options`` (IngestOptions fields)."""
    return validate_bytes(archive_bytes(members, kind), f"upload.{kind}", limits=limits, **options)


def validate_bytes(
    data: bytes, archive_name: str, *, limits: IngestLimits = LIMITS, **options: Any
) -> Validated:
    """Validate the archive ``data`` (any bytes) as an upload named ``archive_name``."""
    sink = MemorySink()
    with open_archive(io.BytesIO(data), scratch_dir=Path(tempfile.gettempdir())) as reader:
        result = validate_archive(
            reader,
            options=IngestOptions(**options),
            limits=limits,
            sink=sink,
            archive_name=archive_name,
            group_salt=GROUP_SALT,
            archive_bytes=len(data),
        )
    return Validated(result, sink)
