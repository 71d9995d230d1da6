"""Sending a queued job to the ``gpu`` queue, strictly after the row that describes it committed.

If the broker is down the job simply stays ``queued`` with ``enqueued_at`` NULL and the reaper
sends it later; a message delivered twice is harmless, because only one claim can win.
"""

from __future__ import annotations

import logging

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.core import queue
from app.core.db import utcnow
from app.jobs.lease import release_or_fail, requeue_after_shutdown
from app.jobs.models import Job, JobStatus
from app.jobs.schemas import CELERY_PRIORITY, Priority
from app.jobs.state import forget_cached_job

log = logging.getLogger("fopro.jobs")


def enqueue_job(session: Session, job_id: str, priority: str) -> bool:
    """Send ``run_job(job_id)`` with the job's Celery priority and stamp ``enqueued_at``.

    Call only after the job's row is committed. Returns False (and logs why) when the broker
    refused the message; the job is left for the reaper to send again.
    """
    try:
        queue.send(queue.TaskName.run_job, job_id, priority=CELERY_PRIORITY[Priority(priority)])
    except Exception as exc:  # any broker failure: the reaper retries, the request must not fail
        log.warning("job %s stays queued, the broker refused it: %s", job_id, exc)
        return False
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.queued.value)
        .values(enqueued_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.commit()
    forget_cached_job(session, job_id)
    return True


def release_and_resend(
    session: Session, job_id: str, *, reason: str, failure_code: str, lease_owner: str
) -> JobStatus | None:
    """``release_or_fail`` a run that ``lease_owner`` lost, and send the job again if requeued."""
    outcome = release_or_fail(
        session, job_id, reason=reason, failure_code=failure_code, lease_owner=lease_owner
    )
    if outcome is JobStatus.queued:
        priority = session.scalar(select(Job.priority).where(Job.id == job_id))
        enqueue_job(session, job_id, priority or Priority.normal.value)
    return outcome


def requeue_and_resend(session: Session, job_id: str, *, reason: str, lease_owner: str) -> bool:
    """``requeue_after_shutdown`` the run ``lease_owner`` is giving up, and send the job again."""
    if not requeue_after_shutdown(session, job_id, lease_owner, reason=reason):
        return False
    priority = session.scalar(select(Job.priority).where(Job.id == job_id))
    enqueue_job(session, job_id, priority or Priority.normal.value)
    return True
