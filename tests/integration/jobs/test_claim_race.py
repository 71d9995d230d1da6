"""Guarded transitions under real concurrency: PostgreSQL, several threads, one winner."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.core.db import get_sessionmaker
from app.core.migrate import upgrade
from app.datasets.models import Dataset, DatasetStatus
from app.jobs.lease import claim_job
from app.jobs.models import Job, JobEvent, JobStatus
from app.jobs.state import transition
from app.teams.service import create_team
from tests.support.service import configure_service, reset_service_caches

pytestmark = pytest.mark.integration

CONTENDERS = 4


@pytest.fixture
def jobs(pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Ten queued jobs in the session's PostgreSQL database."""
    configure_service(monkeypatch, tmp_path / "fopro", database_url=pg_url)
    upgrade(pg_url)
    with get_sessionmaker()() as session:
        team = create_team(session, f"race-{tmp_path.name}")
        dataset = Dataset(team_id=team.id, name="d", status=DatasetStatus.ready.value)
        session.add(dataset)
        session.flush()
        rows = [
            Job(team_id=team.id, dataset_id=dataset.id, teacher="t", student="s", method="ce")
            for _ in range(10)
        ]
        session.add_all(rows)
        session.commit()
        yield [row.id for row in rows]
    reset_service_caches()


def race(action: Callable[[int], bool], count: int) -> list[bool]:
    """Run ``action(i)`` in ``count`` threads released at the same instant."""
    barrier = threading.Barrier(count)
    results: list[bool] = [False] * count

    def contender(i: int) -> None:
        barrier.wait()
        results[i] = action(i)

    threads = [threading.Thread(target=contender, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_concurrent_claims_and_finishes_each_have_exactly_one_winner(jobs: list[str]) -> None:
    make = get_sessionmaker()
    for job_id in jobs:

        def claim(i: int, job_id: str = job_id) -> bool:
            with make() as session:
                return claim_job(session, job_id, f"worker-{i}", lease=timedelta(seconds=30))

        assert sum(race(claim, CONTENDERS)) == 1

        with make() as session:
            owner = session.scalar(select(Job.lease_owner).where(Job.id == job_id))

        def finish(i: int, job_id: str = job_id, owner: str | None = owner) -> bool:
            with make() as session:
                return transition(
                    session,
                    job_id,
                    source=JobStatus.running,
                    target=JobStatus.succeeded if i % 2 else JobStatus.failed,
                    lease_owner=owner,
                    message=f"finisher {i}",
                )

        assert sum(race(finish, CONTENDERS)) == 1

    with make() as session:
        per_job = session.execute(
            select(JobEvent.job_id, func.count())
            .where(JobEvent.job_id.in_(jobs))
            .group_by(JobEvent.job_id)
        ).all()
    assert {count for _, count in per_job} == {2}  # one claim + one finish event per job
