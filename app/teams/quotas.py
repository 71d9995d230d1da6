"""Per-team quotas: active jobs, stored bytes and datasets, counted from what the database records.

Limits come from settings, overridden per team on its row (``fopro admin set-quota``). Stored
bytes are what the team's objects occupy as the rows describe them: a dataset's archive while it
is kept (until validation ends) plus its validated images, every artifact, every team teacher.

A job submit takes a write lock on the team row before counting and holds it to its commit, so
concurrent submits (on any API process) cannot overshoot. Uploads are checked before any byte is
stored and capped while they stream; holding a lock for a whole upload is not an option, so two
concurrent uploads can together pass the byte quota by at most one of them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BindParameter,
    ScalarSelect,
    Select,
    Update,
    bindparam,
    case,
    func,
    select,
    update,
)
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.errors import PayloadTooLarge, ServiceError, TooManyRequests
from app.datasets.models import Dataset, DatasetStatus
from app.datasets.service import upload_too_large
from app.jobs.models import Job, JobStatus
from app.students.models import Artifact
from app.teachers.models import Teacher
from app.teams.models import Team

# A slot frees when one of the team's jobs ends; a minute is a polite interval to try again.
ACTIVE_JOBS_RETRY_AFTER_S = 60
_ACTIVE_JOB_STATUSES = (JobStatus.queued.value, JobStatus.running.value)
# Validated images are kept for these; a 'deleting' dataset's objects may not all be gone yet.
_DATASET_IMAGES_KEPT = (DatasetStatus.ready.value, DatasetStatus.deleting.value)


class QuotaExceeded(TooManyRequests):
    code = "quota_exceeded"


class StorageQuotaExceeded(PayloadTooLarge):
    code = "storage_quota_exceeded"


@dataclass(frozen=True)
class QuotaUse:
    """How much of one quota is used: ``used`` of ``limit``."""

    used: int
    limit: int

    @property
    def left(self) -> int:
        return max(0, self.limit - self.used)


@dataclass(frozen=True)
class TeamUsage:
    """A team's use against each of its quotas."""

    active_jobs: QuotaUse
    stored_bytes: QuotaUse
    datasets: QuotaUse


@dataclass(frozen=True)
class UploadAllowance:
    """How many bytes an upload may have, and the error to raise for one that has more
    (``too_large(seen)``: ``seen`` is the bytes declared or received so far)."""

    max_bytes: int
    too_large: Callable[[int], ServiceError]


def active_job_count(session: Session, team_id: str) -> int:
    """The team's queued and running jobs."""
    return session.scalar(select(_active_jobs_query(team_id))) or 0


def dataset_count(session: Session, team_id: str) -> int:
    """The team's datasets, except ``deleted`` records (kept only for their jobs' provenance)."""
    query = select(func.count(Dataset.id)).where(
        Dataset.team_id == team_id, Dataset.status != DatasetStatus.deleted.value
    )
    return session.scalar(query) or 0


def _stored_bytes_query(team_id: str | BindParameter[str]) -> ScalarSelect[Any]:
    archive = case(
        (Dataset.archive_key.is_not(None), func.coalesce(Dataset.archive_bytes, 0)), else_=0
    )
    images = case((Dataset.status.in_(_DATASET_IMAGES_KEPT), Dataset.image_bytes), else_=0)
    datasets = select(func.coalesce(func.sum(archive + images), 0)).where(
        Dataset.team_id == team_id
    )
    artifacts = select(func.coalesce(func.sum(Artifact.bytes), 0)).where(
        Artifact.team_id == team_id
    )
    teachers = select(func.coalesce(func.sum(Teacher.weights_bytes), 0)).where(
        Teacher.team_id == team_id
    )
    return select(
        datasets.scalar_subquery() + artifacts.scalar_subquery() + teachers.scalar_subquery()
    ).scalar_subquery()


def _active_jobs_query(team_id: str | BindParameter[str]) -> ScalarSelect[Any]:
    return (
        select(func.count(Job.id))
        .where(Job.team_id == team_id, Job.status.in_(_ACTIVE_JOB_STATUSES))
        .scalar_subquery()
    )


# A submit's two statements under the team lock, built once with a bound ``team_id``: a statement
# built per call recomputes its cache key, which cost a submit more than running it (py-spy).
@functools.cache
def _job_quota_statements() -> tuple[Update, Select[tuple[Any, Any]]]:
    team_id: BindParameter[str] = bindparam("team_id")
    lock = (
        update(Team)
        .where(Team.id == team_id)
        .values(name=Team.name)
        .returning(Team)
        .execution_options(synchronize_session=False, populate_existing=True)
    )
    return lock, select(_active_jobs_query(team_id), _stored_bytes_query(team_id))


def stored_bytes(session: Session, team_id: str) -> int:
    """Bytes the team's datasets, artifacts and teachers occupy in the object store."""
    return int(session.scalar(select(_stored_bytes_query(team_id))) or 0)


def team_usage(session: Session, team: Team, settings: Settings) -> TeamUsage:
    """The team's use of each quota, with the limit that applies to it."""
    return TeamUsage(
        active_jobs=QuotaUse(active_job_count(session, team.id), _max_active_jobs(team, settings)),
        stored_bytes=QuotaUse(stored_bytes(session, team.id), _max_stored_bytes(team, settings)),
        datasets=QuotaUse(dataset_count(session, team.id), _max_datasets(team, settings)),
    )


def check_job_quota(session: Session, team_id: str, settings: Settings) -> None:
    """Refuse (429) the queued job just added when the team already had its quota of active jobs
    (``Retry-After``: one will end) or its storage is full (no ``Retry-After``: only deleting
    helps).

    Call it after flushing the new job, as the last step before the commit: it locks the team row
    until then, so concurrent submits count each other, and it counts the new job among the
    team's active ones. Its two round trips are the whole of the lock's hold until the commit:
    under 50 concurrent submits of one team every submit waits for the ones before (BENCHMARKS.md).
    """
    lock, usage = _job_quota_statements()
    # A no-op UPDATE rather than ``SELECT ... FOR UPDATE``: it locks the row on PostgreSQL and,
    # where FOR UPDATE does not exist, takes SQLite's database write lock, so the count that
    # follows is not raced by another submit on either backend; RETURNING reads the row with it.
    team = session.scalars(lock, {"team_id": team_id}).one()
    active, stored_now = session.execute(usage, {"team_id": team_id}).one()
    jobs = QuotaUse(max(0, int(active or 0) - 1), _max_active_jobs(team, settings))
    if jobs.left == 0:
        raise QuotaExceeded(
            f"Team {team.name} has {jobs.used} of {jobs.limit} active jobs (queued or running); "
            "wait for one to end or cancel one, then submit again.",
            details={"quota": "max_active_jobs", "used": jobs.used, "limit": jobs.limit},
            headers={"Retry-After": str(ACTIVE_JOBS_RETRY_AFTER_S)},
        )
    stored = QuotaUse(int(stored_now or 0), _max_stored_bytes(team, settings))
    if stored.left == 0:
        raise QuotaExceeded(
            f"Team {team.name} stores {stored.used} of {stored.limit} bytes, so a new job would "
            "have nowhere to put its student; delete finished jobs or datasets first.",
            details={"quota": "max_stored_bytes", "used": stored.used, "limit": stored.limit},
        )


def upload_allowance(
    session: Session, team_id: str, settings: Settings, *, declared: int | None = None
) -> UploadAllowance:
    """What a new dataset upload may bring: refused at once (429) when the team has its quota of
    datasets, (413) when its storage is full or ``declared`` bytes (a Content-Length or a direct
    upload's size) would not fit; otherwise the most bytes it may stream, the lower of
    ``FOPRO_MAX_UPLOAD_BYTES`` and the storage left."""
    team = _team(session, team_id)
    datasets = QuotaUse(dataset_count(session, team_id), _max_datasets(team, settings))
    if datasets.left == 0:
        raise QuotaExceeded(
            f"Team {team.name} has {datasets.used} of {datasets.limit} datasets; delete one "
            "before uploading another.",
            details={"quota": "max_datasets", "used": datasets.used, "limit": datasets.limit},
        )
    stored = QuotaUse(stored_bytes(session, team_id), _max_stored_bytes(team, settings))

    def too_large(seen: int) -> ServiceError:
        if stored.left >= settings.max_upload_bytes:
            return upload_too_large(settings.max_upload_bytes)
        return _storage_refusal(team, stored, seen)

    if stored.left == 0 or (declared is not None and declared > stored.left):
        raise _storage_refusal(team, stored, declared or 0)
    return UploadAllowance(min(settings.max_upload_bytes, stored.left), too_large)


def check_storage(session: Session, team_id: str, settings: Settings, incoming: int) -> None:
    """Refuse (413) storing ``incoming`` more bytes for the team when they would not fit."""
    team = _team(session, team_id)
    stored = QuotaUse(stored_bytes(session, team_id), _max_stored_bytes(team, settings))
    if incoming > stored.left:
        raise _storage_refusal(team, stored, incoming)


def _storage_refusal(team: Team, stored: QuotaUse, incoming: int) -> StorageQuotaExceeded:
    size = f"{incoming} more bytes" if incoming else "more bytes"
    return StorageQuotaExceeded(
        f"Team {team.name} stores {stored.used} of {stored.limit} bytes ({stored.left} left); "
        f"{size} do not fit. Delete datasets or finished jobs, or ask an admin to raise the "
        "quota (`fopro admin set-quota`).",
        details={
            "quota": "max_stored_bytes",
            "used": stored.used,
            "limit": stored.limit,
            "incoming": incoming,
        },
    )


def _team(session: Session, team_id: str) -> Team:
    return session.get_one(Team, team_id)


def _max_active_jobs(team: Team, settings: Settings) -> int:
    return team.max_active_jobs if team.max_active_jobs is not None else settings.max_active_jobs


def _max_stored_bytes(team: Team, settings: Settings) -> int:
    if team.max_stored_bytes is not None:
        return team.max_stored_bytes
    return settings.max_stored_bytes


def _max_datasets(team: Team, settings: Settings) -> int:
    return team.max_datasets if team.max_datasets is not None else settings.max_datasets
