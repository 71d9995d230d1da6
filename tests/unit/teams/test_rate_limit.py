"""Rate limits per API key on the embedded service (in-memory counts): IETF draft headers, 429
with Retry-After, one count per request however long its body or event stream."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.jobs.models import Job, JobStatus
from app.jobs.state import EventKind, add_event
from tests.conftest import free_port
from tests.unit.jobs.ready_dataset import put_ready_dataset
from tests.unit.teams.conftest import TeamKeys, auth, override_settings


def test_each_key_gets_its_rate_then_429_with_retry_after_and_ratelimit_headers(
    client: TestClient, team: TeamKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    override_settings(monkeypatch, rate_limit="3/minute")
    remaining = []
    for _ in range(3):
        response = client.get("/v1/me", headers=auth(team.member))
        assert response.status_code == 200, response.text
        assert response.headers["RateLimit-Limit"] == "3"
        assert 1 <= int(response.headers["RateLimit-Reset"]) <= 60
        remaining.append(response.headers["RateLimit-Remaining"])
    assert remaining == ["2", "1", "0"]

    limited = client.get("/v1/datasets", headers=auth(team.member))
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert limited.headers["RateLimit-Remaining"] == "0"
    assert limited.headers["RateLimit-Limit"] == "3"
    error = limited.json()["error"]
    assert error["code"] == "rate_limited"
    assert "3/minute" in error["message"]
    # Another key of the same team has its own count; failed authentication counts for nothing.
    assert client.get("/v1/me", headers=auth(team.viewer)).status_code == 200
    assert client.get("/v1/me", headers=auth("fpk_00000000_nope")).status_code == 401


def test_a_streamed_upload_counts_once_however_many_chunks_it_has(
    client: TestClient, team: TeamKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    override_settings(monkeypatch, rate_limit="5/minute")

    def body() -> Iterator[bytes]:
        yield b"PK\x03\x04"
        for _ in range(200):
            yield b"\0" * 1024

    response = client.post(
        "/v1/datasets?name=chunky&filename=d.zip",
        headers={**auth(team.member), "Content-Type": "application/octet-stream"},
        content=body(),
    )
    assert response.status_code == 202, response.text
    assert response.headers["RateLimit-Remaining"] == "4"
    assert client.get("/v1/me", headers=auth(team.member)).headers["RateLimit-Remaining"] == "3"


def test_an_event_stream_counts_once_however_many_events_it_sends(
    client: TestClient,
    session: Session,
    store: object,
    team: TeamKeys,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    override_settings(monkeypatch, rate_limit="5/minute")
    dataset = put_ready_dataset(session, store, team.id, num_classes=2, per_class=5, size=16)  # type: ignore[arg-type]
    job = Job(
        team_id=team.id,
        dataset_id=dataset.id,
        teacher="resnet18",
        student="resnet18",
        method="ekd",
        status=JobStatus.succeeded.value,
    )
    session.add(job)
    session.flush()
    for number in range(20):
        add_event(session, job.id, EventKind.info, f"event {number}")
    session.commit()
    with client.stream("GET", f"/v1/jobs/{job.id}/stream", headers=auth(team.viewer)) as stream:
        assert stream.status_code == 200
        assert stream.headers["RateLimit-Remaining"] == "4"
        text = "".join(stream.iter_text())
    assert text.count("event: job_event") >= 20
    assert client.get("/v1/me", headers=auth(team.viewer)).headers["RateLimit-Remaining"] == "3"


def test_an_unreachable_counting_store_lets_requests_through(
    client: TestClient, team: TeamKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    override_settings(
        monkeypatch,
        rate_limit="1/minute",
        rate_limit_storage_url=f"redis://127.0.0.1:{free_port()}/0",
    )
    for _ in range(3):
        response = client.get("/v1/me", headers=auth(team.member))
        assert response.status_code == 200, response.text
        assert "RateLimit-Remaining" not in response.headers


def test_the_counting_store_follows_the_broker_unless_set() -> None:
    assert Settings().rate_limit_storage_url == "memory://"
    redis = Settings(broker_url="redis://cache:6379/0")
    assert redis.rate_limit_storage_url == "redis://cache:6379/0"
    own = Settings(broker_url="redis://cache:6379/0", rate_limit_storage_url="redis://rl:6379/3")
    assert own.rate_limit_storage_url == "redis://rl:6379/3"


@pytest.mark.parametrize("rate", ["600", "fast", "10/fortnight"])
def test_a_rate_the_limits_library_cannot_read_is_refused_at_start(rate: str) -> None:
    with pytest.raises(ValidationError, match="FOPRO_RATE_LIMIT"):
        Settings(rate_limit=rate)
