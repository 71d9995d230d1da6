"""Teachers over HTTP, and the verdict the worker returns on an uploaded weights file."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ZooTeacherOut(BaseModel):
    """A built-in teacher; ``weights_path`` is where the weights were found (None: not yet),
    relative to the server's weights directory except for admin keys."""

    source: Literal["zoo"] = "zoo"
    name: str
    arch: str = Field(description="timm architecture name.")
    num_params: int = Field(description="Backbone parameters (no ImageNet classifier).")
    feature_dim: int = Field(description="Size of the pooled embedding the student imitates.")
    input_size: int = Field(description="Resolution (pixels) the published weights expect.")
    mean: list[float] = Field(description="Per-channel mean of [0, 1] RGB pixels.")
    std: list[float]
    weights_available: bool
    weights_path: str | None
    expected_paths: list[str] = Field(description="Where weights are looked for, in order.")


class TeacherOut(BaseModel):
    """A teacher the team registered with its own weights."""

    model_config = ConfigDict(from_attributes=True)

    source: Literal["team"] = "team"
    id: str
    name: str
    arch: str
    num_params: int
    feature_dim: int
    input_size: int
    mean: list[float]
    std: list[float]
    weights_available: bool = True
    weights_sha256: str
    weights_bytes: int
    created_at: datetime


class TeacherCatalogOut(BaseModel):
    """Every teacher a job of this team may name: the built-in zoo and the team's own."""

    zoo: list[ZooTeacherOut]
    team: list[TeacherOut]


class WeightsCheck(BaseModel):
    """The worker's verdict on a weights file for an architecture (JSON over Celery).

    ``ok`` False carries ``reason``; ``ok`` True carries the architecture's facts.
    """

    ok: bool
    reason: str | None = None
    arch: str | None = None
    num_params: int | None = None
    feature_dim: int | None = None
    input_size: int | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
