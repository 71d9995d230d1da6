"""Artifacts of finished jobs: recording them (workers) and finding them (API), team-scoped."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.errors import NotFound
from app.core.storage import ObjectStore
from app.core.tenancy import get_owned, team_object_key
from app.jobs.models import Job, JobStatus
from app.students.models import Artifact

# Model binaries are opaque to browsers; only the documents get a specific type.
MEDIA_TYPES: dict[str, str] = {
    ".json": "application/json",
    ".md": "text/markdown; charset=utf-8",
    ".png": "image/png",
}
DEFAULT_MEDIA_TYPE = "application/octet-stream"


def media_type_for(name: str) -> str:
    """The Content-Type an artifact called ``name`` is served with."""
    return MEDIA_TYPES.get(PurePosixPath(name).suffix.lower(), DEFAULT_MEDIA_TYPE)


def artifact_key(team_id: str, job_id: str, name: str) -> str:
    """Object key of a job's artifact: ``teams/<team>/jobs/<job>/artifacts/<name>``."""
    return team_object_key(team_id, "jobs", job_id, "artifacts", name)


def upload_artifact(store: ObjectStore, *, team_id: str, job_id: str, path: Path) -> Artifact:
    """Upload ``path`` as the job's artifact named ``path.name``; return its row, not yet in any
    session, so the caller commits it together with the job's success."""
    key = artifact_key(team_id, job_id, path.name)
    media_type = media_type_for(path.name)
    with path.open("rb") as stream:
        info = store.put(key, stream, size=path.stat().st_size, content_type=media_type)
    return Artifact(
        team_id=team_id,
        job_id=job_id,
        name=path.name,
        media_type=media_type,
        bytes=info.size,
        sha256=info.sha256 or "",
        object_key=key,
    )


def list_artifacts(session: Session, team_id: str, job_id: str) -> list[Artifact]:
    """The artifacts of the team's job ``job_id`` by name (404 for another team's job)."""
    job = get_owned(session, Job, job_id, team_id, what="job")
    return list(
        session.scalars(select(Artifact).where(Artifact.job_id == job.id).order_by(Artifact.name))
    )


def get_artifact(session: Session, team_id: str, job_id: str, name: str) -> Artifact:
    """One artifact of the team's job; 404 naming what exists when ``name`` is not one."""
    job = get_owned(session, Job, job_id, team_id, what="job")
    artifact = session.scalar(
        select(Artifact).where(Artifact.job_id == job.id, Artifact.name == name)
    )
    if artifact is None:
        state = "" if job.status == JobStatus.succeeded.value else f" (the job is {job.status})"
        raise NotFound(
            f"Job {job_id} has no artifact {name!r}{state}; "
            f"GET /v1/jobs/{job_id}/artifacts lists what it has.",
            details={"job_id": job_id, "status": job.status},
        )
    return artifact
