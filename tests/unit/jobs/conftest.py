"""Fixtures for the jobs unit tests: the embedded service, its store, a team and a dataset."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.core.config import get_settings
from app.core.db import get_sessionmaker
from app.core.storage import ObjectStore, open_object_store
from app.jobs.models import Job
from app.teams.models import Role
from app.teams.models import Team as TeamRow
from app.teams.service import create_api_key
from tests.conftest import Service
from tests.unit.jobs.ready_dataset import make_team_key, put_ready_dataset


@pytest.fixture
def session(embedded_service: Service) -> Iterator[Session]:
    with get_sessionmaker()() as db:
        yield db


@pytest.fixture
def store(embedded_service: Service) -> ObjectStore:
    return open_object_store(get_settings())


@pytest.fixture
def client(embedded_service: Service) -> Iterator[TestClient]:
    from app.main import app

    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@dataclass(frozen=True)
class Team:
    id: str
    admin: str  # plaintext keys
    member: str
    viewer: str
    dataset_id: str


def add_job(session: Session, team: Team, **values: object) -> Job:
    """A job row written directly (default: queued, resnet18 -> resnet18, 3 attempts)."""
    defaults: dict[str, object] = {
        "teacher": "resnet18",
        "student": "resnet18",
        "method": "fopro_akd",
        "params": {},
    }
    job = Job(team_id=team.id, dataset_id=team.dataset_id, **{**defaults, **values})
    session.add(job)
    session.commit()
    return job


@pytest.fixture
def team(session: Session, store: ObjectStore) -> Team:
    """A team with admin, member and viewer keys and one small ready dataset."""
    team_id, admin = make_team_key(session, Role.admin)
    row = session.get_one(TeamRow, team_id)
    secret = get_settings().secret_key
    _, member = create_api_key(session, row, Role.member, secret)
    _, viewer = create_api_key(session, row, Role.viewer, secret)
    session.commit()
    dataset = put_ready_dataset(session, store, team_id, per_class=5, size=32)
    return Team(team_id, admin, member, viewer, dataset.id)
