"""Fixtures for teams, keys, quotas and rate limits: the embedded service, a client, teams."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.core.config import get_settings
from app.core.db import get_sessionmaker
from app.core.storage import ObjectStore, open_object_store
from app.teams.models import ApiKey, Role, Team
from app.teams.service import create_api_key, create_team
from tests.conftest import Service


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def override_settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    """Set ``FOPRO_<NAME>`` variables and make the next request read settings again."""
    for name, value in env.items():
        monkeypatch.setenv(f"FOPRO_{name.upper()}", value)
    get_settings.cache_clear()


@dataclass(frozen=True)
class TeamKeys:
    """A team and one plaintext key per role."""

    id: str
    name: str
    admin: str
    member: str
    viewer: str


def make_team(session: Session, name: str | None = None) -> TeamKeys:
    team = create_team(session, name or f"team-{secrets.token_hex(4)}")
    secret = get_settings().secret_key
    keys = {role: create_api_key(session, team, role, secret)[1] for role in Role}
    session.commit()
    return TeamKeys(team.id, team.name, keys[Role.admin], keys[Role.member], keys[Role.viewer])


def add_key(
    session: Session, team_id: str, role: Role = Role.member, **values: datetime | None
) -> tuple[ApiKey, str]:
    """A key of ``role`` with column ``values`` set directly (``revoked_at``, ``expires_at``)."""
    team = session.get_one(Team, team_id)
    key, plaintext = create_api_key(session, team, role, get_settings().secret_key)
    for column, value in values.items():
        setattr(key, column, value)
    session.commit()
    return key, plaintext


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


@pytest.fixture
def team(session: Session) -> TeamKeys:
    return make_team(session)
