"""``predict`` over HTTP: calibrated probabilities, findings by profile, occlusion heat maps."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from app.jobs.models import JobStatus
from foprokd.calibration import softmax
from foprokd.export import export_student
from foprokd.image_cache import decode_image
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
