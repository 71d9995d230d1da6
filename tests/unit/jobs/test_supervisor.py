"""The supervisor around a real child process: a child that dies, a cancel the child ignores,
and a lease taken away; the job ends the way a person would expect each time."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from datetime import timedelta
from multiprocessing.process import BaseProcess

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.config import get_settings
from app.jobs.lease import claim_job
from app.jobs.models import Job, JobEvent, JobStatus
from tests.unit.jobs.conftest import Team, add_job
from workers.training import Supervisor

OWNER = "host:1:abc"


def sleeping_child() -> BaseProcess:
    """A spawned process that would run for a minute: it never settles the job itself."""
    child = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(60,), daemon=True)
    child.start()
    return child


def supervisor(job_id: str, **settings_values: object) -> Supervisor:
    update = {"heartbeat_seconds": 1, "lease_seconds": 30, **settings_values}
    return Supervisor(job_id, OWNER, get_settings().model_copy(update=update))


def running(session: Session, team: Team, **values: object) -> Job:
    job = add_job(session, team, **values)
    assert claim_job(session, job.id, OWNER, lease=timedelta(seconds=30))
    return job


def last_event(session: Session, job_id: str) -> JobEvent:
    event = session.scalars(
        select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id.desc())
    ).first()
    assert event is not None
    return event


def test_a_child_killed_by_a_signal_is_requeued_with_a_reason_naming_it(
    session: Session, team: Team
) -> None:
    job = running(session, team)
    child = sleeping_child()
    threading.Timer(1.0, os.kill, args=(child.pid, signal.SIGKILL)).start()

    outcome = supervisor(job.id)._supervise(child)

    assert (outcome.exitcode, outcome.action) == (-signal.SIGKILL, "released")
    session.refresh(job)
    assert (job.status, job.attempt, job.lease_owner) == ("queued", 2, None)
    assert job.enqueued_at is not None  # sent again at once
    message = last_event(session, job.id).message
    assert "SIGKILL" in message
    assert "out-of-memory" in message


def test_a_child_that_keeps_dying_fails_the_job_on_its_last_attempt(
    session: Session, team: Team
) -> None:
    job = running(session, team, attempt=3, max_attempts=3)
    child = sleeping_child()
    threading.Timer(1.0, os.kill, args=(child.pid, signal.SIGSEGV)).start()

    supervisor(job.id)._supervise(child)

    session.refresh(job)
    assert (job.status, job.failure_code) == ("failed", "training_process_died")
    assert job.failure_reason is not None
    assert "Worker lost 3 times" in job.failure_reason
    assert "SIGSEGV" in job.failure_reason


def test_a_child_ignoring_cancel_is_killed_after_the_grace_period(
    session: Session, team: Team
) -> None:
    job = running(session, team, cancel_requested=True)
    child = sleeping_child()

    outcome = supervisor(job.id, cancel_grace_seconds=1)._supervise(child)

    assert outcome.action == "killed_after_cancel"
    assert not child.is_alive()
    session.refresh(job)
    assert job.status == JobStatus.cancelled.value
    assert "did not stop" in last_event(session, job.id).message


def test_a_lost_lease_kills_the_child_without_touching_the_job(
    session: Session, team: Team
) -> None:
    job = running(session, team)
    child = sleeping_child()
    # The reaper gave the job to another worker meanwhile.
    session.get_one(Job, job.id).lease_owner = "host:2:other"
    session.commit()

    outcome = supervisor(job.id)._supervise(child)

    assert outcome.action == "killed_lease_lost"
    assert not child.is_alive()
    session.refresh(job)
    assert (job.status, job.lease_owner) == ("running", "host:2:other")
