"""Fixtures shared by every test layer."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.databases import temporary_postgres_database, temporary_redis_db
from tests.support.service import configure_service, reset_service_caches

pytest_plugins = ["tests.support.seaweed"]

# Tests never use a developer's own data dir or secrets by accident, nor their Hugging Face
# cache: weights found there would change what the weights-missing tests expect.
for _name in [n for n in os.environ if n.startswith("FOPRO_")]:
    del os.environ[_name]
os.environ["HF_HUB_CACHE"] = tempfile.mkdtemp(prefix="fopro-tests-empty-hf-hub-")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session (dropped at the end)."""
    with temporary_postgres_database() as url:
        yield url


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis DB number reserved for this test session."""
    with temporary_redis_db() as url:
        yield url


@dataclass
class Service:
    """A configured in-process service: its data dir and database URL, with schema applied."""

    data_dir: Path
    database_url: str


@pytest.fixture
def embedded_service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Service]:
    """The embedded defaults (SQLite, local objects, SQLite broker) in a temp data dir, migrated."""
    from app.core.config import get_settings
    from app.core.migrate import upgrade

    configure_service(monkeypatch, tmp_path / "fopro")
    settings = get_settings()
    upgrade(settings.database_url)
    yield Service(settings.data_dir, settings.database_url)
    reset_service_caches()
