"""``predict`` over HTTP: calibrated probabilities, findings by profile, occlusion heat maps."""

from __future__ import annotations

import base64
import hashlib
import io
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from app.core.db import session_scope
from app.jobs.models import Job, JobStatus
from foprokd.calibration import softmax
from foprokd.export import export_student
from foprokd.image_cache import decode_image
from foprokd.quantize import INT8_FILE, quantize_student
from foprokd.student import StudentClassifier, build_classifier
from tests.unit.students.conftest import (
    CLASSES,
    IMAGE_SIZE,
    TINY_STUDENT,
    FinishedJob,
    add_job,
    make_team_key,
)

TEMPERATURE = 2.5
THRESHOLDS = {"sens90": [0.2, None, 0.5], "sens95": [0.1, None, 0.3]}


@pytest.fixture(scope="module")
def calibrated_student(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[StudentClassifier, dict[str, Path]]:
    torch.manual_seed(11)
    classifier = build_classifier(TINY_STUDENT, len(CLASSES)).eval()
    with torch.no_grad():
        classifier.fc.weight.mul_(30.0)
    out_dir = tmp_path_factory.mktemp("calibrated")
    paths = export_student(
        classifier,
        classes=CLASSES,
        image_size=IMAGE_SIZE,
        arch=TINY_STUDENT,
        out_dir=out_dir,
        extra_config={"temperature": TEMPERATURE, "operating_points": THRESHOLDS},
    )
    return classifier, {p.name: p for p in paths.values()}


@pytest.fixture
def job(client: TestClient, calibrated_student: tuple[StudentClassifier, dict]) -> FinishedJob:
    team_id, headers = make_team_key("oncology")
    files = calibrated_student[1]
    return FinishedJob(team_id, headers, add_job(team_id, JobStatus.succeeded, files), files)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("query") / "lesion.png"
    rng = np.random.default_rng(8)
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)
    return path


def _post(client: TestClient, job: FinishedJob, image: Path, query: str, copies: int = 1):  # type: ignore[no-untyped-def]
    return client.post(
        f"/v1/jobs/{job.job_id}/predict?{query}",
        headers=job.headers,
        files=[("files", (f"{i}.png", image.read_bytes(), "image/png")) for i in range(copies)],
    )


def test_probabilities_are_divided_by_the_exported_temperature(
    client: TestClient,
    job: FinishedJob,
    calibrated_student: tuple[StudentClassifier, dict],
    image: Path,
) -> None:
    response = _post(client, job, image, f"top_k={len(CLASSES)}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["temperature"] == TEMPERATURE
    pixels = torch.from_numpy(decode_image(image, IMAGE_SIZE)).float()[None] / 255.0
    with torch.no_grad():
        logits = calibrated_student[0](pixels).numpy()
    expected = softmax(logits, TEMPERATURE)[0]
    for score in body["predictions"][0]["top_k"]:
        assert score["probability"] == pytest.approx(expected[score["index"]], abs=1e-5)


def test_threshold_profile_flags_findings(
    client: TestClient, job: FinishedJob, image: Path
) -> None:
    body = _post(client, job, image, f"top_k={len(CLASSES)}&threshold_profile=sens95").json()
    prediction = body["predictions"][0]
    probability = {s["label"]: s["probability"] for s in prediction["top_k"]}
    expected = {
        name
        for name, t in zip(CLASSES, THRESHOLDS["sens95"], strict=True)
        if t is not None and probability[name] >= t
    }
    assert {f["label"] for f in prediction["findings"]} == expected
    assert body["threshold_profile"] == "sens95"
    unknown = _post(client, job, image, "threshold_profile=sens80")
    assert unknown.status_code == 422
    assert unknown.json()["error"]["code"] == "unknown_threshold_profile"
    assert "sens90, sens95" in unknown.json()["error"]["message"]


def test_explain_occlusion_returns_a_png_per_image_within_the_cap(
    client: TestClient, job: FinishedJob, image: Path
) -> None:
    response = _post(client, job, image, "explain=occlusion&patch=8", copies=2)
    assert response.status_code == 200, response.text
    for prediction in response.json()["predictions"]:
        explanation = prediction["explanation"]
        assert explanation["label"] == prediction["top_k"][0]["label"]
        assert explanation["passes"] == (IMAGE_SIZE // 8) ** 2 + 1
        png = Image.open(io.BytesIO(base64.b64decode(explanation["png_base64"])))
        assert png.size == (IMAGE_SIZE, IMAGE_SIZE)
    too_costly = _post(client, job, image, "explain=occlusion&patch=1")
    assert too_costly.status_code == 413
    assert "forward passes" in too_costly.json()["error"]["message"]
    assert _post(client, job, image, "explain=gradcam").status_code == 422


@pytest.fixture(scope="module")
def int8_file(
    tmp_path_factory: pytest.TempPathFactory,
    calibrated_student: tuple[StudentClassifier, dict[str, Path]],
) -> Path:
    out = tmp_path_factory.mktemp("int8") / INT8_FILE
    rng = np.random.default_rng(3)
    calibration = rng.integers(0, 256, (16, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    quantize_student(calibrated_student[1]["student.onnx"], out, calibration)
    return out


def test_precision_int8_answers_with_the_published_int8_model(
    client: TestClient,
    calibrated_student: tuple[StudentClassifier, dict[str, Path]],
    int8_file: Path,
    image: Path,
) -> None:
    team_id, headers = make_team_key("oncology-int8")
    files = {**calibrated_student[1], INT8_FILE: int8_file}
    job = FinishedJob(team_id, headers, add_job(team_id, JobStatus.succeeded, files), files)
    fp32 = _post(client, job, image, f"top_k={len(CLASSES)}").json()
    response = _post(client, job, image, f"top_k={len(CLASSES)}&precision=int8")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["precision"] == "int8"
    assert fp32["precision"] == "fp32"
    assert body["model_sha256"] == hashlib.sha256(int8_file.read_bytes()).hexdigest()
    assert body["model_sha256"] != fp32["model_sha256"]
    pixels = decode_image(image, IMAGE_SIZE)[None].astype(np.float32) / 255.0
    session = onnxruntime.InferenceSession(str(int8_file), providers=["CPUExecutionProvider"])
    expected = softmax(session.run(None, {"image": pixels})[0], TEMPERATURE)[0]
    for score in body["predictions"][0]["top_k"]:
        assert score["probability"] == pytest.approx(expected[score["index"]], abs=1e-5)


def test_precision_int8_of_a_job_that_withheld_it_is_409_with_the_reason(
    client: TestClient, job: FinishedJob, image: Path
) -> None:
    reason = "few-shot class bcc lost 12.0 points of recall (limit 5.0)"
    with session_scope() as session:
        row = session.get_one(Job, job.job_id)
        row.metrics = {"trust": {"int8": {"published": False, "reasons": [reason]}}}
    response = _post(client, job, image, "precision=int8")
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "int8_not_published"
    assert reason in error["message"]
    assert error["details"]["reasons"] == [reason]
    assert _post(client, job, image, "precision=int4").status_code == 422
    assert _post(client, job, image, "precision=fp32").status_code == 200
