"""Inference with a job's exported ``student.onnx`` inside the API: onnxruntime, never torch.

Images are prepared exactly as the engine prepared its training and test images
(``foprokd.images.to_model_rgb``, torch-free, shared with the engine's cache, then uint8 / 255).
The mean/std normalisation is inside the ONNX graph, and logits are divided by the temperature
the engine fitted on val (``config.json``), so the probabilities are calibrated.
``tests/unit/students/test_predict.py`` checks the API and the engine produce the same pixels
and the same probabilities.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.errors import Conflict
from app.core.storage import ObjectStore
from app.core.tenancy import get_owned
from app.jobs.models import Job
from app.students.explain import explain_occlusion, findings
from app.students.models import Artifact
from app.students.predict_limits import decode_reduced
from app.students.schemas import ClassScore, ImagePrediction, PredictionsOut
from foprokd.images import RESIZE_POLICY
from foprokd.quantize import INT8_FILE

CONFIG_FORMAT = "foprokd-student"
ONNX_NAME = "student.onnx"
CONFIG_NAME = "config.json"
MAX_IMAGES_PER_REQUEST = 64
# Each cached session holds one student in memory (tens of MB); a few cover the active jobs.
CACHED_SESSIONS = 4


class StudentNotExported(Conflict):
    code = "student_not_exported"


class Int8NotPublished(Conflict):
    code = "int8_not_published"


class Precision(StrEnum):
    """Which exported model answers: the FP32 student, or its INT8 model where the job
    published one (``int8: auto`` publishes it only when it passed the per-class gate)."""

    fp32 = "fp32"
    int8 = "int8"


MODEL_FILES = {Precision.fp32: ONNX_NAME, Precision.int8: INT8_FILE}


@dataclass(frozen=True)
class StudentRuntime:
    """A loaded ONNX student and what its config.json says about inputs and outputs."""

    session: Any  # onnxruntime.InferenceSession (imported lazily: the API starts without it)
    input_name: str
    output_name: str
    classes: list[str]
    image_size: int
    sha256: str
    temperature: float = 1.0  # fitted on val by the engine; 1.0 for an uncalibrated export
    thresholds: dict[str, list[float | None]] = field(default_factory=dict)  # per profile
    precision: Precision = Precision.fp32

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """images: float32 (N, 3, S, S) in [0, 1] -> calibrated softmax(logits / T) (N, C)."""
        logits = np.asarray(
            self.session.run([self.output_name], {self.input_name: images})[0], dtype=np.float32
        ) / np.float32(self.temperature)
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)


class StudentRuntimeCache:
    """At most ``capacity`` runtimes, keyed by the ONNX and config digests, least recent evicted."""

    def __init__(self, capacity: int = CACHED_SESSIONS) -> None:
        self.capacity = capacity
        self._runtimes: OrderedDict[tuple[str, str], StudentRuntime] = OrderedDict()
        self._lock = threading.Lock()

    def get(
        self,
        store: ObjectStore,
        onnx: Artifact,
        config: Artifact,
        precision: Precision = Precision.fp32,
    ) -> StudentRuntime:
        key = (onnx.sha256, config.sha256)
        with self._lock:
            if key in self._runtimes:
                self._runtimes.move_to_end(key)
                return self._runtimes[key]
        # Loaded outside the lock: a slow load must not block predictions for other students.
        runtime = load_runtime(store, onnx, config, precision)
        with self._lock:
            self._runtimes[key] = runtime
            self._runtimes.move_to_end(key)
            while len(self._runtimes) > self.capacity:
                self._runtimes.popitem(last=False)
        return runtime

    def clear(self) -> None:
        with self._lock:
            self._runtimes.clear()


runtime_cache = StudentRuntimeCache()


def load_runtime(
    store: ObjectStore, onnx: Artifact, config: Artifact, precision: Precision = Precision.fp32
) -> StudentRuntime:
    """An onnxruntime session for the artifact ``onnx``, described by the artifact ``config``
    (the FP32 student's: the INT8 model takes the same inputs and gives the same outputs)."""
    import onnxruntime

    described = json.loads(store.get_bytes(config.object_key))
    if described.get("format") != CONFIG_FORMAT:
        raise StudentNotExported(f"{CONFIG_NAME} of job {onnx.job_id} is not a student export.")
    policy = described.get("resize_policy", RESIZE_POLICY)
    if policy != RESIZE_POLICY:
        raise StudentNotExported(
            f"The student was trained with resize policy {policy!r}; this API implements "
            f"{RESIZE_POLICY!r}. Run it with the engine instead."
        )
    session = onnxruntime.InferenceSession(
        store.get_bytes(onnx.object_key), providers=["CPUExecutionProvider"]
    )
    return StudentRuntime(
        session=session,
        input_name=described.get("input", {}).get("name", session.get_inputs()[0].name),
        output_name=described.get("output", {}).get("name", session.get_outputs()[0].name),
        classes=[str(c) for c in described["classes"]],
        image_size=int(described["image_size"]),
        sha256=onnx.sha256,
        temperature=float(described.get("temperature") or 1.0),
        thresholds=dict(described.get("operating_points") or {}),
        precision=precision,
    )


def decode_for_student(data: bytes, image_size: int, *, max_pixels: int) -> np.ndarray:
    """Image file bytes -> float32 (3, S, S) RGB in [0, 1], the engine's eval-path pixels.

    Raises ImageUnreadable for bytes PIL cannot decode or an image above ``max_pixels``.
    """
    return decode_reduced(data, image_size, max_pixels=max_pixels)[0]


def top_k(probabilities: np.ndarray, classes: Sequence[str], k: int) -> list[list[ClassScore]]:
    """The ``k`` most probable classes per row of (N, C) probabilities, most probable first."""
    k = min(k, probabilities.shape[1])
    # A stable sort keeps the lower class index first on ties, like argmax does.
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return [
        [ClassScore(label=classes[i], index=int(i), probability=float(row[i])) for i in indices]
        for row, indices in zip(probabilities, order, strict=True)
    ]


def student_for_job(
    session: Session,
    store: ObjectStore,
    *,
    team_id: str,
    job_id: str,
    precision: Precision = Precision.fp32,
) -> StudentRuntime:
    """The loaded student of the team's job ``job_id`` at ``precision``: 404 for another team's
    job, 409 when the job has no exported student or, for INT8, published no INT8 model (the
    message says why, from the job's INT8 record)."""
    job = get_owned(session, Job, job_id, team_id, what="job")
    exported = {
        artifact.name: artifact
        for artifact in session.scalars(
            select(Artifact).where(
                Artifact.job_id == job.id,
                Artifact.name.in_([ONNX_NAME, CONFIG_NAME, MODEL_FILES[precision]]),
            )
        )
    }
    if ONNX_NAME not in exported or CONFIG_NAME not in exported:
        raise StudentNotExported(
            f"Job {job_id} has no exported student to predict with (the job is {job.status}); "
            "predictions are available once it has succeeded.",
            details={"job_id": job_id, "status": job.status},
        )
    model = exported.get(MODEL_FILES[precision])
    if model is None:
        record = ((job.metrics or {}).get("trust") or {}).get("int8") or {}
        reasons = [str(reason) for reason in record.get("reasons") or []]
        why = "; ".join(reasons) if reasons else "the job recorded no INT8 decision"
        raise Int8NotPublished(
            f"Job {job_id} published no INT8 model ({why}); predict with precision=fp32.",
            details={"job_id": job_id, "reasons": reasons},
        )
    return runtime_cache.get(store, model, exported[CONFIG_NAME], precision)


def predict_batch(
    runtime: StudentRuntime,
    job_id: str,
    filenames: Sequence[str],
    batch: np.ndarray,
    k: int,
    *,
    threshold_profile: str | None = None,
    patch: int | None = None,
) -> PredictionsOut:
    """Top-``k`` classes for each image of ``batch`` (N, 3, S, S), named by ``filenames``, with
    calibrated probabilities; with ``threshold_profile`` (checked by the caller with
    ``check_profile``) the findings at that operating point, with ``patch`` (from
    ``occlusion_plan``) an occlusion heat map per image (``app.students.explain``)."""
    probabilities = runtime.probabilities(batch)
    predictions = [
        ImagePrediction(filename=filename, top_k=scores)
        for filename, scores in zip(
            filenames, top_k(probabilities, runtime.classes, k), strict=True
        )
    ]
    if threshold_profile is not None:
        flagged = findings(probabilities, runtime.classes, runtime.thresholds[threshold_profile])
        for prediction, found in zip(predictions, flagged, strict=True):
            prediction.findings = found
    if patch is not None:
        maps = explain_occlusion(runtime, batch, probabilities, patch)
        for prediction, explanation in zip(predictions, maps, strict=True):
            prediction.explanation = explanation
    return PredictionsOut(
        job_id=job_id,
        model_sha256=runtime.sha256,
        image_size=runtime.image_size,
        temperature=runtime.temperature,
        precision=runtime.precision.value,
        threshold_profile=threshold_profile,
        predictions=predictions,
    )
