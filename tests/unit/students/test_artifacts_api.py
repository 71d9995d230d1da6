"""/v1/jobs/{id}/artifacts: listing, whole and ranged downloads, team scoping."""

from __future__ import annotations

import hashlib
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.core.db import session_scope
from app.jobs.models import JobStatus
from tests.unit.students.conftest import FinishedJob, add_job, make_team_key

EXPECTED_TYPES = {
    "config.json": "application/json",
    "model_card.md": "text/markdown; charset=utf-8",
    "student.onnx": "application/octet-stream",
    "student.safetensors": "application/octet-stream",
    "student.torchscript.pt": "application/octet-stream",
}


def url(job: FinishedJob, name: str = "") -> str:
    return f"/v1/jobs/{job.job_id}/artifacts" + (f"/{name}" if name else "")


def test_lists_every_artifact_with_size_digest_and_type(
    client: TestClient, finished_job: FinishedJob
) -> None:
    listed = client.get(url(finished_job), headers=finished_job.headers)
    assert listed.status_code == 200
    rows = {row["name"]: row for row in listed.json()}
    assert set(rows) == set(EXPECTED_TYPES)
    for name, path in finished_job.files.items():
        data = path.read_bytes()
        assert rows[name]["bytes"] == len(data)
        assert rows[name]["sha256"] == hashlib.sha256(data).hexdigest()
        assert rows[name]["media_type"] == EXPECTED_TYPES[name]
        assert rows[name]["url"] == url(finished_job, name)


def test_every_artifact_downloads_with_its_digest(
    client: TestClient, finished_job: FinishedJob
) -> None:
    for row in client.get(url(finished_job), headers=finished_job.headers).json():
        response = client.get(row["url"], headers=finished_job.headers)
        assert response.status_code == 200
        assert hashlib.sha256(response.content).hexdigest() == row["sha256"]
        assert response.headers["content-type"] == row["media_type"]
        assert response.headers["content-length"] == str(row["bytes"])
        assert response.headers["accept-ranges"] == "bytes"
        assert response.headers["etag"] == f'"{row["sha256"]}"'
        assert f'filename="{row["name"]}"' in response.headers["content-disposition"]


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [("bytes=0-99", 0, 99), ("bytes=100-", 100, None), ("bytes=-50", -50, None)],
)
def test_range_requests_answer_206_with_that_slice(
    client: TestClient, finished_job: FinishedJob, header: str, start: int, end: int | None
) -> None:
    data = finished_job.files["student.onnx"].read_bytes()
    expected = data[start : None if end is None else end + 1]
    response = client.get(
        url(finished_job, "student.onnx"), headers={**finished_job.headers, "Range": header}
    )
    assert response.status_code == 206
    assert response.content == expected
    first = start % len(data)
    assert response.headers["content-range"] == (
        f"bytes {first}-{first + len(expected) - 1}/{len(data)}"
    )
    assert response.headers["content-length"] == str(len(expected))


def test_resuming_in_pieces_reassembles_the_file(
    client: TestClient, finished_job: FinishedJob
) -> None:
    data = finished_job.files["model_card.md"].read_bytes()
    pieces = []
    for start in range(0, len(data), 1000):
        response = client.get(
            url(finished_job, "model_card.md"),
            headers={**finished_job.headers, "Range": f"bytes={start}-{start + 999}"},
        )
        assert response.status_code == 206
        pieces.append(response.content)
    assert b"".join(pieces) == data


@pytest.mark.parametrize("header", ["bytes=999999999-", "bytes=10-5", "bytes=abc", "bytes=-0"])
def test_bad_ranges_answer_416_with_the_size(
    client: TestClient, finished_job: FinishedJob, header: str
) -> None:
    size = finished_job.files["config.json"].stat().st_size
    response = client.get(
        url(finished_job, "config.json"), headers={**finished_job.headers, "Range": header}
    )
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{size}"
    assert response.json()["error"]["code"] == "range_not_satisfiable"


@pytest.mark.parametrize(
    "extra",
    [
        {"Range": "bytes=0-1,5-6"},
        {"Range": "items=0-1"},
        {"Range": "bytes=0-9", "If-Range": '"old"'},
    ],
)
def test_ranges_we_do_not_serve_get_the_whole_file(
    client: TestClient, finished_job: FinishedJob, extra: dict[str, str]
) -> None:
    response = client.get(
        url(finished_job, "config.json"), headers={**finished_job.headers, **extra}
    )
    assert response.status_code == 200
    assert response.content == finished_job.files["config.json"].read_bytes()


def ask_for_link(client: TestClient, job: FinishedJob, name: str) -> httpx.Response:
    """``?redirect=true`` for artifact ``name``, not followed."""
    return client.get(
        url(job, name) + "?redirect=true", headers=job.headers, follow_redirects=False
    )


def test_redirect_on_a_local_store_hands_out_a_signed_link_that_needs_no_key(
    client: TestClient, finished_job: FinishedJob
) -> None:
    response = ask_for_link(client, finished_job, "student.onnx")
    assert response.status_code == 307
    assert response.headers["cache-control"] == "no-store"
    link = response.headers["location"]
    assert "/downloads/" in link
    data = finished_job.files["student.onnx"].read_bytes()
    whole = client.get(link)  # no Authorization header
    assert whole.status_code == 200
    assert whole.content == data
    assert 'filename="student.onnx"' in whole.headers["content-disposition"]
    ranged = client.get(link, headers={"Range": "bytes=10-19"})
    assert (ranged.status_code, ranged.content) == (206, data[10:20])


def test_download_links_expire_and_cannot_be_forged(
    client: TestClient, finished_job: FinishedJob
) -> None:
    from app.core.config import get_settings
    from app.core.security import sign_download
    from app.students.models import Artifact

    key = ask_for_link(client, finished_job, "config.json").headers["location"]
    with session_scope() as session:
        artifact_id = session.scalars(
            select(Artifact.id).where(Artifact.name == "config.json")
        ).one()
    secret = get_settings().secret_key
    expired = sign_download(artifact_id, secret, ttl_s=60, now=time.time() - 120)
    forged = sign_download(artifact_id, "not-the-secret", ttl_s=60)
    signed = key.rsplit("/", 1)[1]
    # Change a character inside the signature: the last base64 character carries bits the
    # decoder ignores, so editing the end could leave the same bytes (a flaky "forgery").
    swapped = "A" if signed[-10] != "A" else "B"
    tampered = signed[:-10] + swapped + signed[-9:]
    for token in (expired, forged, tampered):
        response = client.get(f"/downloads/{token}")
        assert response.status_code == 403, token
        assert response.json()["error"]["code"] == "invalid_link"


def test_other_teams_and_unknown_names_get_404(
    client: TestClient, finished_job: FinishedJob
) -> None:
    _, stranger = make_team_key("pathology")
    assert client.get(url(finished_job), headers=stranger).status_code == 404
    assert client.get(url(finished_job, "student.onnx"), headers=stranger).status_code == 404
    missing = client.get(url(finished_job, "weights.bin"), headers=finished_job.headers)
    assert missing.status_code == 404
    assert "artifacts lists what it has" in missing.json()["error"]["message"]


def test_running_job_has_no_artifacts_yet(client: TestClient) -> None:
    team_id, headers = make_team_key("radiology")
    job_id = add_job(team_id, JobStatus.running, {})
    assert client.get(f"/v1/jobs/{job_id}/artifacts", headers=headers).json() == []
    missing = client.get(f"/v1/jobs/{job_id}/artifacts/student.onnx", headers=headers)
    assert missing.status_code == 404
    assert "the job is running" in missing.json()["error"]["message"]
