"""The rules for jobs as users drive them: submit, list, read, cancel, retry, curves.

Every function takes the caller's ``Principal``; reads are scoped to the team, writes need a
member or admin key. Rows are committed before any Celery message is sent (``dispatch``).
"""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import Select, bindparam, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.audit.service import write_pending_records
from app.core.config import Settings
from app.core.db import new_id
from app.core.errors import Conflict, IllegalTransition, InvalidInput, ServiceUnavailable
from app.core.pagination import Page
from app.core.storage import ObjectStore, StoreUnavailable
from app.core.tenancy import get_owned, scoped, team_object_key
from app.datasets.models import Dataset, DatasetStatus
from app.datasets.service import DatasetNotReady
from app.jobs.dispatch import enqueue_job
from app.jobs.lease import resume_point
from app.jobs.models import Job, JobEvent, JobStatus
from app.jobs.schemas import EpochPoint, JobCreate, JobMetricsOut, JobOut
from app.jobs.state import (
    TERMINAL,
    EventKind,
    add_event,
    check_transition,
    forget_cached_job,
    transition,
)
from app.students.models import Artifact
from app.teachers.service import resolve_teacher
from app.teams.models import Role
from app.teams.quotas import check_job_quota
from app.teams.service import Principal
from foprokd.catalog import expected_weight_paths, find_weights
from foprokd.hyperparams import TEACHER_METHODS


class IdempotencyKeyReused(Conflict):
    code = "idempotency_key_reused"


class StudentWeightsMissing(InvalidInput):
    code = "student_weights_missing"


class JobInUse(Conflict):
    code = "job_in_use"


def _check_models(session: Session, team_id: str, body: JobCreate, settings: Settings) -> None:
    """Refuse at submit, not hours later, a teacher or student whose weights are not installed.

    ``allow_random_weights`` (test only) skips the weights checks, never the name checks; a
    ``student_init`` of ``scratch`` needs no student weights.
    """
    random_ok = body.params.allow_random_weights
    resolve_teacher(
        session,
        team_id,
        body.teacher,
        # Plain supervised baselines name a teacher (its feature size shapes the student's
        # projection head) but never load it, so its weights need not be installed.
        require_weights=not (random_ok or body.method not in TEACHER_METHODS),
        settings=settings,
    )
    assert settings.weights_dir is not None  # Settings fills it from the data dir
    if random_ok or body.params.student_init == "scratch":
        return
    if find_weights(body.student, settings.weights_dir) is not None:
        return
    expected = expected_weight_paths(body.student, settings.weights_dir)
    raise StudentWeightsMissing(
        f"ImageNet weights for the student {body.student!r} are not installed. Put a timm state "
        f"dict at {expected[0]} (or {', '.join(str(p) for p in expected[1:])}), e.g. with "
        f"`fopro admin weights pull {body.student}` or `fopro admin weights add {body.student} "
        "FILE`, then submit again; or train the student from scratch (params.student_init "
        '"scratch").',
        details={"student": body.student, "expected_paths": [str(p) for p in expected]},
    )


def _ready_dataset(session: Session, dataset_id: str, team_id: str) -> Dataset:
    dataset = get_owned(session, Dataset, dataset_id, team_id, what="dataset")
    if dataset.status != DatasetStatus.ready.value:
        raise DatasetNotReady(
            f"Dataset {dataset_id!r} is {dataset.status}, not ready: wait for its validation to "
            "finish, or fix the problems it lists and upload it again.",
            details={"dataset_id": dataset_id, "status": dataset.status},
        )
    return dataset


def _request_of(job: Job) -> dict[str, Any]:
    return {
        "dataset_id": job.dataset_id,
        "teacher": job.teacher,
        "student": job.student,
        "method": job.method,
        "priority": job.priority,
        "params": job.params,
    }


def _same_request(job: Job, body: JobCreate) -> Job:
    """The job an Idempotency-Key already names; a different request under it is a 409."""
    asked = body.model_dump(mode="json")
    if _request_of(job) != asked:
        raise IdempotencyKeyReused(
            f"This Idempotency-Key already created job {job.id} with a different request; "
            "use a new key for a new job.",
            details={"job_id": job.id},
        )
    return job


def _by_idempotency_key(session: Session, team_id: str, key: str) -> Job | None:
    return session.scalar(scoped(Job, team_id).where(Job.idempotency_key == key))


def _commit_within_quota(session: Session, team_id: str, settings: Settings) -> None:
    """Commit the new queued job's rows unless the team is over a quota (429, rolled back).

    The rows (and the audit record) go in first, so the team's row lock, which every submit of
    the team waits for, is held only for the quota count and the commit."""
    write_pending_records(session)
    session.flush()
    check_job_quota(session, team_id, settings)
    session.commit()


def create_job(
    session: Session,
    principal: Principal,
    body: JobCreate,
    *,
    idempotency_key: str | None,
    settings: Settings,
) -> tuple[Job, bool]:
    """Commit a queued job, then send it; returns ``(job, created)``.

    With ``idempotency_key``, a repeat (even a concurrent one) returns the first job and
    ``created=False``. Raises 404 for a dataset outside the team, 409 when it is not ready,
    422 for an unknown teacher or uninstalled weights, 403 for viewer keys and for
    ``allow_random_weights`` without an admin key.
    """
    principal.require_write()
    if body.params.allow_random_weights:
        principal.require(Role.admin)
    if idempotency_key is not None:
        existing = _by_idempotency_key(session, principal.team_id, idempotency_key)
        if existing is not None:
            return _same_request(existing, body), False
    _ready_dataset(session, body.dataset_id, principal.team_id)
    _check_models(session, principal.team_id, body, settings)
    job = Job(
        id=new_id("job"),
        team_id=principal.team_id,
        dataset_id=body.dataset_id,
        teacher=body.teacher,
        student=body.student,
        method=body.method,
        priority=body.priority.value,
        params=body.params.model_dump(mode="json"),
        idempotency_key=idempotency_key,
        status=JobStatus.queued.value,
        attempt=1,
        max_attempts=settings.max_attempts,
    )
    session.add(job)
    add_event(session, job.id, EventKind.state, "Queued.", {"to": JobStatus.queued.value})
    try:
        _commit_within_quota(session, principal.team_id, settings)
    except IntegrityError:
        # A concurrent request with the same key committed first: answer with its job.
        session.rollback()
        if idempotency_key is None:
            raise
        winner = _by_idempotency_key(session, principal.team_id, idempotency_key)
        if winner is None:
            raise
        return _same_request(winner, body), False
    enqueue_job(session, job.id, job.priority)
    return job, True


def list_jobs(
    session: Session,
    principal: Principal,
    *,
    status: JobStatus | None,
    dataset_id: str | None,
    limit: int,
    offset: int,
) -> Page[JobOut]:
    """The team's jobs, newest first, optionally filtered by status and dataset."""
    count, page = _list_statements(status is not None, dataset_id is not None)
    values = {
        "team_id": principal.team_id,
        "status": status.value if status is not None else None,
        "dataset_id": dataset_id,
        "limit": limit,
        "offset": offset,
    }
    total = session.scalar(count, values) or 0
    # Plain rows of the answer's columns: loading 50 ORM objects (identity map, instance state)
    # was most of this route's time under load (bench/api_load.py).
    rows = session.execute(page, values)
    # One validation over the rows' mappings (in pydantic-core) rather than one per row.
    return Page[JobOut].model_validate(
        {"items": [r._mapping for r in rows], "total": total, "limit": limit, "offset": offset}
    )


@functools.cache
def _list_statements(by_status: bool, by_dataset: bool) -> tuple[Select[Any], Select[Any]]:
    """(count, page) for ``list_jobs``'s filters, built once each with bound parameters: a
    statement built per request recomputes its SQLAlchemy cache key over every column
    (``app.core.tenancy._owned_statement``)."""
    query = select(Job).where(Job.team_id == bindparam("team_id"))
    if by_status:
        query = query.where(Job.status == bindparam("status"))
    if by_dataset:
        query = query.where(Job.dataset_id == bindparam("dataset_id"))
    page = (
        query.with_only_columns(*_JOB_OUT_COLUMNS)
        .order_by(Job.created_at.desc(), Job.id.desc())
        .limit(bindparam("limit"))
        .offset(bindparam("offset"))
    )
    return query.with_only_columns(func.count()), page


_JOB_OUT_COLUMNS = tuple(getattr(Job, name) for name in JobOut.model_fields)


def get_job(session: Session, principal: Principal, job_id: str) -> Job:
    """The team's job ``job_id``; 404 for any other id."""
    return get_owned(session, Job, job_id, principal.team_id, what="job")


def cancel_job(session: Session, principal: Principal, job_id: str) -> Job:
    """Cancel a queued job at once, or ask a running one to stop at its next training step.

    A finished job answers 409 (``IllegalTransition``).
    """
    principal.require_write()
    job = get_job(session, principal, job_id)
    # Two rounds: a queued job may start running between our read and our guarded UPDATE.
    for _ in range(2):
        if job.status == JobStatus.queued.value:
            if transition(
                session,
                job_id,
                source=JobStatus.queued,
                target=JobStatus.cancelled,
                message="Cancelled before it started.",
                values={"cancel_requested": True},
            ):
                break
        elif job.status == JobStatus.running.value:
            asked = session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == JobStatus.running.value)
                .values(cancel_requested=True)
                .execution_options(synchronize_session=False)
            )
            if asked.rowcount == 1:  # type: ignore[attr-defined]
                add_event(
                    session,
                    job_id,
                    EventKind.info,
                    "Cancel requested; training stops at its next step.",
                )
                session.commit()
                break
            session.rollback()
        else:
            check_transition(job.status, JobStatus.cancelled)
        forget_cached_job(session, job_id)
        job = get_job(session, principal, job_id)
    forget_cached_job(session, job_id)
    return get_job(session, principal, job_id)


def retry_job(session: Session, principal: Principal, job_id: str, settings: Settings) -> Job:
    """A new queued job ``retry_of`` a failed or cancelled one, resuming from its checkpoint."""
    principal.require_write()
    old = get_job(session, principal, job_id)
    if old.status not in (JobStatus.failed.value, JobStatus.cancelled.value):
        raise IllegalTransition(
            f"Only failed or cancelled jobs can be retried; this one is {old.status}.",
            details={"status": old.status},
        )
    if old.params.get("allow_random_weights"):
        principal.require(Role.admin)
    _ready_dataset(session, old.dataset_id, principal.team_id)
    job = Job(
        team_id=old.team_id,
        dataset_id=old.dataset_id,
        teacher=old.teacher,
        student=old.student,
        method=old.method,
        priority=old.priority,
        params=dict(old.params),
        retry_of=old.id,
        status=JobStatus.queued.value,
        attempt=1,
        max_attempts=old.max_attempts,
        checkpoint_key=old.checkpoint_key,
        checkpoint_epoch=old.checkpoint_epoch,
        checkpoint_step=old.checkpoint_step,
    )
    session.add(job)
    session.flush()
    resume = (
        f"; it resumes from {resume_point(old.checkpoint_epoch, old.checkpoint_step)}"
        if old.checkpoint_key is not None
        else ""
    )
    add_event(
        session,
        job.id,
        EventKind.state,
        f"Queued as a retry of {old.id}{resume}.",
        {"to": JobStatus.queued.value, "retry_of": old.id},
    )
    add_event(session, old.id, EventKind.info, f"Retried as {job.id}.", {"retry": job.id})
    _commit_within_quota(session, principal.team_id, settings)
    enqueue_job(session, job.id, job.priority)
    return job


def delete_job(session: Session, store: ObjectStore, principal: Principal, job_id: str) -> None:
    """Delete a finished job for good: its artifacts, checkpoints, events and row.

    Refused (409) while the job is queued or running (cancel it first), and while another job
    would resume from a checkpoint this one owns (a retry that has not saved its own yet). The
    artifact rows and the checkpoint pointer go first, so nothing ever lists a file that may be
    gone; then every object under the job's prefix; then the row. If the store fails part-way
    (503) the job stays, without files, and repeating the DELETE finishes it.
    """
    principal.require_write()
    job = get_job(session, principal, job_id)
    if JobStatus(job.status) not in TERMINAL:
        raise IllegalTransition(
            f"Job {job.id} is {job.status}; cancel it and wait until it has ended, then delete it.",
            details={"status": job.status},
        )
    prefix = team_object_key(job.team_id, "jobs", job.id, "")
    resuming = list(
        session.scalars(
            select(Job.id)
            .where(Job.id != job.id, Job.checkpoint_key.startswith(prefix, autoescape=True))
            .order_by(Job.created_at)
        )
    )
    if resuming:
        raise JobInUse(
            f"Job {job.id}'s checkpoint is where {', '.join(resuming)} resume(s) from; delete "
            "those first (or let them save checkpoints of their own).",
            details={"jobs": resuming},
        )
    session.execute(delete(Artifact).where(Artifact.job_id == job.id))
    job.checkpoint_key, job.checkpoint_epoch, job.checkpoint_step = None, None, None
    session.commit()
    try:
        store.delete_prefix(prefix)
    except StoreUnavailable as exc:
        raise ServiceUnavailable(
            f"The object store is unavailable, so job {job.id}'s files could not all be "
            f"deleted ({exc}); the job stays, without files. Retry the DELETE."
        ) from exc
    session.execute(delete(JobEvent).where(JobEvent.job_id == job.id))
    session.delete(job)
    session.commit()


def job_metrics(session: Session, principal: Principal, job_id: str) -> JobMetricsOut:
    """Per-epoch curves from the epoch events (a resumed epoch counts once: its latest run)."""
    job = get_job(session, principal, job_id)
    events = session.scalars(
        select(JobEvent)
        .where(JobEvent.job_id == job_id, JobEvent.kind == EventKind.epoch.value)
        .order_by(JobEvent.id)
    )
    by_epoch = {int(e.data["epoch"]): EpochPoint.model_validate(e.data) for e in events}
    points = [by_epoch[k] for k in sorted(by_epoch)]
    best = job.metrics.get("best_epoch")
    if best is None:
        # The trainer flags an epoch best only when it beats every earlier one.
        best = next((p.epoch for p in reversed(points) if p.is_best), None)
    return JobMetricsOut(
        job_id=job.id,
        epochs=points,
        best_epoch=best,
        evaluated_split=job.metrics.get("evaluated_split"),
        report=job.metrics.get("report"),
        trust=job.metrics.get("trust"),
    )
