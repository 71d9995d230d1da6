"""Uploaded image datasets, their validation outcome and their event log."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, new_id, utcnow
from app.core.events import EventColumns


class DatasetStatus(StrEnum):
    """``uploading`` (direct S3 upload in progress) -> ``validating`` -> ``ready`` | ``invalid``;
    ``deleting`` while its objects are removed; ``deleted`` is the record kept for finished jobs
    that were trained on it. ``app.datasets.state`` owns the moves between them."""

    uploading = "uploading"
    validating = "validating"
    ready = "ready"
    invalid = "invalid"
    deleting = "deleting"
    deleted = "deleted"


class Dataset(Base):
    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("team_id", "name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("ds"))
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default=DatasetStatus.uploading.value)
    archive_key: Mapped[str | None] = mapped_column(String(512))
    archive_format: Mapped[str | None] = mapped_column(String(16))
    archive_bytes: Mapped[int | None] = mapped_column(BigInteger)
    content_sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    manifest_key: Mapped[str | None] = mapped_column(String(512))
    classes: Mapped[list[Any]] = mapped_column(default=list)
    num_images: Mapped[int] = mapped_column(Integer, default=0)
    image_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    stats: Mapped[dict[str, Any]] = mapped_column(default=dict)
    problems: Mapped[list[Any]] = mapped_column(default=list)
    warnings: Mapped[list[Any]] = mapped_column(default=list)
    split_seed: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class DatasetEvent(EventColumns, Base):
    """One row per change of a dataset's status (its creation included), in order of id; the
    database drops them with their dataset."""

    __tablename__ = "dataset_events"
    __table_args__ = (Index("ix_dataset_events_dataset_id_id", "dataset_id", "id"),)

    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
