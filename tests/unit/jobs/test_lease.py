"""Leases: only the holder writes; lost leases go back to the queue until attempts run out."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core import queue
from app.core.db import utcnow
from app.jobs.lease import (
    claim_job,
    heartbeat,
    move_checkpoint,
    new_lease_owner,
    release_or_fail,
    write_progress,
)
from app.jobs.models import Job, JobEvent, JobStatus
from app.jobs.reaper import reap_expired_leases
from tests.unit.jobs.conftest import Team, add_job

LEASE = timedelta(seconds=30)


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[object, ...], int | None]]:
    """Record what would go to the broker (the messages themselves are tested end to end)."""
    messages: list[tuple[str, tuple[object, ...], int | None]] = []

    def record(task: queue.TaskName, *args: object, priority: int | None = None) -> str:
        messages.append((task.value, args, priority))
        return "task-id"

    monkeypatch.setattr(queue, "send", record)
    return messages


def running_job(session: Session, team: Team, owner: str = "w1", **values: object) -> Job:
    job = add_job(session, team, **values)
    assert claim_job(session, job.id, owner, lease=LEASE)
    session.refresh(job)
    return job


def test_lease_owner_names_host_and_process_and_is_unique() -> None:
    first, second = new_lease_owner(), new_lease_owner()
    assert first != second
    host, pid, _ = first.split(":")
    assert host
    assert pid.isdigit()


def test_heartbeat_extends_only_the_holders_lease_and_reports_cancel(
    session: Session, team: Team
) -> None:
    job = running_job(session, team)
    before = job.lease_expires_at
    assert before is not None
    beat = heartbeat(session, job.id, "w1", lease=timedelta(seconds=120))
    assert beat.held
    assert not beat.cancel_requested
    session.refresh(job)
    assert job.lease_expires_at is not None
    assert job.lease_expires_at > before

    assert not heartbeat(session, job.id, "intruder", lease=LEASE).held
    job.cancel_requested = True
    session.commit()
    assert heartbeat(session, job.id, "w1", lease=LEASE).cancel_requested


def test_progress_and_checkpoint_writes_need_the_lease(session: Session, team: Team) -> None:
    job = running_job(session, team)
    assert write_progress(session, job.id, "w1", phase="training", progress={"epoch": 1})
    assert not write_progress(session, job.id, "w2", phase="training", progress={"epoch": 9})
    assert move_checkpoint(session, job.id, "w1", key="k/epoch_0001.pt", epoch=1)
    assert not move_checkpoint(session, job.id, "w2", key="k/epoch_0009.pt", epoch=9)
    session.refresh(job)
    assert (job.phase, job.progress) == ("training", {"epoch": 1})
    assert (job.checkpoint_key, job.checkpoint_epoch) == ("k/epoch_0001.pt", 1)


def test_a_lost_run_is_requeued_with_the_next_attempt(session: Session, team: Team) -> None:
    job = running_job(session, team)
    outcome = release_or_fail(
        session, job.id, reason="worker vanished", failure_code="worker_lost", lease_owner="w1"
    )
    assert outcome is JobStatus.queued
    session.refresh(job)
    assert (job.status, job.attempt, job.lease_owner, job.enqueued_at) == ("queued", 2, None, None)
    last = session.scalars(select(JobEvent).order_by(JobEvent.id.desc())).first()
    assert last is not None
    assert "worker vanished" in last.message


def test_the_last_attempt_fails_saying_how_often_the_worker_was_lost(
    session: Session, team: Team
) -> None:
    job = running_job(session, team, attempt=3, max_attempts=3)
    outcome = release_or_fail(
        session, job.id, reason="lease expired", failure_code="worker_lost", lease_owner="w1"
    )
    assert outcome is JobStatus.failed
    session.refresh(job)
    assert job.failure_code == "worker_lost"
    assert job.failure_reason is not None
    assert "Worker lost 3 times" in job.failure_reason
    assert "lease expired" in job.failure_reason


def test_a_lost_run_whose_cancel_was_requested_ends_cancelled(session: Session, team: Team) -> None:
    job = running_job(session, team, cancel_requested=True)
    assert (
        release_or_fail(session, job.id, reason="gone", failure_code="x", lease_owner="w1")
        is JobStatus.cancelled
    )


def test_reaper_requeues_and_resends_expired_leases_only(
    session: Session, team: Team, sent: list[tuple[str, tuple[object, ...], int | None]]
) -> None:
    expired = running_job(session, team, owner="dead", priority="high")
    alive = running_job(session, team, owner="alive")
    expired.lease_expires_at = utcnow() - timedelta(seconds=1)
    session.commit()

    report = reap_expired_leases(session)

    assert report.requeued == [expired.id]
    assert report.sent == [expired.id]
    assert sent == [("fopro.jobs.run", (expired.id,), 0)]
    session.refresh(expired)
    session.refresh(alive)
    assert (expired.status, expired.attempt) == ("queued", 2)
    assert expired.enqueued_at is not None
    assert (alive.status, alive.lease_owner) == ("running", "alive")


def test_reaper_fails_a_job_lost_max_attempts_times(
    session: Session, team: Team, sent: list[tuple[str, tuple[object, ...], int | None]]
) -> None:
    job = running_job(session, team, attempt=3, max_attempts=3)
    job.lease_expires_at = utcnow() - timedelta(seconds=1)
    session.commit()
    report = reap_expired_leases(session)
    assert report.failed == [job.id]
    assert sent == []
    session.refresh(job)
    assert job.status == "failed"
    assert job.failure_reason is not None
    assert "Worker lost 3 times" in job.failure_reason


def test_reaper_does_not_take_a_lease_renewed_since_it_looked(
    session: Session, team: Team, sent: list[tuple[str, tuple[object, ...], int | None]]
) -> None:
    job = running_job(session, team)
    job.lease_expires_at = utcnow() - timedelta(seconds=1)
    session.commit()
    # The holder heart-beats after the reaper's clock reading but before its UPDATE.
    looked_at = utcnow()
    assert heartbeat(session, job.id, "w1", lease=LEASE).held
    assert (
        release_or_fail(session, job.id, reason="x", failure_code="x", expired_before=looked_at)
        is None
    )
    session.refresh(job)
    assert (job.status, job.lease_owner) == ("running", "w1")


def test_reaper_sends_jobs_the_broker_never_got_after_a_grace_period(
    session: Session, team: Team, sent: list[tuple[str, tuple[object, ...], int | None]]
) -> None:
    job = add_job(session, team, priority="low")
    assert job.enqueued_at is None
    assert reap_expired_leases(session).sent == []  # its own request may be sending it now
    later = utcnow() + timedelta(seconds=11)
    assert reap_expired_leases(session, later).sent == [job.id]
    assert sent == [("fopro.jobs.run", (job.id,), 9)]
    session.refresh(job)
    assert job.enqueued_at is not None
    # Sent recently and still queued: not sent again until RESEND_AFTER has passed.
    assert reap_expired_leases(session, later + timedelta(minutes=1)).sent == []
    assert reap_expired_leases(session, later + timedelta(hours=1)).sent == [job.id]


def test_a_long_backlog_is_resent_only_for_the_messages_the_broker_is_missing(
    session: Session, team: Team, sent: list[tuple[str, tuple[object, ...], int | None]]
) -> None:
    """Hours of backlog must not add a duplicate message per queued job every RESEND_AFTER:
    with the broker's count at hand, only the missing messages are sent again, oldest first."""
    sent_at = utcnow() - timedelta(hours=2)
    jobs = [add_job(session, team) for _ in range(4)]
    for age, job in enumerate(jobs):
        job.enqueued_at = sent_at + timedelta(seconds=age)
    session.commit()

    # Every job still has its message waiting: nothing is sent again.
    assert reap_expired_leases(session, waiting_messages=lambda: 4).sent == []
    assert sent == []
    # One message was lost (a worker died holding it): the oldest stale job is sent again.
    assert reap_expired_leases(session, waiting_messages=lambda: 3).sent == [jobs[0].id]

    # A broker that cannot be asked: every stale job is sent, as without a count.
    def unreachable() -> int:
        raise ConnectionError("broker down")

    report = reap_expired_leases(session, waiting_messages=unreachable)
    assert report.sent == [j.id for j in jobs[1:]]


def test_a_claim_refuses_a_job_that_is_not_queued(session: Session, team: Team) -> None:
    job = add_job(session, team, status=JobStatus.cancelled.value)
    assert not claim_job(session, job.id, "w1", lease=LEASE)
    session.refresh(job)
    assert job.status == "cancelled"
    assert job.lease_owner is None


def test_a_worker_shutting_down_requeues_at_once_without_counting_an_attempt(
    session: Session, team: Team, sent: list[tuple[str, tuple[object, ...], int | None]]
) -> None:
    from app.jobs.dispatch import requeue_and_resend

    job = add_job(session, team)
    owner = new_lease_owner()
    assert claim_job(session, job.id, owner, lease=LEASE)

    assert not requeue_and_resend(session, job.id, reason="x", lease_owner="someone-else")
    assert requeue_and_resend(
        session, job.id, reason="its worker is shutting down", lease_owner=owner
    )

    row = session.get_one(Job, job.id, populate_existing=True)
    assert (row.status, row.attempt, row.lease_owner) == (JobStatus.queued.value, 1, None)
    assert row.enqueued_at is not None
    assert [task for task, _, _ in sent] == [queue.TaskName.run_job.value]
    last = session.scalars(
        select(JobEvent).where(JobEvent.job_id == job.id).order_by(JobEvent.id.desc())
    ).first()
    assert last is not None
    assert last.message == "Stopped because its worker is shutting down; queued again."


def test_a_cancel_requested_meanwhile_wins_over_the_shutdown_requeue(
    session: Session, team: Team, sent: list[tuple[str, tuple[object, ...], int | None]]
) -> None:
    from app.jobs.dispatch import requeue_and_resend

    job = add_job(session, team)
    owner = new_lease_owner()
    assert claim_job(session, job.id, owner, lease=LEASE)
    session.get_one(Job, job.id).cancel_requested = True
    session.commit()

    assert not requeue_and_resend(session, job.id, reason="shutdown", lease_owner=owner)
    assert session.get_one(Job, job.id, populate_existing=True).status == JobStatus.running.value
    assert sent == []
