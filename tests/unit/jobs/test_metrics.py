"""``GET /metrics``: request latency by route template, jobs by state, queue depth, leases and
training throughput, each moving when the system does."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session

from app.core.db import utcnow
from app.jobs.lease import claim_job, write_progress
from app.jobs.models import JobStatus
from app.jobs.state import EventKind, add_event
from tests.unit.jobs.conftest import Team, add_job
from tests.unit.jobs.ready_dataset import auth

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: TestClient) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_request_latency_is_counted_per_route_template_and_status(
    client: TestClient, team: Team
) -> None:
    route = {"route": "/v1/jobs/{job_id}", "method": "GET"}
    count = "fopro_http_request_duration_seconds_count"
    before = scrape(client)

    for _ in range(3):
        assert client.get("/v1/jobs/job_missing", headers=auth(team.admin)).status_code == 404
    assert client.get("/v1/jobs?limit=5", headers=auth(team.admin)).status_code == 200
    assert client.get("/no/such/path").status_code == 404

    after = scrape(client)
    assert value(after, count, **route, status="404") == (
        value(before, count, **route, status="404") + 3
    )
    assert value(after, count, route="/v1/jobs", method="GET", status="200") >= 1
    assert value(after, count, route="<unmatched>", method="GET", status="404") >= 1
    # Raw paths never become labels.
    assert not any(dict(labels).get("route") == "/v1/jobs/job_missing" for _, labels in after)


def test_jobs_by_state_queue_depth_and_a_running_jobs_lease_and_throughput(
    client: TestClient, team: Team, session: Session
) -> None:
    before = scrape(client)
    queued = add_job(session, team)
    running = add_job(session, team)
    owner = "host:1:abc"
    assert claim_job(session, running.id, owner, lease=timedelta(seconds=60))
    write_progress(
        session, running.id, owner, phase="training", progress={"images_per_s": 123.5, "epoch": 2}
    )
    add_event(session, running.id, EventKind.epoch, "Epoch 1/3", {"epoch": 1, "seconds": 4.25})
    add_event(session, running.id, EventKind.epoch, "Epoch 2/3", {"epoch": 2, "seconds": 3.5})
    session.commit()

    after = scrape(client)

    for state, added in ((JobStatus.queued, 1), (JobStatus.running, 1), (JobStatus.failed, 0)):
        moved = value(after, "fopro_jobs", state=state) - value(before, "fopro_jobs", state=state)
        assert moved == added, state
    job = {"job_id": running.id}
    assert value(after, "fopro_job_training_images_per_second", **job) == 123.5
    assert value(after, "fopro_job_epoch_seconds", **job) == 3.5  # the newest epoch
    lease = value(after, "fopro_job_lease_remaining_seconds", **job, lease_owner=owner)
    assert 0 < lease <= 60
    age = value(after, "fopro_job_heartbeat_age_seconds", **job, lease_owner=owner)
    assert 0 <= age < 30
    assert not any(dict(labels).get("job_id") == queued.id for _, labels in after)
    assert value(after, "fopro_metrics_source_up", source="database") == 1
    assert value(after, "fopro_metrics_source_up", source="broker") == 1


def test_queue_depth_counts_messages_the_api_sent(client: TestClient, team: Team) -> None:
    """No worker runs here: each submitted job's message waits in the gpu queue."""
    before = value(scrape(client), "fopro_queue_depth", queue="gpu")
    body = {
        "dataset_id": team.dataset_id,
        "teacher": "resnet18",
        "student": "resnet18",
        "params": {"epochs": 1, "allow_random_weights": True},
    }
    for _ in range(2):
        assert client.post("/v1/jobs", json=body, headers=auth(team.admin)).status_code == 201
    after = scrape(client)
    assert value(after, "fopro_queue_depth", queue="gpu") == before + 2
    assert ("fopro_queue_depth", frozenset({("queue", "cpu")})) in after


def test_an_expired_lease_shows_as_negative_time_left(
    client: TestClient, team: Team, session: Session
) -> None:
    job = add_job(session, team)
    owner = "host:2:def"
    claim_job(session, job.id, owner, lease=timedelta(seconds=5), now=utcnow() - timedelta(60))
    left = value(
        scrape(client), "fopro_job_lease_remaining_seconds", job_id=job.id, lease_owner=owner
    )
    assert left < -50
