"""Artifacts and predictions over HTTP."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class ArtifactOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    media_type: str
    bytes: int
    sha256: str = Field(description="Lowercase hex SHA-256 of the file's bytes.")
    created_at: datetime
    url: str = Field(description="Where to GET it (supports Range; ?redirect=true on S3).")


class ClassScore(BaseModel):
    label: str = Field(description="Class name, as in config.json's classes.")
    index: int
    probability: float = Field(description="Softmax of the student's logits, in [0, 1].")


class ImagePrediction(BaseModel):
    filename: str
    top_k: list[ClassScore] = Field(description="Most probable classes first.")


class PredictionsOut(BaseModel):
    job_id: str
    model_sha256: str = Field(description="SHA-256 of the student.onnx that answered.")
    image_size: int = Field(description="Every image was resized to this square size.")
    predictions: list[ImagePrediction]
