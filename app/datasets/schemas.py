"""Datasets as the API reads and writes them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.datasets.models import DatasetStatus
from foprokd.splits import MAX_SEED


class IngestOptions(BaseModel):
    """How to read an archive: layout, labels CSV columns and how to split.

    ``layout``: ``folders`` (``[split/]class/image``), ``csv`` (images + a labels CSV) or ``auto``
    (``csv`` when the archive holds a labels CSV, else ``folders``). ``manifest``: path of the
    labels CSV inside the archive when there are several. Splits come from the layout (split
    folders or the split column) when given, else a stratified split with ``split_seed`` (random
    when omitted; always recorded) and the val/test fractions (train gets the rest).

    ``group_by`` says which images belong to one patient, so that a split never puts one patient
    in two splits: ``auto`` (a ``patient_id``/``group`` column of the labels CSV, else the
    hashed DICOM PatientID, else none), ``column`` (the CSV's ``group_column``), ``dicom``,
    ``folder:N`` (the name of the N-th folder of each path, 1 = the top level) or ``none``
    (images split one by one). A user-given split that puts a group in two splits is refused
    (``on_group_leak="refuse"``) or kept with a warning (``"warn"``). A multi-frame DICOM file
    is refused unless ``dicom_frames="split"`` makes each frame an image (the frames of one file
    always share a split).
    """

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    layout: Literal["auto", "folders", "csv"] = "auto"
    manifest: str | None = Field(default=None, min_length=1, max_length=1000)
    image_column: str = Field(default="image", min_length=1, max_length=100)
    label_column: str = Field(default="label", min_length=1, max_length=100)
    split_column: str = Field(default="split", min_length=1, max_length=100)
    split_seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    val_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    test_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)
    group_by: str = Field(default="auto", pattern=r"^(auto|none|column|dicom|folder:[1-9][0-9]?)$")
    group_column: str | None = Field(default=None, min_length=1, max_length=100)
    on_group_leak: Literal["refuse", "warn"] = "refuse"
    dicom_frames: Literal["refuse", "split"] = "refuse"

    @model_validator(mode="after")
    def _train_keeps_a_share(self) -> Self:
        if self.val_fraction + self.test_fraction >= 0.95:
            raise ValueError("val_fraction + test_fraction must leave at least 5% for training")
        return self


class UploadRequest(IngestOptions):
    """Fields of ``POST /v1/datasets`` (query parameters or form fields before the file).

    ``filename``: the archive's file name, for messages (taken from the multipart part or the
    Content-Disposition header when not given); the format is always sniffed from the content.
    """

    name: str = Field(min_length=1, max_length=200)
    filename: str | None = Field(default=None, max_length=500)

    @field_validator("name")
    @classmethod
    def _printable_name(cls, value: str) -> str:
        if any(ord(char) < 0x20 or ord(char) == 0x7F for char in value):
            raise ValueError("must not contain control characters")
        return value

    def ingest_options(self) -> IngestOptions:
        return IngestOptions.model_validate(
            self.model_dump(include=set(IngestOptions.model_fields))
        )


class DirectUploadRequest(UploadRequest):
    """``POST /v1/datasets/uploads``: start a direct-to-S3 multipart upload of ``size`` bytes."""

    # S3's own limit on one object (5 TiB) bounds it, and keeps it inside a 64-bit integer.
    size: int = Field(gt=0, le=5 * 1024**4, description="archive size in bytes")


class PartUrl(BaseModel):
    part_number: int
    url: str


class DirectUploadOut(BaseModel):
    """Where to PUT each part (in order, ``part_size`` bytes each but the last), then call
    ``complete_url`` with every part's ETag."""

    dataset_id: str
    part_size: int
    parts: list[PartUrl]
    expires_at: datetime
    complete_url: str


class CompletedPart(BaseModel):
    part_number: int = Field(ge=1, le=10_000)
    etag: str = Field(min_length=1, max_length=200)


class CompleteUploadRequest(BaseModel):
    parts: list[CompletedPart] = Field(min_length=1, max_length=10_000)


class DatasetOut(BaseModel):
    """A dataset: ``status`` validating -> ready | invalid; ``problems`` (errors) and
    ``warnings`` are ``{"entry", "code", "message"}``; ``stats`` holds class counts per split,
    imbalance ratio, shot groups, image size histogram and, while validating, ``progress``."""

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
