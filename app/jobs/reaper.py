"""The reaper: gives jobs of dead workers back to the queue and sends jobs the broker never got.

It is idempotent and every change it makes is a guarded transition, so any number of reapers may
run at once: each worker runs one in a thread (``workers/reaper.py``; the embedded deployment has
no Celery beat), and production may add the beat task ``TaskName.reap_jobs``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core.db import utcnow
from app.jobs.dispatch import enqueue_job
from app.jobs.lease import release_or_fail
from app.jobs.models import Job, JobStatus

# A job committed a moment ago is being sent by its request right now: do not send it twice.
NEVER_SENT_GRACE = timedelta(seconds=10)
# A queued job sent this long ago and still unclaimed may have lost its message (a worker died
# between receiving and claiming it); resending is safe because only one claim can win.
# Workers pass FOPRO_RESEND_AFTER_SECONDS; this is its default. Where the broker can say how many
# messages wait, only as many stale jobs as there are missing messages are sent again, so a long
# backlog does not gain a duplicate message per job every period.
RESEND_AFTER = timedelta(minutes=30)
log = logging.getLogger("fopro.reaper")
LEASE_EXPIRED = "its worker stopped heart-beating and the lease expired"


@dataclass
class ReapReport:
    """Job ids per action of one sweep."""

    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)


def reap_expired_leases(
    session: Session,
    now: datetime | None = None,
    *,
    never_sent_grace: timedelta = NEVER_SENT_GRACE,
    resend_after: timedelta = RESEND_AFTER,
    waiting_messages: Callable[[], int] | None = None,
) -> ReapReport:
    """One sweep at ``now``: expired running jobs are requeued (``attempt + 1``) and re-sent, or
    failed after ``max_attempts`` with "worker lost N times" (or cancelled, if that was asked);
    queued jobs never sent are sent. Jobs sent ``resend_after`` ago and still unclaimed are sent
    again, oldest first: all of them, or, when ``waiting_messages()`` tells how many training
    messages the broker holds, only as many as are missing from it."""
    now = now or utcnow()
    report = ReapReport()
    expired = session.scalars(
        select(Job.id).where(Job.status == JobStatus.running.value, Job.lease_expires_at < now)
    ).all()
    session.rollback()
    for job_id in expired:
        outcome = release_or_fail(
            session,
            job_id,
            reason=LEASE_EXPIRED,
            failure_code="worker_lost",
            expired_before=now,
            now=now,
        )
        if outcome is JobStatus.queued:
            report.requeued.append(job_id)
        elif outcome is JobStatus.failed:
            report.failed.append(job_id)
        elif outcome is JobStatus.cancelled:
            report.cancelled.append(job_id)

    queued = Job.status == JobStatus.queued.value
    unsent = session.execute(
        select(Job.id, Job.priority)
        .where(
            queued,
            Job.id.in_(report.requeued)
            | (Job.enqueued_at.is_(None) & (Job.updated_at < now - never_sent_grace)),
        )
        .order_by(Job.created_at)
    ).all()
    stale = session.execute(
        select(Job.id, Job.priority)
        .where(queued, Job.enqueued_at < now - resend_after, Job.id.not_in(report.requeued))
        .order_by(Job.enqueued_at, Job.created_at)
    ).all()
    if stale and waiting_messages is not None:
        missing = _missing_messages(session, waiting_messages, report.requeued)
        stale = stale if missing is None else stale[:missing]
    session.rollback()
    for job_id, priority in [*unsent, *stale]:
        if enqueue_job(session, job_id, priority):
            report.sent.append(job_id)
    return report


def _missing_messages(
    session: Session, waiting_messages: Callable[[], int], requeued: list[str]
) -> int | None:
    """How many sent, unclaimed jobs have no message in the broker (at least): queued jobs sent
    before (not the ones requeued in this sweep) less the messages waiting. None when the broker
    cannot be asked: then every stale job counts as missing."""
    try:
        waiting = waiting_messages()
    except Exception:
        log.warning("reaper: could not count the broker's messages", exc_info=True)
        return None
    sent = session.scalar(
        select(func.count())
        .select_from(Job)
        .where(
            Job.status == JobStatus.queued.value,
            Job.enqueued_at.is_not(None),
            Job.id.not_in(requeued),
        )
    )
    return max((sent or 0) - waiting, 0)
