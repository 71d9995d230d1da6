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

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import case, func, select, update
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
    query = select(func.count(Job.id)).where(
        Job.team_id == team_id, Job.status.in_(_ACTIVE_JOB_STATUSES)
    )
    return session.scalar(query) or 0


def dataset_count(session: Session, team_id: str) -> int:
    """The team's datasets, except ``deleted`` records (kept only for their jobs' provenance)."""
    query = select(func.count(Dataset.id)).where(
        Dataset.team_id == team_id, Dataset.status != DatasetStatus.deleted.value
    )
    return session.scalar(query) or 0


def stored_bytes(session: Session, team_id: str) -> int:
    """Bytes the team's datasets, artifacts and teachers occupy in the object store."""
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
    # One round trip: a job submit runs this while it holds the team's row lock.
    both = select(
        datasets.scalar_subquery() + artifacts.scalar_subquery() + teachers.scalar_subquery()
    )
    return int(session.scalar(both) or 0)


def team_usage(session: Session, team: Team, settings: Settings) -> TeamUsage:
    """The team's use of each quota, with the limit that applies to it."""
    return TeamUsage(
        active_jobs=QuotaUse(active_job_count(session, team.id), _max_active_jobs(team, settings)),
        stored_bytes=QuotaUse(stored_bytes(session, team.id), _max_stored_bytes(team, settings)),
        datasets=QuotaUse(dataset_count(session, team.id), _max_datasets(team, settings)),
    )


def check_job_quota(session: Session, team_id: str, settings: Settings) -> None:
    """Refuse (429) a new queued job when the team has its quota of active jobs (``Retry-After``:
    one will end) or its storage is full (no ``Retry-After``: only deleting helps).

    Locks the team row until the caller's commit, so concurrent submits count each other.
    """
    team = _locked_team(session, team_id)
    jobs = QuotaUse(active_job_count(session, team_id), _max_active_jobs(team, settings))
    if jobs.left == 0:
        raise QuotaExceeded(
            f"Team {team.name} has {jobs.used} of {jobs.limit} active jobs (queued or running); "
            "wait for one to end or cancel one, then submit again.",
            details={"quota": "max_active_jobs", "used": jobs.used, "limit": jobs.limit},
            headers={"Retry-After": str(ACTIVE_JOBS_RETRY_AFTER_S)},
        )
    stored = QuotaUse(stored_bytes(session, team_id), _max_stored_bytes(team, settings))
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


def _locked_team(session: Session, team_id: str) -> Team:
    """The team row, write-locked until the session commits or rolls back.

    A no-op UPDATE rather than ``SELECT ... FOR UPDATE``: it locks the row on PostgreSQL and,
    where FOR UPDATE does not exist, takes SQLite's database write lock, so the count that
    follows is not raced by another submit on either backend.
    """
    session.execute(
        update(Team)
        .where(Team.id == team_id)
        .values(name=Team.name)
        .execution_options(synchronize_session=False)
    )
    return session.get_one(Team, team_id, populate_existing=True)


def _max_active_jobs(team: Team, settings: Settings) -> int:
    return team.max_active_jobs if team.max_active_jobs is not None else settings.max_active_jobs


def _max_stored_bytes(team: Team, settings: Settings) -> int:
    if team.max_stored_bytes is not None:
        return team.max_stored_bytes
    return settings.max_stored_bytes


def _max_datasets(team: Team, settings: Settings) -> int:
    return team.max_datasets if team.max_datasets is not None else settings.max_datasets
