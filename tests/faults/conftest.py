"""Fault injection on the production deployment: PostgreSQL, a Redis broker the test owns (on its
own port, so it can be stopped), SeaweedFS S3 and real `fopro worker` processes.

Leases are short (5 s, heartbeat 1 s) so a lost worker's job is reaped within seconds; jobs are
tiny (a random-weight resnet18 student on 32 px textures, two steps an epoch, ``METHOD``) so
each test runs in tens of seconds. Every process a test starts is stopped by its fixture,
whatever the outcome.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.core.config import get_settings
from app.core.db import get_sessionmaker
from app.core.migrate import upgrade
from app.core.storage import open_object_store
from app.teams.models import Role
from tests.conftest import free_port
from tests.integration.jobs.conftest import Deployment
from tests.support.redis_server import RedisServer
from tests.support.seaweed import S3Server
from tests.support.service import configure_service, reset_service_caches
from tests.unit.jobs.ready_dataset import make_team_key, put_ready_dataset

pytestmark = [pytest.mark.integration, pytest.mark.slow]

Deploy = Callable[..., Deployment]
# The student alone (no teacher to load or run): the cheapest real training, and the faults
# under test are in the machinery around it, the same for every method.
METHOD = "bsm"
# Nor an INT8 build after training: it is tested where it is the subject (tests/unit/students,
# tests/integration/artifacts); here it would only add seconds to every job.
FAULT_JOB_PARAMS = {"int8": "never"}


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(free_port(), tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def deploy(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    pg_url: str,
    redis_server: RedisServer,
    request: pytest.FixtureRequest,
) -> Iterator[Deploy]:
    """``deploy(s3=None, embedded=False, worker_settings=None, per_class=6, **settings)``: the
    API in-process (TestClient) against Postgres, the test's Redis and ``s3`` (default: the
    session's SeaweedFS), or the embedded defaults (SQLite, local objects), with a dataset of
    ``per_class`` images in each of 4 classes; ``settings`` as FOPRO_ values for the API and the
    workers, ``worker_settings`` for the workers only."""
    stack = ExitStack()

    def make(
        s3: S3Server | None = None,
        *,
        embedded: bool = False,
        worker_settings: dict[str, str] | None = None,
        per_class: int = 6,
        **settings: str,
    ) -> Deployment:
        env = {
            "FOPRO_ENV": "test",
            "FOPRO_DATA_DIR": str(tmp_path / "fopro"),
            "FOPRO_LEASE_SECONDS": "5",
            "FOPRO_HEARTBEAT_SECONDS": "1",
        }
        if not embedded:
            s3 = s3 or request.getfixturevalue("s3_server")
            env |= {
                "FOPRO_DATABASE_URL": pg_url,
                "FOPRO_BROKER_URL": redis_server.url,
                "FOPRO_RESULT_BACKEND": redis_server.url,
                "FOPRO_STORAGE_URL": f"s3://{s3.bucket}/faults-{secrets.token_hex(4)}",
                "FOPRO_S3_ENDPOINT": s3.endpoint,
                "FOPRO_S3_ACCESS_KEY": s3.access_key,
                "FOPRO_S3_SECRET_KEY": s3.secret_key,
                "FOPRO_S3_REGION": s3.region,
            }
        env |= {f"FOPRO_{name.upper()}": value for name, value in settings.items()}
        configure_service(
            monkeypatch,
            tmp_path / "fopro",
            **{
                k.removeprefix("FOPRO_").lower(): v for k, v in env.items() if k != "FOPRO_DATA_DIR"
            },
        )
        upgrade(get_settings().database_url)
        store = open_object_store(get_settings())
        with get_sessionmaker()() as session:
            team_id, key = make_team_key(session, Role.admin)
            dataset = put_ready_dataset(session, store, team_id, per_class=per_class)
        from app.main import app

        client = stack.enter_context(TestClient(app, raise_server_exceptions=False))
        workers_env = env | {f"FOPRO_{k.upper()}": v for k, v in (worker_settings or {}).items()}
        name = "embedded" if embedded else "production"
        deployed = Deployment(
            name,
            workers_env,
            client,
            store,
            key,
            dataset.id,
            tmp_path,
            default_params=dict(FAULT_JOB_PARAMS),
        )
        stack.callback(lambda: [worker.stop() for worker in deployed.workers])
        return deployed

    try:
        yield make
    finally:
        stack.close()
        reset_service_caches()
