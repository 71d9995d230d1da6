"""Sending a queued job to the ``gpu`` queue, strictly after the row that describes it committed.

If the broker is down the job simply stays ``queued`` with ``enqueued_at`` NULL and the reaper
sends it later; a message delivered twice is harmless, because only one claim can win.
"""

from __future__ import annotations

import functools
import logging

from sqlalchemy import Update, bindparam, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

from app.core import queue
from app.core.db import utcnow
from app.jobs.lease import release_or_fail, requeue_after_shutdown
from app.jobs.models import Job, JobStatus
from app.jobs.schemas import CELERY_PRIORITY, Priority
from app.jobs.state import forget_cached_job

log = logging.getLogger("fopro.jobs")


@functools.cache
def _stamp_enqueued() -> Update:
    """``enqueued_at`` and ``updated_at`` := ``:now`` on the job ``:job_id`` while it is queued;
    built once (a statement built per call recomputes its cache key)."""
    now = bindparam("now", type_=Job.enqueued_at.type)
    return (
        update(Job)
        .where(Job.id == bindparam("job_id"), Job.status == JobStatus.queued.value)
        .values(enqueued_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )


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
    now = utcnow()
    stamped = session.execute(_stamp_enqueued(), {"job_id": job_id, "now": now})
    session.commit()
    cached = session.identity_map.get(identity_key(Job, job_id))
    if stamped.rowcount == 1 and cached is not None:  # type: ignore[attr-defined]
        # What the UPDATE wrote is known: the caller's copy takes it without a reload (a submit
        # answers from it; reloading cost a checkout, a ping and a select).
        set_committed_value(cached, "enqueued_at", now)
        set_committed_value(cached, "updated_at", now)
    else:
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
