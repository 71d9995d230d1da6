"""``run_job`` refuses work it must not start: a queued job whose dataset stopped being ready
fails at once with a reason; a job that is no longer queued is left as it is."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.datasets.models import Dataset, DatasetStatus
from app.jobs.models import Job, JobEvent
from tests.unit.jobs.conftest import Team, add_job
from workers.training import run_job


def dataset_being_deleted(session: Session, team: Team) -> None:
    session.get_one(Dataset, team.dataset_id).status = DatasetStatus.deleting.value
    session.commit()


def test_a_queued_job_whose_dataset_is_no_longer_ready_fails_before_it_starts(
    session: Session, team: Team
) -> None:
    job = add_job(session, team)
    dataset_being_deleted(session, team)

    outcome = run_job(job.id)

    assert outcome == {"job_id": job.id, "ran": False, "why": "dataset not ready"}
    session.expire_all()
    failed = session.get_one(Job, job.id)
    assert failed.status == "failed"
    assert failed.failure_code == "invalid_dataset"
    assert failed.failure_reason == "The dataset cannot be used: it is deleting, not ready."
    assert failed.lease_owner is None
    messages = session.scalars(select(JobEvent.message).where(JobEvent.job_id == job.id)).all()
    assert any("Failed before it started" in m for m in messages), messages


def test_a_job_that_is_no_longer_queued_is_left_alone(session: Session, team: Team) -> None:
    job = add_job(session, team, status="cancelled")
    dataset_being_deleted(session, team)

    outcome = run_job(job.id)

    assert outcome == {"job_id": job.id, "ran": False, "why": "job is cancelled"}
    session.expire_all()
    assert session.get_one(Job, job.id).status == "cancelled"
    assert session.get_one(Job, job.id).failure_code is None
