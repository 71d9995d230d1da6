"""Writing audit records in the caller's transaction, reading them per team, purging old ones.

A route notes its record on the request's session before the change; the session's next commit
inserts it, inside that commit's transaction: the change and its record are written together or
not at all (a refused or failed call never commits, so it leaves no record). For a call that
creates an object whose id is made inside a service, the record takes the id of the first new
row of that kind the session writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import delete, event, func, or_, select
from sqlalchemy.orm import Session

from app.audit.models import AuditRecord
from app.audit.schemas import AuditRecordOut
from app.core.db import Base, utcnow
from app.core.pagination import Page

_PENDING = "audit_pending"


class AuditAction(StrEnum):
    """Every action the trail records: ``<object type>.<verb>``."""

    key_create = "key.create"
    key_rotate = "key.rotate"
    key_revoke = "key.revoke"
    dataset_upload = "dataset.upload"
    dataset_upload_begin = "dataset.upload_begin"
    dataset_upload_complete = "dataset.upload_complete"
    dataset_delete = "dataset.delete"
    dataset_manifest_download = "dataset.manifest_download"
    teacher_upload = "teacher.upload"
    teacher_delete = "teacher.delete"
    job_create = "job.create"
    job_cancel = "job.cancel"
    job_retry = "job.retry"
    job_delete = "job.delete"
    job_predict = "job.predict"
    artifact_download = "artifact.download"
    artifact_link = "artifact.link"
    artifact_link_download = "artifact.link_download"


@dataclass(frozen=True)
class Actor:
    """Who acts: the key (None for a signed link, which carries no key) and where from."""

    team_id: str
    key_id: str | None
    key_prefix: str | None
    role: str | None
    client_address: str | None
    request_id: str | None


@dataclass
class _Pending:
    """A record waiting for its session's next commit (and, for ``created``, for the id of
    the object the call creates)."""

    actor: Actor
    action: AuditAction
    object_id: str | None
    created: type[Base] | None
    details: dict[str, Any]

    @property
    def object_type(self) -> str:
        return self.action.value.split(".", 1)[0]


def _row(entry: _Pending) -> AuditRecord:
    actor = entry.actor
    return AuditRecord(
        team_id=actor.team_id,
        key_id=actor.key_id,
        key_prefix=actor.key_prefix,
        role=actor.role,
        action=entry.action.value,
        object_type=entry.object_type,
        object_id=entry.object_id,
        client_address=actor.client_address,
        request_id=actor.request_id,
        details=entry.details,
    )


def record(
    session: Session,
    actor: Actor,
    action: AuditAction,
    object_id: str | None = None,
    *,
    created: type[Base] | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Have ``session``'s next commit write the record of ``action`` on ``object_id``.

    The record is inserted by that commit, inside its transaction: it is written with the
    change or not at all. A session closed without another commit (the call was refused or
    failed) writes nothing; one a service rolled back and retried still writes it with the
    retry. With ``created`` (a model class) and no ``object_id``, the record names the first
    new row of that class the session writes, and is dropped if none is (an idempotent replay).
    """
    entry = _Pending(actor, action, object_id, created, dict(details or {}))
    session.info.setdefault(_PENDING, []).append(entry)


def _name_created(session: Session) -> None:
    for entry in session.info.get(_PENDING) or []:
        if entry.object_id is None and entry.created is not None:
            made = next((obj for obj in session.new if isinstance(obj, entry.created)), None)
            if made is not None:
                entry.object_id = str(getattr(made, "id", "")) or None


@event.listens_for(Session, "before_flush")
def _name_created_objects(session: Session, _context: Any, _instances: Any) -> None:
    _name_created(session)


def write_pending_records(session: Session) -> None:
    """Add the records that can be written now to ``session``, for its next flush rather than at
    its commit: for a service that must hold a lock from its last flush to its commit (a job
    submit, holding its team's row) and keeps that span short. A rollback still drops them."""
    _write_pending_records(session)


@event.listens_for(Session, "before_commit")
def _write_pending_records(session: Session) -> None:
    _name_created(session)
    ready: list[_Pending] = []
    waiting: list[_Pending] = []
    for entry in session.info.get(_PENDING) or []:
        (ready if entry.object_id is not None or entry.created is None else waiting).append(entry)
    if ready:
        session.add_all(_row(entry) for entry in ready)
        session.info[_PENDING] = waiting


@dataclass(frozen=True)
class AuditFilter:
    """Which records a listing returns; every field narrows it (None: any)."""

    actor: str | None = None  # a key id or key prefix
    action: AuditAction | None = None
    object_type: str | None = None
    object_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def list_records(
    session: Session, team_id: str, where: AuditFilter, *, limit: int, offset: int
) -> Page[AuditRecordOut]:
    """The team's records matching ``where``, newest first."""
    query = select(AuditRecord).where(AuditRecord.team_id == team_id)
    if where.actor is not None:
        query = query.where(
            or_(AuditRecord.key_id == where.actor, AuditRecord.key_prefix == where.actor)
        )
    if where.action is not None:
        query = query.where(AuditRecord.action == where.action.value)
    if where.object_type is not None:
        query = query.where(AuditRecord.object_type == where.object_type)
    if where.object_id is not None:
        query = query.where(AuditRecord.object_id == where.object_id)
    if where.since is not None:
        query = query.where(AuditRecord.created_at >= where.since)
    if where.until is not None:
        query = query.where(AuditRecord.created_at < where.until)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(
        query.order_by(AuditRecord.created_at.desc(), AuditRecord.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return Page[AuditRecordOut](
        items=[AuditRecordOut.model_validate(r) for r in rows],
        total=total,
        limit=limit,
        offset=offset,
    )


def purge_expired(session: Session, retention_days: int, *, now: datetime | None = None) -> int:
    """Delete records older than ``retention_days`` (the only way a record ends); returns how
    many. The caller commits."""
    cutoff = (now or utcnow()) - timedelta(days=retention_days)
    result = session.execute(
        delete(AuditRecord)
        .where(AuditRecord.created_at < cutoff)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)
