"""The S3 server stopped while a job stores its checkpoints, then started again."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from app.core.db import get_sessionmaker
from app.jobs.models import Job
from tests.faults.conftest import METHOD, Deploy
from tests.support.seaweed import run_seaweed_process

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]


def checkpoint_pointer(job_id: str) -> tuple[str | None, int | None]:
    with get_sessionmaker()() as session:
        job = session.get_one(Job, job_id)
        return job.checkpoint_key, job.checkpoint_epoch


def test_checkpoint_uploads_are_retried_through_an_s3_restart_and_never_point_at_nothing(
    deploy: Deploy, tmp_path: Path
) -> None:
    epochs = 6
    with run_seaweed_process(tmp_path / "weed") as weed:
        deployment = deploy(s3=weed.server)
        deployment.start_worker()
        job_id = deployment.submit(epochs=epochs, method=METHOD).json()["id"]
        deployment.wait_for(job_id, lambda j: (j["checkpoint_epoch"] or 0) >= 1, 180, "trained")

        weed.stop()
        # Training goes on until the next checkpoint cannot be stored, then waits for the store.
        deadline = time.monotonic() + 60
        while not any(
            e["kind"] == "warning" and "checkpoint could not be stored" in e["message"]
            for e in deployment.events(job_id)
        ):
            assert time.monotonic() < deadline, deployment.worker_logs()
            time.sleep(0.5)
        key_while_down, epoch_while_down = checkpoint_pointer(job_id)
        assert deployment.get(f"/{job_id}")["status"] == "running"

        assert weed.start() is None, "SeaweedFS did not come back"
        # What the pointer named while the store was down was complete all along.
        assert key_while_down is not None
        assert deployment.store.exists(key_while_down)
        job = deployment.wait_terminal(job_id, timeout_s=240)

        assert (job["status"], job["attempt"]) == ("succeeded", 1), job
        key, epoch = checkpoint_pointer(job_id)
        assert (epoch, epoch_while_down is not None) == (epochs, True)
        assert key is not None
        assert deployment.store.exists(key)
        prefix = key.rsplit("/", 1)[0] + "/"
        assert [o.key for o in deployment.store.list(prefix)] == [key]
        trained = [e["data"]["epoch"] for e in deployment.events(job_id) if e["kind"] == "epoch"]
        assert trained == list(range(1, epochs + 1))
