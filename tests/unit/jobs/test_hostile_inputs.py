"""What a hostile or careless client tried against the live API, each reproduced: integers past
the database's range, non-finite and huge floats, coerced strings and booleans in job bodies,
padded JSON bodies, a stalled body, and an event stream that outlived its revoked key."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import anyio
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.core.db import utcnow
from app.jobs.models import JobStatus
from app.teams.models import ApiKey
from app.teams.service import authenticate
from tests.unit.jobs.conftest import Team, add_job
from tests.unit.teams.conftest import auth, override_settings

HUGE = "9223372036854775808"  # 2**63: one past a signed 64-bit integer


def job_body(team: Team, **params: Any) -> dict[str, Any]:
    return {
        "dataset_id": team.dataset_id,
        "teacher": "resnet18",
        "student": "resnet18",
        "params": {"allow_random_weights": True, "epochs": 1, "image_size": 32, **params},
    }


def test_integers_past_the_databases_range_are_422_not_500(
    client: TestClient, session: Session, team: Team
) -> None:
    job = add_job(session, team)
    headers = auth(team.viewer)
    for path in (
        f"/v1/jobs?offset={HUGE}",
        f"/v1/datasets?offset={HUGE}",
        f"/v1/jobs/{job.id}/events?offset={HUGE}",
        f"/v1/jobs/{job.id}/events?after_id={HUGE}",
        f"/v1/datasets/{team.dataset_id}/events?after_id={HUGE}",
    ):
        response = client.get(path, headers=headers)
        assert response.status_code == 422, (path, response.text)
        assert response.json()["error"]["code"] == "invalid_input"
    stream = client.get(f"/v1/jobs/{job.id}/stream", headers={**headers, "Last-Event-ID": HUGE})
    assert stream.status_code == 422
    assert client.get("/v1/jobs?offset=2147483647", headers=headers).status_code == 200


def test_an_unhandled_error_is_answered_and_logged_once_not_handed_to_the_server(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import httpx

    from app.main import create_app

    app = create_app()

    @app.get("/test/boom")
    def boom() -> None:
        raise RuntimeError("exploded")

    async def call() -> httpx.Response:
        # raise_app_exceptions: whatever the app lets escape reaches the server, which logs it.
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.get("/test/boom")

    response = anyio.run(call)
    assert response.status_code == 500
    assert response.headers["x-content-type-options"] == "nosniff"
    logged = [r for r in caplog.records if r.exc_info]
    assert len(logged) == 1


@pytest.mark.parametrize(
    ("raw_params", "field"),
    [
        ('"grad_clip_norm": Infinity', "grad_clip_norm"),
        ('"distill_weight": Infinity', "distill_weight"),
        ('"lr": NaN', "lr"),
        ('"distill_weight": 1e300', "distill_weight"),
        ('"fpg_beta": 1e10', "fpg_beta"),
        ('"epochs": "10"', "epochs"),
        ('"epochs": true', "epochs"),
        ('"augment": "yes"', "augment"),
    ],
)
def test_job_params_are_finite_bounded_and_strictly_typed(
    client: TestClient, team: Team, raw_params: str, field: str
) -> None:
    body = json.dumps(job_body(team))[:-2] + f", {raw_params}}}}}"
    response = client.post(
        "/v1/jobs",
        headers={**auth(team.member), "Content-Type": "application/json"},
        content=body,
    )
    assert response.status_code == 422, response.text
    assert any(p["field"].endswith(field) for p in response.json()["error"]["details"])
    assert client.get("/v1/jobs", headers=auth(team.member)).json()["total"] == 0


def test_a_number_given_as_an_integer_is_still_a_float(client: TestClient, team: Team) -> None:
    response = client.post("/v1/jobs", headers=auth(team.admin), json=job_body(team, lr=1))
    assert response.status_code == 201, response.text
    assert response.json()["params"]["lr"] == 1.0


def test_json_bodies_over_the_limit_are_413_before_parsing(
    client: TestClient, team: Team, monkeypatch: pytest.MonkeyPatch
) -> None:
    override_settings(monkeypatch, max_json_body_bytes="4096")
    padded = job_body(team)
    padded["teacher"] = "resnet18" + " " * 8192
    response = client.post("/v1/jobs", headers=auth(team.member), json=padded)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert "FOPRO_MAX_JSON_BODY_BYTES" in response.json()["error"]["message"]
    # Chunked, so no Content-Length announces it: counted as it arrives.
    chunks = iter([json.dumps(padded).encode()[i : i + 1000] for i in range(0, 9000, 1000)])
    streamed = client.post(
        "/v1/jobs",
        headers={**auth(team.member), "Content-Type": "application/json"},
        content=chunks,
    )
    assert streamed.status_code == 413
    assert client.get("/v1/jobs", headers=auth(team.member)).json()["total"] == 0


async def _stalled_request(path: str, content_type: str, key: str) -> tuple[int, bytes]:
    """Send the first bytes of a body, then nothing: what the server answers, if anything."""
    from app.main import app

    sent: list[dict[str, Any]] = []
    first = True

    async def receive() -> dict[str, Any]:
        nonlocal first
        if first:
            first = False
            return {"type": "http.request", "body": b'{"dataset_id": ', "more_body": True}
        await anyio.sleep(3600)  # the client stalls
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"name=stalled",
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            (b"content-type", content_type.encode()),
            (b"authorization", f"Bearer {key}".encode()),
        ],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
    }
    with anyio.fail_after(20):
        await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], body


def test_a_stalled_body_is_dropped_after_the_idle_timeout(
    client: TestClient, team: Team, monkeypatch: pytest.MonkeyPatch
) -> None:
    override_settings(monkeypatch, body_idle_timeout_s="0.3")
    status, body = anyio.run(_stalled_request, "/v1/jobs", "application/json", team.member)
    assert status == 408
    assert json.loads(body)["error"]["code"] == "request_timeout"
    status, body = anyio.run(
        _stalled_request, "/v1/datasets", "application/octet-stream", team.member
    )
    assert 400 <= status < 500, body
    assert client.get("/v1/datasets", headers=auth(team.member)).json()["total"] == 1


def test_a_live_event_stream_ends_when_its_key_is_revoked(
    client: TestClient, session: Session, team: Team
) -> None:
    job = add_job(session, team, status=JobStatus.running.value)
    member = authenticate(session, team.member, _secret())
    revoked = threading.Event()
    messages: list[str] = []
    with client.stream("GET", f"/v1/jobs/{job.id}/stream", headers=auth(team.member)) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            messages.append(line)
            if line.startswith("event: progress") and not revoked.is_set():
                key = session.get_one(ApiKey, member.key_id)
                key.revoked_at = utcnow()
                session.commit()
                revoked.set()
    assert revoked.is_set()
    end = messages.index("event: end")
    assert "revoked" in messages[end + 1]


def _secret() -> str:
    from app.core.config import get_settings

    return get_settings().secret_key


def test_the_body_idle_timeout_never_cuts_a_response_stream(
    client: TestClient, session: Session, team: Team, monkeypatch: pytest.MonkeyPatch
) -> None:
    override_settings(monkeypatch, body_idle_timeout_s="0.2")
    job = add_job(session, team, status=JobStatus.running.value)
    member = authenticate(session, team.member, _secret())
    progress: list[str] = []
    with client.stream("GET", f"/v1/jobs/{job.id}/stream", headers=auth(team.member)) as response:
        lines = response.iter_lines()
        for line in lines:
            if line.startswith("event: progress"):
                progress.append(next(lines))
                if len(progress) == 1:
                    time.sleep(1.0)  # five idle timeouts with no body to wait for
                    job.progress = {"epoch": 1}
                    session.commit()
                else:
                    session.get_one(ApiKey, member.key_id).revoked_at = utcnow()
                    session.commit()
    assert len(progress) == 2
    assert '"epoch": 1' in progress[1]
