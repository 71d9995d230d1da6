"""PostgreSQL backends of the worker and the API terminated mid-job (``pg_terminate_backend``,
what a failover or an idle-session killer does)."""

from __future__ import annotations

import time
from collections import Counter

import psycopg
import pytest

from tests.faults.conftest import METHOD, Deploy
from tests.unit.jobs.ready_dataset import auth

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]


def terminate_sessions(pg_url: str) -> int:
    """Terminate every other session on the test database; returns how many."""
    url = pg_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return len(rows)


def test_terminated_sessions_reconnect_and_no_event_is_lost_or_doubled(
    deploy: Deploy, pg_url: str
) -> None:
    epochs = 6
    deployment = deploy()
    deployment.start_worker()
    job_id = deployment.submit(epochs=epochs, method=METHOD).json()["id"]
    deployment.wait_for(job_id, lambda j: (j["checkpoint_epoch"] or 0) >= 1, 180, "trained")

    terminated = 0
    for _ in range(4):
        terminated += terminate_sessions(pg_url)
        # The API's pooled connections were cut too: its next requests still answer.
        response = deployment.client.get(f"/v1/jobs/{job_id}", headers=auth(deployment.key))
        assert response.status_code == 200, response.text
        time.sleep(1.0)
    assert terminated >= 4, "the worker and the API should have had sessions to cut"

    job = deployment.wait_terminal(job_id, timeout_s=240)
    assert job["status"] == "succeeded", (job, deployment.worker_logs())
    assert job["attempt"] == 1, "a cut connection is retried, not a lost run"
    events = deployment.events(job_id)
    trained = Counter(e["data"]["epoch"] for e in events if e["kind"] == "epoch")
    assert trained == Counter(range(1, epochs + 1)), "each epoch's event exactly once"
    states = [e["data"]["to"] for e in events if e["kind"] == "state"]
    assert states == ["queued", "running", "succeeded"]
    assert job["progress"]["epoch"] == epochs
    assert [p["epoch"] for p in deployment.get(f"/{job_id}/metrics")["epochs"]] == list(
        range(1, epochs + 1)
    )
