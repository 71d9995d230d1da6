"""The Redis broker stopped mid-job and started again (empty: it persists nothing)."""

from __future__ import annotations

import time

import pytest

from app.core.db import get_sessionmaker
from app.jobs.models import Job
from tests.faults.conftest import METHOD, Deploy
from tests.support.redis_server import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]


def test_redis_down_mid_job_readyz_names_the_broker_and_jobs_submitted_meanwhile_run_after(
    deploy: Deploy, redis_server: RedisServer
) -> None:
    deployment = deploy()
    deployment.start_worker()
    running = deployment.submit(epochs=6, method=METHOD).json()["id"]
    deployment.wait_for(running, lambda j: j["status"] == "running", 120, "started")

    redis_server.stop()
    ready = deployment.client.get("/readyz")
    assert ready.status_code == 503
    body = ready.json()
    assert body["checks"] == {"database": "ok", "broker": "failed", "store": "ok"}
    assert "broker" in body["error"]["message"]
    # Submitting still works: the job is committed and waits to be sent.
    during = deployment.submit(epochs=1, method=METHOD)
    assert during.status_code == 201, during.text
    waiting = during.json()["id"]
    with get_sessionmaker()() as session:
        assert session.get_one(Job, waiting).enqueued_at is None

    redis_server.start()  # same port, no data: whatever the old one held is gone
    deadline = time.monotonic() + 30
    while deployment.client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, deployment.client.get("/readyz").json()
        time.sleep(0.5)

    first = deployment.wait_terminal(running, timeout_s=180)
    assert first["status"] == "succeeded", first
    second = deployment.wait_terminal(waiting, timeout_s=120)
    assert second["status"] == "succeeded", second
    events = deployment.events(waiting)
    assert [e["data"]["to"] for e in events if e["kind"] == "state"] == [
        "queued",
        "running",
        "succeeded",
    ]
