"""What a job submit sends to the database, in order. Every submit of a team waits for the team's
row lock (the active-jobs quota must count concurrent submits), so the span from taking it to the
commit bounds how many submits a team gets through: 50 concurrent clients spent seconds queued on
it (``bench.api_load``). The rows go in first; only the quota count runs under the lock. And the
answer is built from what the submit wrote, without reading the job back."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from app.core.db import get_engine
from app.jobs.models import Job
from tests.unit.jobs.conftest import Team
from tests.unit.jobs.ready_dataset import auth

COMMIT = "COMMIT"


@pytest.fixture
def statements(client: TestClient) -> Iterator[list[str]]:
    """Statements (first words, upper case) and commits on the service's engine, in order."""
    seen: list[str] = []
    engine = get_engine()

    def on_execute(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(" ".join(statement.split()[:3]).upper())

    def on_commit(_conn: Any) -> None:
        seen.append(COMMIT)

    event.listen(engine, "before_cursor_execute", on_execute)
    event.listen(engine, "commit", on_commit)
    yield seen
    event.remove(engine, "before_cursor_execute", on_execute)
    event.remove(engine, "commit", on_commit)


def submit(client: TestClient, team: Team) -> Any:
    body = {
        "dataset_id": team.dataset_id,
        "teacher": "resnet18",
        "student": "resnet18",
        "params": {"epochs": 1, "image_size": 32, "allow_random_weights": True},
    }
    return client.post("/v1/jobs", headers=auth(team.admin), json=body)


def test_only_the_quota_count_runs_under_the_team_lock(
    client: TestClient, team: Team, statements: list[str]
) -> None:
    assert submit(client, team).status_code == 201  # warm: first-use lookups
    statements.clear()
    assert submit(client, team).status_code == 201
    lock = next(i for i, s in enumerate(statements) if s.startswith("UPDATE TEAMS"))
    held = statements[lock + 1 : statements.index(COMMIT, lock)]
    assert [s.split()[0] for s in held] == ["SELECT"], statements
    inserted = [s for s in statements[:lock] if s.startswith("INSERT INTO")]
    assert {s.split()[2] for s in inserted} == {"JOBS", "JOB_EVENTS", "AUDIT_RECORDS"}, statements


def test_the_answer_is_what_was_written_without_reading_the_job_back(
    client: TestClient, session: Session, team: Team, statements: list[str]
) -> None:
    assert submit(client, team).status_code == 201
    statements.clear()
    answer = submit(client, team)
    assert answer.status_code == 201
    inserted = next(i for i, s in enumerate(statements) if s == "INSERT INTO JOBS")
    assert not [s for s in statements[inserted:] if s.startswith("SELECT JOBS.")], statements
    job = session.scalars(select(Job).where(Job.id == answer.json()["id"])).one()
    assert job.enqueued_at is not None  # the broker took it, and the stamp is on the row
    assert answer.json()["updated_at"] == job.updated_at.isoformat().replace("+00:00", "Z")
    assert answer.json()["created_at"] == job.created_at.isoformat().replace("+00:00", "Z")
