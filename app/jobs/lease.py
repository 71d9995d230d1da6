"""A worker's hold on a running job: claim, heartbeat, guarded writes, and giving the job back.

A lease is ``(lease_owner, lease_expires_at)`` on the job row. Only the holder may write progress,
move the checkpoint pointer or finish the job; every such write is an UPDATE guarded by
``status = 'running' AND lease_owner = :me``, so a worker that lost its lease (it stalled past
the expiry and the reaper gave the job to someone else) can never overwrite the new holder.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Update, func, select, update
from sqlalchemy.orm import Session

from app.core.db import utcnow
from app.jobs.models import Job, JobStatus
from app.jobs.state import EventKind, add_event, forget_cached_job, transition


def new_lease_owner() -> str:
    """``<hostname>:<pid>:<uuid>``: unique per run, and says where the job runs."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def claim_job(
    session: Session, job_id: str, owner: str, *, lease: timedelta, now: datetime | None = None
) -> bool:
    """Take a queued job: ``queued → running`` held by ``owner`` until ``now + lease``.

    Returns False when the job is not queued any more (another worker won, it was cancelled, or
    this is a duplicate message of a job that already ran).
    """
    now = now or utcnow()
    attempt = session.scalar(select(Job.attempt).where(Job.id == job_id))
    return transition(
        session,
        job_id,
        source=JobStatus.queued,
        target=JobStatus.running,
        message=f"Running on {owner} (attempt {attempt}).",
        values={
            "lease_owner": owner,
            "lease_expires_at": now + lease,
            "heartbeat_at": now,
            "started_at": func.coalesce(Job.started_at, now),
            "phase": "preparing",
        },
        data={"lease_owner": owner, "attempt": attempt},
        now=now,
    )


@dataclass(frozen=True)
class Heartbeat:
    """What one heartbeat learnt: whether we still hold the job, and whether to stop it."""

    held: bool
    cancel_requested: bool
    status: JobStatus | None  # None: the job row is gone


def _held(job_id: str, owner: str) -> Update:
    """``UPDATE jobs`` restricted to the running job ``job_id`` while ``owner`` holds it."""
    return update(Job).where(
        Job.id == job_id, Job.status == JobStatus.running.value, Job.lease_owner == owner
    )


def heartbeat(
    session: Session, job_id: str, owner: str, *, lease: timedelta, now: datetime | None = None
) -> Heartbeat:
    """Extend ``owner``'s lease to ``now + lease``; read the status and cancel flag (one commit)."""
    now = now or utcnow()
    result = session.execute(
        _held(job_id, owner)
        .values(lease_expires_at=now + lease, heartbeat_at=now)
        .execution_options(synchronize_session=False)
    )
    held = result.rowcount == 1  # type: ignore[attr-defined]
    row = session.execute(
        select(Job.status, Job.cancel_requested).where(Job.id == job_id)
    ).one_or_none()
    session.commit()
    forget_cached_job(session, job_id)
    if row is None:
        return Heartbeat(held=False, cancel_requested=False, status=None)
    return Heartbeat(
        held=held, cancel_requested=held and row.cancel_requested, status=JobStatus(row.status)
    )


def write_progress(
    session: Session,
    job_id: str,
    owner: str,
    *,
    phase: str,
    progress: Mapping[str, Any],
    metrics: Mapping[str, Any] | None = None,
) -> bool:
    """Store the latest progress (and optionally metrics) if ``owner`` still holds the job."""
    values: dict[str, Any] = {"phase": phase, "progress": dict(progress), "updated_at": utcnow()}
    if metrics is not None:
        values["metrics"] = dict(metrics)
    result = session.execute(
        _held(job_id, owner).values(**values).execution_options(synchronize_session=False)
    )
    session.commit()
    forget_cached_job(session, job_id)
    return result.rowcount == 1  # type: ignore[attr-defined]


def end_attempt(
    session: Session, job_id: str, owner: str, target: JobStatus, message: str, **details: Any
) -> bool:
    """``running → target`` while ``owner`` still holds the lease (``details``: ``values`` and
    ``data`` of ``transition``); False when the lease was lost."""
    return transition(
        session,
        job_id,
        source=JobStatus.running,
        target=target,
        lease_owner=owner,
        message=message,
        **details,
    )


def resume_point(epoch: int | None, step: int | None) -> str:
    """Where a checkpoint of ``epoch`` epochs plus ``step`` steps resumes, in words."""
    if step:
        return f"epoch {(epoch or 0) + 1}, step {step}"
    return f"the end of epoch {epoch or 0}"


def move_checkpoint(
    session: Session, job_id: str, owner: str, *, key: str, epoch: int, step: int = 0
) -> bool:
    """Point the job at the checkpoint already stored under ``key`` (never before): ``epoch``
    epochs done, plus ``step`` steps of the next one (a shutdown's checkpoint)."""
    result = session.execute(
        _held(job_id, owner)
        .values(
            checkpoint_key=key, checkpoint_epoch=epoch, checkpoint_step=step, updated_at=utcnow()
        )
        .execution_options(synchronize_session=False)
    )
    session.commit()
    forget_cached_job(session, job_id)
    return result.rowcount == 1  # type: ignore[attr-defined]


def release_or_fail(
    session: Session,
    job_id: str,
    *,
    reason: str,
    failure_code: str,
    lease_owner: str | None = None,
    expired_before: datetime | None = None,
    now: datetime | None = None,
) -> JobStatus | None:
    """Give a running job whose run was lost back to the queue, or fail it when out of attempts.

    ``running → queued`` with ``attempt + 1`` while ``attempt < max_attempts`` (the caller then
    sends it again), otherwise ``running → failed`` with ``failure_code`` and a reason saying how
    often the job was lost. A job whose cancel was requested ends ``cancelled`` instead. Guarded
    by ``lease_owner`` (the supervisor) and/or ``lease_expires_at < expired_before`` (the reaper),
    so a lease renewed meanwhile is never taken away. Returns the new status, or None when the
    guard did not match.
    """
    job = session.get(Job, job_id, populate_existing=True)
    if job is None or job.status != JobStatus.running.value:
        session.rollback()
        return None
    attempt, max_attempts, cancel = job.attempt, job.max_attempts, job.cancel_requested
    session.rollback()
    # Re-checked in the UPDATE: a cancel or another requeue in between makes it miss.
    guards = [Job.attempt == attempt, Job.cancel_requested.is_(cancel)]
    if expired_before is not None:
        guards.append(Job.lease_expires_at < expired_before)
    values: dict[str, Any]
    if cancel:
        target, message, values = JobStatus.cancelled, f"Cancelled; the run stopped: {reason}", {}
    elif attempt < max_attempts:
        target = JobStatus.queued
        message = f"Attempt {attempt} of {max_attempts} lost ({reason}); queued again."
        values = {
            "attempt": attempt + 1,
            "lease_owner": None,
            "lease_expires_at": None,
            "enqueued_at": None,
            "phase": None,
        }
    else:
        target = JobStatus.failed
        message = (
            f"Worker lost {attempt} times (last: {reason}); no attempts left of {max_attempts}."
        )
        values = {"failure_code": failure_code, "failure_reason": message}
    moved = transition(
        session,
        job_id,
        source=JobStatus.running,
        target=target,
        message=message,
        lease_owner=lease_owner,
        guards=guards,
        values=values,
        data={"reason": reason, "attempt": attempt},
        now=now,
    )
    return target if moved else None


def requeue_after_shutdown(session: Session, job_id: str, owner: str, *, reason: str) -> bool:
    """``running → queued`` at once because ``owner``'s worker is shutting down (SIGTERM from an
    orchestrator), the attempt not counted: the job did nothing wrong. The caller sends it
    again. False when the lease was lost meanwhile or a cancel was requested (that wins)."""
    return transition(
        session,
        job_id,
        source=JobStatus.running,
        target=JobStatus.queued,
        lease_owner=owner,
        message=f"Stopped because {reason}; queued again.",
        guards=[Job.cancel_requested.is_(False)],
        values={"lease_owner": None, "lease_expires_at": None, "enqueued_at": None, "phase": None},
        data={"reason": reason},
    )


def record_event(
    session: Session,
    job_id: str,
    kind: EventKind,
    message: str,
    data: Mapping[str, Any] | None = None,
) -> None:
    """Record one event for a job now (its own commit)."""
    add_event(session, job_id, kind, message, data)
    session.commit()
