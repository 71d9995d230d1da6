"""The job state machine, in one place.

``queued → running → succeeded | failed | cancelled``; ``running → queued`` only when a lease
expires (or the training process died and attempts are left, or its worker is shutting down);
``queued → cancelled | failed``.
Every transition is one guarded UPDATE (``WHERE id = :id AND status = :from [AND lease_owner =
:me]``) plus one ``JobEvent`` row, committed together: two workers can never both claim or both
finish a job, because the second UPDATE matches no row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from app.core.db import utcnow
from app.core.lifecycle import check_allowed
from app.jobs.models import Job, JobEvent, JobStatus

ALLOWED: Mapping[JobStatus, frozenset[JobStatus]] = {
    JobStatus.queued: frozenset({JobStatus.running, JobStatus.cancelled, JobStatus.failed}),
    JobStatus.running: frozenset(
        {JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled, JobStatus.queued}
    ),
    JobStatus.succeeded: frozenset(),
    JobStatus.failed: frozenset(),
    JobStatus.cancelled: frozenset(),
}
TERMINAL: frozenset[JobStatus] = frozenset(
    {JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled}
)


class EventKind(StrEnum):
    """What a ``JobEvent`` records: a state change (a failure is the ``→ failed`` one, with its
    code and reason), an epoch summary, or a note for people."""

    state = "state"
    epoch = "epoch"
    info = "info"
    warning = "warning"


def check_transition(source: JobStatus | str, target: JobStatus | str) -> None:
    """Raise ``IllegalTransition`` (HTTP 409) unless ``source → target`` is allowed."""
    check_allowed(
        ALLOWED, JobStatus(source), JobStatus(target), noun="job", when_final="it is finished"
    )


def add_event(
    session: Session,
    job_id: str,
    kind: EventKind,
    message: str,
    data: Mapping[str, Any] | None = None,
) -> JobEvent:
    """Stage one event row in ``session`` (the caller commits it with whatever it belongs to)."""
    event = JobEvent(job_id=job_id, kind=kind.value, message=message, data=dict(data or {}))
    session.add(event)
    return event


def transition(
    session: Session,
    job_id: str,
    *,
    source: JobStatus,
    target: JobStatus,
    message: str,
    lease_owner: str | None = None,
    guards: Sequence[ColumnElement[bool]] = (),
    values: Mapping[str, Any] | None = None,
    data: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> bool:
    """Move job ``job_id`` from ``source`` to ``target`` and log one state event, in one commit.

    The UPDATE only matches while the job is still ``source``, still held by ``lease_owner``
    when given, and every condition in ``guards`` holds. ``values`` sets more columns (SQL
    expressions allowed). Returns False when the guard matched nothing: the session is then
    rolled back, so anything the caller staged with the transition (artifact rows, ...) is
    dropped with it. Raises ``IllegalTransition`` for a move the state machine forbids.
    """
    check_transition(source, target)
    now = now or utcnow()
    fields: dict[str, Any] = {"status": target.value, "updated_at": now}
    if target in TERMINAL:
        fields.update(finished_at=now, lease_expires_at=None)
    fields.update(values or {})
    statement = update(Job).where(Job.id == job_id, Job.status == source.value)
    if lease_owner is not None:
        statement = statement.where(Job.lease_owner == lease_owner)
    if guards:
        statement = statement.where(*guards)
    result = session.execute(
        statement.values(**fields).execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        return False
    add_event(
        session,
        job_id,
        EventKind.state,
        message,
        {"from": source.value, "to": target.value, **(data or {})},
    )
    session.commit()
    forget_cached_job(session, job_id)
    return True


def forget_cached_job(session: Session, job_id: str) -> None:
    """Expire the session's copy of the job so the next read sees what a bulk UPDATE wrote."""
    cached = session.identity_map.get(identity_key(Job, job_id))
    if cached is not None:
        session.expire(cached)
