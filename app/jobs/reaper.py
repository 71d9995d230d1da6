"""The reaper: gives jobs of dead workers back to the queue and sends jobs the broker never got.

It is idempotent and every change it makes is a guarded transition, so any number of reapers may
run at once: each worker runs one in a thread (``workers/reaper.py``; the embedded deployment has
no Celery beat), and production may add the beat task ``TaskName.reap_jobs``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from app.core.db import utcnow
from app.jobs.dispatch import enqueue_job
from app.jobs.lease import release_or_fail
from app.jobs.models import Job, JobStatus

# A job committed a moment ago is being sent by its request right now: do not send it twice.
NEVER_SENT_GRACE = timedelta(seconds=10)
# A queued job sent this long ago and still unclaimed may have lost its message (a worker died
# between receiving and claiming it); resending is safe because only one claim can win.
# Workers pass FOPRO_RESEND_AFTER_SECONDS; this is its default.
RESEND_AFTER = timedelta(minutes=30)
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
) -> ReapReport:
    """One sweep at ``now``: expired running jobs are requeued (``attempt + 1``) and re-sent, or
    failed after ``max_attempts`` with "worker lost N times" (or cancelled, if that was asked);
    queued jobs never sent (or sent ``resend_after`` ago and still unclaimed) are sent."""
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

    unsent = session.execute(
        select(Job.id, Job.priority)
        .where(
            Job.status == JobStatus.queued.value,
            or_(
                Job.id.in_(report.requeued),
                Job.enqueued_at.is_(None) & (Job.updated_at < now - never_sent_grace),
                Job.enqueued_at < now - resend_after,
            ),
        )
        .order_by(Job.created_at)
    ).all()
    session.rollback()
    for job_id, priority in unsent:
        if enqueue_job(session, job_id, priority):
            report.sent.append(job_id)
    return report
