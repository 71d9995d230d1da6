"""ONNX-in-the-API predictions equal PyTorch-in-the-engine predictions on the same image files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from app.jobs.models import JobStatus
from app.students import predict as api_predict
from app.teams.models import Role
from foprokd.data import LabelledImages, to_unit_float
from foprokd.evaluation import predict as engine_predict
from foprokd.image_cache import decode_image
from tests.unit.students.conftest import (
    CLASSES,
    IMAGE_SIZE,
    ExportedFiles,
    FinishedJob,
    add_job,
    make_team_key,
)


def _rgb(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def image_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Image files in the modes and orientations hospitals send, at odd sizes."""
    rng = np.random.default_rng(3)
    folder = tmp_path_factory.mktemp("images")
    files = []
    _rgb(rng, 57, 41).save(path := folder / "rgb.png")
    files.append(path)
    rgba = _rgb(rng, 40, 40).convert("RGBA")
    rgba.putalpha(Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)))
    rgba.save(path := folder / "rgba.png")
    files.append(path)
    _rgb(rng, 30, 70).convert("L").save(path := folder / "gray.png")
    files.append(path)
    palette = _rgb(rng, 33, 33).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.info["transparency"] = 0
    palette.save(path := folder / "palette.png", transparency=0)
    files.append(path)
    exif = Image.Exif()
    exif[0x0112] = 6  # EXIF orientation: rotate 90° clockwise to display
    _rgb(rng, 64, 48).save(path := folder / "rotated.jpg", quality=95, exif=exif)
    files.append(path)
    _rgb(rng, 300, 200).save(path := folder / "large.jpg", quality=90)
    files.append(path)
    return files


def test_pixels_equal_the_engines_eval_pixels(image_files: list[Path]) -> None:
    for path in image_files:
        ours = api_predict.decode_for_student(path.read_bytes(), IMAGE_SIZE, max_pixels=10**8)
        engine = to_unit_float(torch.from_numpy(decode_image(path, IMAGE_SIZE))).numpy()
        assert ours.dtype == np.float32
        assert np.array_equal(ours, engine), path.name


def test_api_predictions_match_the_engine(
    client: TestClient,
    finished_job: FinishedJob,
    exported_student: ExportedFiles,
    image_files: list[Path],
) -> None:
    response = client.post(
        f"/v1/jobs/{finished_job.job_id}/predict?top_k={len(CLASSES)}",
        headers=finished_job.headers,
        files=[
            ("files", (p.name, p.read_bytes(), "application/octet-stream")) for p in image_files
        ],
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["image_size"] == IMAGE_SIZE
    assert [p["filename"] for p in body["predictions"]] == [p.name for p in image_files]

    images = LabelledImages(
        images=torch.from_numpy(np.stack([decode_image(p, IMAGE_SIZE) for p in image_files])),
        labels=torch.zeros(len(image_files), dtype=torch.int64),
        classes=CLASSES,
    )
    expected = engine_predict(exported_student.classifier, images, batch_size=4, device="cpu")
    for row, prediction in zip(expected, body["predictions"], strict=True):
        scores = prediction["top_k"]
        assert [s["index"] for s in scores] == list(np.argsort(-row, kind="stable"))
        for score in scores:
            assert score["label"] == CLASSES[score["index"]]
            assert score["probability"] == pytest.approx(float(row[score["index"]]), abs=1e-5)


def test_top_k_is_ordered_and_cut(
    client: TestClient, finished_job: FinishedJob, image_files: list[Path]
) -> None:
    response = client.post(
        f"/v1/jobs/{finished_job.job_id}/predict?top_k=2",
        headers=finished_job.headers,
        files={"files": ("rgb.png", image_files[0].read_bytes(), "image/png")},
    )
    scores = response.json()["predictions"][0]["top_k"]
    assert len(scores) == 2
    assert scores[0]["probability"] >= scores[1]["probability"]


def test_session_is_cached_per_model_digest(
    client: TestClient, finished_job: FinishedJob, image_files: list[Path]
) -> None:
    api_predict.runtime_cache.clear()
    for _ in range(2):
        client.post(
            f"/v1/jobs/{finished_job.job_id}/predict",
            headers=finished_job.headers,
            files={"files": ("rgb.png", image_files[0].read_bytes(), "image/png")},
        )
    assert len(api_predict.runtime_cache._runtimes) == 1


def test_unreadable_image_names_the_file(client: TestClient, finished_job: FinishedJob) -> None:
    response = client.post(
        f"/v1/jobs/{finished_job.job_id}/predict",
        headers=finished_job.headers,
        files={"files": ("scan.dcm", b"not an image at all", "application/dicom")},
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "image_unreadable"
    assert "'scan.dcm'" in response.json()["error"]["message"]


def test_too_many_images_is_413(client: TestClient, finished_job: FinishedJob) -> None:
    png = io.BytesIO()
    Image.new("RGB", (4, 4)).save(png, format="PNG")
    too_many = [("files", (f"{i}.png", png.getvalue(), "image/png")) for i in range(65)]
    response = client.post(
        f"/v1/jobs/{finished_job.job_id}/predict", headers=finished_job.headers, files=too_many
    )
    assert response.status_code == 413


def test_job_without_export_is_409_and_strangers_404(
    client: TestClient, finished_job: FinishedJob, image_files: list[Path]
) -> None:
    team_id, headers = make_team_key("dermatology", Role.viewer)
    running = add_job(team_id, JobStatus.running, {})
    files = {"files": ("rgb.png", image_files[0].read_bytes(), "image/png")}
    response = client.post(f"/v1/jobs/{running}/predict", headers=headers, files=files)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "student_not_exported"
    stranger = client.post(f"/v1/jobs/{finished_job.job_id}/predict", headers=headers, files=files)
    assert stranger.status_code == 404
