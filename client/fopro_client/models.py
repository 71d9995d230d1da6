"""The API's JSON as typed objects: datasets, jobs, events, artifacts, teachers, predictions.

They mirror the service's response schemas (``app/*/schemas.py``) without importing them, so the
client installs without the server. Unknown fields a newer server adds are kept (``extra``), so
``model_dump()`` round-trips everything the API said.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")


class ApiModel(BaseModel):
    """Base of every response model: tolerant of fields this client does not know yet."""

    model_config = ConfigDict(extra="allow")


class Page(ApiModel, Generic[T]):
    """One page of a listing: ``items`` of ``total``, starting at ``offset``."""

    items: list[T]
    total: int
    limit: int
    offset: int


class Event(ApiModel):
    """One entry of a job's or dataset's event log; ``data`` holds the details (e.g. ``from`` and
    ``to`` of a state change, an epoch's metrics)."""

    id: int
    kind: str
    message: str
    data: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime


class DatasetStatus(StrEnum):
    uploading = "uploading"
    validating = "validating"
    ready = "ready"
    invalid = "invalid"
    deleting = "deleting"
    deleted = "deleted"


class Problem(ApiModel):
    """Why validation rejected (problems) or changed (warnings) one archive entry or CSV line."""

    entry: str
    code: str
    message: str


class Dataset(ApiModel):
    """An uploaded dataset: ``validating`` until it is ``ready`` or ``invalid``; ``stats`` holds
    class counts per split, imbalance, shot groups and, while validating, ``progress``."""

    id: str
    name: str
    status: DatasetStatus
    archive_format: str | None = None
    archive_bytes: int | None = None
    content_sha256: str | None = None
    classes: list[Any] = Field(default_factory=list)
    num_images: int = 0
    image_bytes: int = 0
    stats: dict[str, Any] = Field(default_factory=dict)
    problems: list[Problem] = Field(default_factory=list)
    warnings: list[Problem] = Field(default_factory=list)
    split_seed: int | None = None
    created_at: datetime
    updated_at: datetime

    @property
    def settled(self) -> bool:
        """Whether validation has finished (ready or invalid) or the dataset is going away."""
        return self.status not in (DatasetStatus.uploading, DatasetStatus.validating)


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


TERMINAL_JOB_STATUSES = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled})


class Priority(StrEnum):
    low = "low"
    normal = "normal"
    high = "high"


class Job(ApiModel):
    """A distillation job: ``queued`` -> ``running`` -> ``succeeded`` | ``failed`` | ``cancelled``;
    ``progress`` (epoch, step, ETA, losses) while it runs, ``failure_reason`` when it failed."""

    id: str
    dataset_id: str
    teacher: str
    student: str
    method: str
    params: dict[str, Any] = Field(default_factory=dict)
    priority: Priority = Priority.normal
    retry_of: str | None = None
    status: JobStatus
    phase: str | None = None
    progress: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    attempt: int = 1
    max_attempts: int = 1
    cancel_requested: bool = False
    checkpoint_epoch: int | None = None
    checkpoint_step: int | None = None  # steps of the next epoch (a shutdown's checkpoint)
    failure_code: str | None = None
    failure_reason: str | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_JOB_STATUSES


class EpochPoint(ApiModel):
    """One epoch of the training curves (losses are means over the epoch's steps)."""

    epoch: int
    train_losses: dict[str, float]
    val_loss: float
    val_balanced_accuracy: float
    val_macro_f1: float
    is_best: bool
    seconds: float
    images_per_s: float


class JobMetrics(ApiModel):
    job_id: str
    epochs: list[EpochPoint]
    best_epoch: int | None = None
    evaluated_split: str | None = None
    report: dict[str, Any] | None = None


class Artifact(ApiModel):
    """A file a finished job produced; ``url`` is where to GET it (relative to the server)."""

    name: str
    media_type: str
    bytes: int
    sha256: str
    created_at: datetime
    url: str


class ClassScore(ApiModel):
    label: str
    index: int
    probability: float


class Finding(ApiModel):
    """A class whose calibrated probability reached its threshold at the asked operating point."""

    label: str
    index: int
    probability: float
    threshold: float


class Explanation(ApiModel):
    """An occlusion heat map (S x S PNG, base64) for the image's most probable class."""

    method: str
    label: str
    index: int
    patch: int
    passes: int
    max_drop: float
    png_base64: str


class ImagePrediction(ApiModel):
    filename: str
    top_k: list[ClassScore]
    findings: list[Finding] | None = None
    explanation: Explanation | None = None


class Predictions(ApiModel):
    """Top-k classes per image from the job's ``student.onnx``, or its ``student.int8.onnx``
    with ``precision="int8"`` (probabilities calibrated by the student's temperature)."""

    job_id: str
    model_sha256: str
    image_size: int
    temperature: float = 1.0
    precision: str = "fp32"
    threshold_profile: str | None = None
    predictions: list[ImagePrediction]


class ZooTeacher(ApiModel):
    """A built-in teacher; ``weights_path`` is where its weights were found (None: not yet)."""

    source: Literal["zoo"] = "zoo"
    name: str
    arch: str
    num_params: int
    feature_dim: int
    input_size: int
    mean: list[float]
    std: list[float]
    weights_available: bool
    weights_path: str | None = None
    expected_paths: list[str] = Field(default_factory=list)


class TeamTeacher(ApiModel):
    """A teacher your team registered with its own weights."""

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


class TeacherCatalog(ApiModel):
    """Every teacher a job of your team may name: the zoo and your team's own."""

    zoo: list[ZooTeacher]
    team: list[TeamTeacher]


class Me(ApiModel):
    """Who the API key belongs to."""

    team_id: str
    team_name: str
    role: str
    key_prefix: str


class JobProgress(ApiModel):
    """A ``progress`` message of a job's stream: sent whenever status, phase or progress change."""

    status: JobStatus
    phase: str | None = None
    attempt: int = 1
    progress: dict[str, Any] = Field(default_factory=dict)
    checkpoint_epoch: int | None = None
    checkpoint_step: int | None = None
    cancel_requested: bool = False


class StreamEnd(ApiModel):
    """The last message of a job's stream: the job's final status (None: the job is gone)."""

    status: JobStatus | None = None
    reason: str | None = None


JobUpdate = Event | JobProgress | StreamEnd
"""What ``FoproClient.watch`` yields: new events, progress, and finally the end."""
