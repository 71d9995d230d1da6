"""Fixtures for the datasets unit tests: the API on the embedded service with a team and keys."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from app.core.config import get_settings
from app.core.db import session_scope
from app.core.storage import ObjectStore, open_object_store
from app.teams.models import Role
from app.teams.service import create_api_key, create_team
from tests.conftest import Service


@dataclass(frozen=True)
class Team:
    id: str
    member: str  # plaintext keys
    viewer: str

    def auth(self, role: str = "member") -> dict[str, str]:
        return {"Authorization": f"Bearer {getattr(self, role)}"}


def make_team() -> Team:
    with session_scope() as session:
        team = create_team(session, f"team-{secrets.token_hex(4)}")
        _, member = create_api_key(session, team, Role.member, get_settings().secret_key)
        _, viewer = create_api_key(session, team, Role.viewer, get_settings().secret_key)
        return Team(team.id, member, viewer)


@pytest.fixture
def client(embedded_service: Service) -> Iterator[TestClient]:
    from app.main import app

    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def team(embedded_service: Service) -> Team:
    return make_team()


@pytest.fixture
def store(embedded_service: Service) -> ObjectStore:
    return open_object_store(get_settings())
