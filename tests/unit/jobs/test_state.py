"""The state machine: which moves exist, and that guarded moves cannot happen twice."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.db import get_sessionmaker, utcnow
from app.core.errors import IllegalTransition
from app.jobs.lease import claim_job
from app.jobs.models import Job, JobEvent, JobStatus
from app.jobs.state import ALLOWED, check_transition, transition
from tests.unit.jobs.conftest import Team, add_job

LEGAL = {
    (JobStatus.queued, JobStatus.running),
    (JobStatus.queued, JobStatus.cancelled),
    (JobStatus.queued, JobStatus.failed),
    (JobStatus.running, JobStatus.succeeded),
    (JobStatus.running, JobStatus.failed),
    (JobStatus.running, JobStatus.cancelled),
    (JobStatus.running, JobStatus.queued),
}


@pytest.mark.parametrize(("source", "target"), list(itertools.product(JobStatus, JobStatus)))
def test_only_the_documented_moves_are_allowed(source: JobStatus, target: JobStatus) -> None:
    if (source, target) in LEGAL:
        check_transition(source, target)
    else:
        with pytest.raises(IllegalTransition) as raised:
            check_transition(source, target)
        assert raised.value.status_code == 409
        assert raised.value.details == {"from": source.value, "to": target.value}
    assert (target in ALLOWED[source]) == ((source, target) in LEGAL)


def events(session: Session, job_id: str) -> list[JobEvent]:
    return list(session.scalars(select(JobEvent).where(JobEvent.job_id == job_id)))


def test_a_transition_updates_the_row_and_logs_one_event_together(
    session: Session, team: Team
) -> None:
    job = add_job(session, team)
    assert transition(
        session,
        job.id,
        source=JobStatus.queued,
        target=JobStatus.cancelled,
        message="Cancelled before it started.",
    )
    session.refresh(job)
    assert job.status == JobStatus.cancelled.value
    assert job.finished_at is not None
    [event] = events(session, job.id)
    assert event.kind == "state"
    assert event.data == {"from": "queued", "to": "cancelled"}


def test_a_guard_that_no_longer_matches_changes_nothing_and_drops_staged_rows(
    session: Session, team: Team
) -> None:
    job = add_job(session, team, status=JobStatus.succeeded.value)
    session.add(JobEvent(job_id=job.id, kind="info", message="staged with the transition"))
    assert not transition(
        session, job.id, source=JobStatus.running, target=JobStatus.failed, message="x"
    )
    session.refresh(job)
    assert job.status == JobStatus.succeeded.value
    assert events(session, job.id) == []


def test_two_workers_claiming_the_same_job_only_one_wins(session: Session, team: Team) -> None:
    job = add_job(session, team)
    make = get_sessionmaker()
    with make() as first, make() as second:
        # Both saw the job queued; each now tries its guarded UPDATE.
        assert first.get_one(Job, job.id).status == second.get_one(Job, job.id).status == "queued"
        won_first = claim_job(first, job.id, "host:1:a", lease=timedelta(seconds=30))
        won_second = claim_job(second, job.id, "host:2:b", lease=timedelta(seconds=30))
    assert (won_first, won_second) == (True, False)
    session.refresh(job)
    assert job.status == JobStatus.running.value
    assert job.lease_owner == "host:1:a"
    assert job.lease_expires_at is not None
    assert job.lease_expires_at > utcnow()
    assert job.phase == "preparing"
    assert [e.data["to"] for e in events(session, job.id)] == ["running"]


def test_two_finishers_only_the_lease_holder_finishes(session: Session, team: Team) -> None:
    job = add_job(session, team)
    assert claim_job(session, job.id, "me", lease=timedelta(seconds=30))
    make = get_sessionmaker()
    with make() as intruder:
        assert not transition(
            intruder,
            job.id,
            source=JobStatus.running,
            target=JobStatus.succeeded,
            lease_owner="someone-else",
            message="done",
        )
    with make() as holder, make() as late:
        assert transition(
            holder,
            job.id,
            source=JobStatus.running,
            target=JobStatus.succeeded,
            lease_owner="me",
            message="done",
        )
        assert not transition(
            late,
            job.id,
            source=JobStatus.running,
            target=JobStatus.failed,
            lease_owner="me",
            message="too late",
        )
    session.refresh(job)
    assert job.status == JobStatus.succeeded.value
    assert [e.data["to"] for e in events(session, job.id)] == ["running", "succeeded"]


def test_illegal_moves_raise_before_touching_the_database(session: Session, team: Team) -> None:
    job = add_job(session, team, status=JobStatus.succeeded.value)
    with pytest.raises(IllegalTransition):
        transition(
            session, job.id, source=JobStatus.succeeded, target=JobStatus.running, message="x"
        )
    session.refresh(job)
    assert job.status == JobStatus.succeeded.value
