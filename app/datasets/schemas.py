from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from app.datasets.models import DatasetStatus


class DatasetOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    status: DatasetStatus
    archive_format: str | None
    archive_bytes: int | None
    content_sha256: str | None
    classes: list[Any]
    num_images: int
    image_bytes: int
    stats: dict[str, Any]
    problems: list[Any]
    warnings: list[Any]
    split_seed: int | None
    created_at: datetime
    updated_at: datetime
