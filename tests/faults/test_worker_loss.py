"""Workers that die (``kill -9``) or are told to stop (SIGTERM, what ``docker stop`` and
Kubernetes send) in the middle of a job."""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest
from sqlalchemy import update

from app.core.db import get_sessionmaker
from app.jobs.models import Job
from tests.faults.conftest import METHOD, Deploy
from tests.integration.jobs.conftest import Deployment, all_exited

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(480)]


def epochs_of(events: list[dict[str, Any]]) -> list[int]:
    return [e["data"]["epoch"] for e in events if e["kind"] == "epoch"]


def kill_mid_epoch(deployment: Deployment, job_id: str, past_epoch: int) -> None:
    """Start a worker, let it checkpoint epoch ``past_epoch``, then SIGKILL it (and its trainer)."""
    worker = deployment.start_worker()
    deployment.wait_for(
        job_id,
        lambda j: j["status"] == "running" and (j["checkpoint_epoch"] or 0) >= past_epoch,
        180,
        f"checkpointed epoch {past_epoch}",
    )
    trainers = worker.trainers()
    assert trainers, "the training child should be running"
    worker.kill9()
    assert all_exited(trainers), "the trainer outlived its worker"


def test_kill_9_twice_mid_job_still_succeeds_losing_at_most_the_epoch_in_flight(
    deploy: Deploy,
) -> None:
    epochs = 6
    deployment = deploy(max_attempts="3")
    job_id = deployment.submit(epochs=epochs, method=METHOD).json()["id"]

    kill_mid_epoch(deployment, job_id, past_epoch=1)
    kill_mid_epoch(deployment, job_id, past_epoch=2)
    deployment.start_worker()
    job = deployment.wait_terminal(job_id, timeout_s=240)

    assert (job["status"], job["attempt"]) == ("succeeded", 3), job
    events = deployment.events(job_id)
    lost = [i for i, e in enumerate(events) if e["kind"] == "state" and e["data"]["to"] == "queued"]
    lost = lost[1:]  # the first is the submission
    assert len(lost) == 2
    assert all("lease expired" in events[i]["message"] for i in lost)
    resumes = [i for i, e in enumerate(events) if "resumed_from_epoch" in e["data"]]
    assert len(resumes) == 2
    for loss, resume in zip(lost, resumes, strict=True):
        trained_before = epochs_of(events[:loss])
        resumed_from = events[resume]["data"]["resumed_from_epoch"]
        # An epoch whose event was written but whose checkpoint upload the kill cut short is
        # the only one trained again.
        assert resumed_from >= max(trained_before) - 1, (trained_before, resumed_from)
        assert epochs_of(events[resume:])[0] == resumed_from + 1
    assert epochs_of(events[resumes[-1] :])[-1] == epochs
    curves = deployment.get(f"/{job_id}/metrics")
    assert [p["epoch"] for p in curves["epochs"]] == list(range(1, epochs + 1))

    # Past max_attempts the job fails, saying why. This one may only be tried once.
    for worker in deployment.workers:
        worker.stop()  # the next job must run on the worker this test kills
    doomed = deployment.submit(epochs=epochs, method=METHOD).json()["id"]
    with get_sessionmaker()() as session:
        session.execute(update(Job).where(Job.id == doomed).values(max_attempts=1))
        session.commit()
    kill_mid_epoch(deployment, doomed, past_epoch=1)
    deployment.start_worker()  # its reaper sweeps at once
    failed = deployment.wait_terminal(doomed, timeout_s=60)
    assert (failed["status"], failed["failure_code"]) == ("failed", "worker_lost"), failed
    assert "no attempts left of 1" in failed["failure_reason"]
    assert "lease expired" in failed["failure_reason"]


def test_sigterm_to_a_worker_stops_at_a_step_and_requeues_the_job_at_once(
    deploy: Deploy,
) -> None:
    epochs = 2
    # A long lease: the job must come back because the worker said so, not because it expired.
    # 72 training images in batches of 2: epochs of 36 steps, so the signal lands inside the
    # second (the last): the resumed run finishes that epoch from the step it stopped at.
    deployment = deploy(lease_seconds="120", per_class=30)
    worker = deployment.start_worker()
    job_id = deployment.submit(epochs=epochs, method=METHOD, params={"batch_size": 2}).json()["id"]
    deployment.wait_for(
        job_id,
        lambda j: (j["checkpoint_epoch"] or 0) >= 1 and j["progress"].get("epoch", 0) >= 2,
        180,
        "started its second epoch",
    )
    trainers = worker.trainers()
    assert trainers

    asked = time.monotonic()
    worker.process.send_signal(signal.SIGTERM)
    assert worker.process.wait(timeout=60) == 0, worker.log_tail()
    took = time.monotonic() - asked
    assert all_exited(trainers, timeout_s=5)

    job = deployment.get(f"/{job_id}")
    assert job["status"] == "queued", job
    assert took < 30, f"the worker took {took:.1f} s to stop"
    assert job["attempt"] == 1, "a requested stop is not a lost attempt"
    last = deployment.events(job_id)[-1]
    assert last["data"]["to"] == "queued"
    assert "shutting down (SIGTERM)" in last["message"]
    # The checkpoint is of the step boundary it stopped at, inside the epoch: nothing trained
    # is lost, not even the epoch in flight.
    saved, saved_step = job["checkpoint_epoch"], job["checkpoint_step"]
    assert saved >= 1, job
    assert saved_step >= 1, job
    assert f"epoch {saved + 1}, step {saved_step}" in last["message"]
    with get_sessionmaker()() as session:
        key = session.get_one(Job, job_id).checkpoint_key
    assert key is not None
    assert key.endswith(f"epoch_{saved:04d}_step_{saved_step:06d}.pt")
    assert deployment.store.exists(key)
    assert not any(
        info.key.endswith(f"epoch_{saved:04d}.pt")
        for info in deployment.store.list(key.rsplit("/", 1)[0] + "/")
    ), "the epoch-end checkpoint it replaces is deleted"

    deployment.start_worker()
    done = deployment.wait_terminal(job_id, timeout_s=240)
    assert (done["status"], done["attempt"]) == ("succeeded", 1), done
    events = deployment.events(job_id)
    resumed = next(i for i, e in enumerate(events) if "resumed_from_epoch" in e["data"])
    assert events[resumed]["data"]["resumed_from_epoch"] == saved
    assert events[resumed]["data"]["resumed_from_step"] == saved_step
    assert epochs_of(events[resumed:]) == list(range(saved + 1, epochs + 1))
