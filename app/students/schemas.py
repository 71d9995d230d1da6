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
    probability: float = Field(
        description="Softmax of the student's logits divided by its temperature (config.json), "
        "in [0, 1]."
    )


class Finding(BaseModel):
    label: str
    index: int
    probability: float = Field(description="Calibrated probability of the class.")
    threshold: float = Field(description="The class's threshold in the requested profile.")


class Explanation(BaseModel):
    method: str = Field(description="occlusion: the drop of the class's probability per patch.")
    label: str = Field(description="The class explained: the most probable one.")
    index: int
    patch: int = Field(description="Side of the occluded square in pixels of the model input.")
    passes: int = Field(description="onnxruntime forward passes this map took.")
    max_drop: float = Field(description="The probability drop that the brightest colour means.")
    png_base64: str = Field(description="S x S PNG heat map (black: no drop), base64.")


class ImagePrediction(BaseModel):
    filename: str
    top_k: list[ClassScore] = Field(description="Most probable classes first.")
    findings: list[Finding] | None = Field(
        default=None,
        description="With threshold_profile: every class whose probability reaches its "
        "threshold at that operating point, most probable first.",
    )
    explanation: Explanation | None = Field(default=None, description="With explain=occlusion.")


class PredictionsOut(BaseModel):
    job_id: str
    model_sha256: str = Field(description="SHA-256 of the ONNX model that answered.")
    precision: str = Field(
        default="fp32", description="fp32 (student.onnx) or int8 (student.int8.onnx)."
    )
    image_size: int = Field(description="Every image was resized to this square size.")
    temperature: float = Field(default=1.0, description="The calibration temperature applied.")
    threshold_profile: str | None = None
    predictions: list[ImagePrediction]
