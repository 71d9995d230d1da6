"""What a job request may contain, and how jobs, events and curves look over HTTP."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.jobs.models import JobStatus
from foprokd.catalog import STUDENTS

# The engine's methods (foprokd.trainer.METHODS, kept equal by a unit test): the API must not
# import torch, and a Literal gives a clear 422 and an enum in the OpenAPI schema.
Method = Literal["ce", "bsm", "ekd", "fopro", "fopro_akd"]


class Priority(StrEnum):
    low = "low"
    normal = "normal"
    high = "high"


# Redis (the production broker) serves the lowest number first; 5 is Celery's default here.
CELERY_PRIORITY: dict[Priority, int] = {Priority.high: 0, Priority.normal: 5, Priority.low: 9}


class JobParams(BaseModel):
    """Hyper-parameters of one run; names and defaults are the engine's ``TrainConfig`` (paper)."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(default=30, ge=1, le=1000)
    # The projection head has BatchNorm, which cannot train on a batch of one image.
    batch_size: int = Field(default=32, ge=2, le=4096)
    image_size: int = Field(
        default=224, ge=32, le=1024, description="Training resolution S (a multiple of 8)."
    )
    lr: float = Field(default=3e-4, gt=0, le=10)
    weight_decay: float = Field(default=0.0, ge=0, le=1)
    grad_clip_norm: float = Field(default=5.0, ge=0, description="0 disables clipping.")
    distill_weight: float = Field(default=3.0, ge=0, description="λ of the EKD cosine term.")
    fpg_lr: float = Field(default=1e-3, gt=0, le=10)
    fpg_alpha: float = Field(default=0.5, gt=0, lt=1, description="Amplitude mask in [1-α, 1+α].")
    fpg_beta: float = Field(default=1.0, ge=0, description="Weight of the FPG's BSM probe term.")
    fpg_gamma: float = Field(default=0.1, ge=0, description="Weight of the mask regulariser.")
    akd_warmup_epochs: int = Field(default=1, ge=0, le=1000)
    augment: bool = True
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    allow_random_weights: bool = Field(
        default=False,
        description=(
            "TEST ONLY (admin keys): train from random weights when no weights file exists. "
            "A real distillation always needs the teacher's pre-trained weights."
        ),
    )

    @field_validator("image_size")
    @classmethod
    def _multiple_of_eight(cls, value: int) -> int:
        if value % 8:
            raise ValueError(f"must be a multiple of 8, got {value}")
        return value

    def train_config(self) -> dict[str, Any]:
        """The fields ``foprokd.trainer.TrainConfig`` takes (everything but service switches)."""
        return self.model_dump(exclude={"allow_random_weights"})


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset_id: str = Field(max_length=32)
    teacher: str = Field(
        max_length=100, description="A built-in teacher (GET /v1/teachers) or your team's own."
    )
    student: str = Field(max_length=100)
    method: Method = "fopro_akd"
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
    failure_code: str | None
    failure_reason: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime


class JobEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str
    message: str
    data: dict[str, Any]
    created_at: datetime


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
