"""``predict`` within a budget: the job and its student are checked before any byte of the body
is read, images stream and decode one at a time, bytes and pixels are capped per image and per
request (large JPEGs decode reduced), and a process runs only so many predictions at once."""

from __future__ import annotations

import io
from typing import Any

import anyio
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.jobs.models import JobStatus
from app.students.predict_limits import decode_reduced, prediction_slots
from tests.unit.students.conftest import IMAGE_SIZE, FinishedJob, add_job, make_team_key
from tests.unit.teams.conftest import override_settings


def png(width: int, height: int, mode: str = "L") -> bytes:
    out = io.BytesIO()
    Image.new(mode, (width, height)).save(out, format="PNG")
    return out.getvalue()


def jpeg(width: int, height: int) -> bytes:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).resize((width, height)).save(out, format="JPEG", quality=80)
    return out.getvalue()


def files(*images: bytes) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (f"{i}.png", data, "image/png")) for i, data in enumerate(images)]


async def _predict_raw(job_id: str, headers: dict[str, str], parts: int) -> tuple[int, int]:
    """POST ``parts`` 1 MiB chunks of body to ``job_id``'s predict, raw ASGI: the status and
    how many chunks the API pulled before answering."""
    from app.main import app

    pulled = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        if pulled >= parts:
            await anyio.sleep(3600)
        pulled += 1
        return {"type": "http.request", "body": b"\0" * 2**20, "more_body": pulled < parts}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": f"/v1/jobs/{job_id}/predict",
        "raw_path": f"/v1/jobs/{job_id}/predict".encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            (b"content-type", b"multipart/form-data; boundary=xyz"),
            *raw,
        ],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
    }
    with anyio.fail_after(20):
        await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], pulled


def test_an_unknown_job_is_404_before_any_part_is_read(
    client: TestClient, finished_job: FinishedJob
) -> None:
    status, pulled = anyio.run(_predict_raw, "job_unknown", finished_job.headers, 40)
    assert (status, pulled) == (404, 0)
    # Another team's job is unknown to this key, just the same.
    _, stranger = make_team_key("strangers")
    assert anyio.run(_predict_raw, finished_job.job_id, stranger, 40) == (404, 0)


def test_a_job_without_a_student_is_409_before_any_part_is_read(client: TestClient) -> None:
    team_id, headers = make_team_key("no-student")
    running = add_job(team_id, JobStatus.running, {})
    assert anyio.run(_predict_raw, running, headers, 40) == (409, 0)


def test_total_bytes_are_capped_while_streaming(
    client: TestClient, finished_job: FinishedJob, monkeypatch: pytest.MonkeyPatch
) -> None:
    override_settings(monkeypatch, max_predict_bytes=str(60_000))
    one = jpeg(256, 256)
    assert len(one) < 60_000 < 6 * len(one)
    response = client.post(
        f"/v1/jobs/{finished_job.job_id}/predict",
        headers=finished_job.headers,
        files=files(*[one] * 6),
    )
    assert response.status_code == 413
    assert "FOPRO_MAX_PREDICT_BYTES" in response.json()["error"]["message"]


def test_pixels_are_capped_per_image_before_decoding(
    client: TestClient, finished_job: FinishedJob
) -> None:
    # 8000x8000 gray zeros: a few tens of kB on the wire, 64 megapixels once decoded.
    huge = png(8000, 8000)
    assert len(huge) < 200_000
    response = client.post(
        f"/v1/jobs/{finished_job.job_id}/predict",
        headers=finished_job.headers,
        files=files(huge),
    )
    assert response.status_code == 422
    assert "8000x8000 pixels is above the limit" in response.json()["error"]["message"]


def test_pixels_are_capped_per_request(
    client: TestClient, finished_job: FinishedJob, monkeypatch: pytest.MonkeyPatch
) -> None:
    override_settings(monkeypatch, max_predict_pixels=str(3 * 500 * 500))
    response = client.post(
        f"/v1/jobs/{finished_job.job_id}/predict",
        headers=finished_job.headers,
        files=files(*[png(500, 500)] * 4),
    )
    assert response.status_code == 413
    assert "FOPRO_MAX_PREDICT_PIXELS" in response.json()["error"]["message"]
    fewer = client.post(
        f"/v1/jobs/{finished_job.job_id}/predict",
        headers=finished_job.headers,
        files=files(*[png(500, 500)] * 3),
    )
    assert fewer.status_code == 200, fewer.text
    assert len(fewer.json()["predictions"]) == 3


def test_a_large_jpeg_decodes_reduced_and_matches_its_full_decode() -> None:
    data = jpeg(2048, 1536)
    reduced, decoded = decode_reduced(data, IMAGE_SIZE, max_pixels=10**8)
    assert decoded <= 2048 * 1536 // 4  # libjpeg scaled the decode down
    with Image.open(io.BytesIO(data)) as image:
        full = image.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
    expected = np.asarray(full, dtype=np.float32).transpose(2, 0, 1) / 255.0
    assert reduced.shape == (3, IMAGE_SIZE, IMAGE_SIZE)
    assert np.abs(reduced - expected).mean() < 0.02


def test_concurrent_predictions_beyond_the_limit_are_429(
    client: TestClient, finished_job: FinishedJob, monkeypatch: pytest.MonkeyPatch
) -> None:
    override_settings(monkeypatch, max_concurrent_predictions="1")
    with prediction_slots.hold(1):  # another request is predicting
        busy = client.post(
            f"/v1/jobs/{finished_job.job_id}/predict",
            headers=finished_job.headers,
            files=files(png(8, 8)),
        )
    assert busy.status_code == 429
    assert busy.headers["retry-after"] == "1"
    assert busy.json()["error"]["code"] == "predictions_busy"
    after = client.post(
        f"/v1/jobs/{finished_job.job_id}/predict",
        headers=finished_job.headers,
        files=files(png(8, 8)),
    )
    assert after.status_code == 200


def test_an_unreadable_image_is_named_without_python_object_reprs(
    client: TestClient, finished_job: FinishedJob
) -> None:
    for garbage in (b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\0" * 40):
        response = client.post(
            f"/v1/jobs/{finished_job.job_id}/predict",
            headers=finished_job.headers,
            files=[("files", ("scan.dcm", garbage, "application/dicom"))],
        )
        assert response.status_code == 422
        message = response.json()["error"]["message"]
        assert "'scan.dcm'" in message
        assert "BytesIO" not in message
        assert " at 0x" not in message


def test_other_form_fields_and_other_bodies_are_refused(
    client: TestClient, finished_job: FinishedJob
) -> None:
    url = f"/v1/jobs/{finished_job.job_id}/predict"
    wrong_field = client.post(
        url, headers=finished_job.headers, files={"image": ("a.png", png(8, 8), "image/png")}
    )
    assert wrong_field.status_code == 422
    assert "`files`" in wrong_field.json()["error"]["message"]
    raw = client.post(url, headers=finished_job.headers, content=png(8, 8))
    assert raw.status_code == 422
    assert "multipart/form-data" in raw.json()["error"]["message"]
