"""What a job request may contain, and how jobs, events and curves look over HTTP."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

from app.jobs.models import JobStatus
from foprokd.catalog import STUDENTS
from foprokd.hyperparams import (
    DEFAULT_METHOD,
    METHOD_HELP,
    HyperParams,
    Method,
    TrainConfig,
)


class Priority(StrEnum):
    low = "low"
    normal = "normal"
    high = "high"


# Redis (the production broker) serves the lowest number first; 5 is Celery's default here.
MIN_IMAGE_SIZE = 32
STUDENT_CHOICES: list[JsonValue] = [*sorted(STUDENTS)]
CELERY_PRIORITY: dict[Priority, int] = {Priority.high: 0, Priority.normal: 5, Priority.low: 9}


class JobParams(HyperParams):
    """Hyper-parameters of one run: the engine's own fields, defaults (the paper's), ranges and
    help texts (``foprokd.hyperparams``), plus the service's switches and policies.

    Strict types: ``"epochs": "10"`` or ``true`` is a client bug to report, not to guess at."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)

    allow_random_weights: bool = Field(
        default=False,
        description=(
            "TEST ONLY (admin keys): train from random weights when no weights file exists. "
            "A real distillation always needs the teacher's pre-trained weights."
        ),
    )

    @field_validator("image_size")
    @classmethod
    def _service_image_size(cls, value: int) -> int:
        # Service policy on shared GPUs: sizes the exported ONNX and the zoo's strides handle.
        if value < MIN_IMAGE_SIZE or value % 8:
            raise ValueError(f"must be a multiple of 8 and at least {MIN_IMAGE_SIZE}, got {value}")
        return value

    def train_config(self, method: str) -> TrainConfig:
        """The engine's ``TrainConfig`` for ``method`` (everything but the service switches)."""
        values = self.model_dump(exclude={"allow_random_weights"})
        return TrainConfig.model_validate({**values, "method": method})


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset_id: str = Field(max_length=32)
    teacher: str = Field(
        max_length=100, description="A built-in teacher (GET /v1/teachers) or your team's own."
    )
    # The schema lists the choices; the validator below refuses others with a helpful message.
    student: str = Field(max_length=100, json_schema_extra={"enum": STUDENT_CHOICES})
    method: Method = Field(
        default=DEFAULT_METHOD,
        description="; ".join(f"{name}: {text.rstrip('.')}" for name, text in METHOD_HELP.items()),
    )
    priority: Priority = Priority.normal
    params: JobParams = Field(default_factory=JobParams)

    @field_validator("student")
    @classmethod
    def _known_student(cls, value: str) -> str:
        if value not in STUDENTS:
            raise ValueError(f"unknown student {value!r}; choose one of {sorted(STUDENTS)}")
        return value


class JobOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    dataset_id: str
    teacher: str
    student: str
    method: str
    params: dict[str, Any]
    priority: Priority
    retry_of: str | None
    status: JobStatus
    phase: str | None
    progress: dict[str, Any]
    metrics: dict[str, Any]
    attempt: int
    max_attempts: int
    cancel_requested: bool
    checkpoint_epoch: int | None
    checkpoint_step: int | None = None  # steps of the next epoch (a shutdown's checkpoint)
    failure_code: str | None
    failure_reason: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime


class EpochPoint(BaseModel):
    """One epoch of the training curves (losses are means over the epoch's steps)."""

    epoch: int
    train_losses: dict[str, float]
    val_loss: float
    val_balanced_accuracy: float
    val_macro_f1: float
    is_best: bool
    seconds: float
    images_per_s: float


class JobMetricsOut(BaseModel):
    job_id: str
    epochs: list[EpochPoint]
    best_epoch: int | None
    evaluated_split: str | None = Field(
        description="Where the report was measured: test, or val for a dataset without test."
    )
    report: dict[str, Any] | None = Field(
        description="The best student's classification report (engine metrics) once succeeded."
    )
    trust: dict[str, Any] | None = Field(
        default=None,
        description="Calibration (temperature, ECE/NLL before and after), the INT8 decision "
        "and the per-class small-split warnings, once succeeded (the model card has the rest).",
    )
