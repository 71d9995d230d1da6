"""Two `fopro serve` processes on one database, per deployment: ``production`` (PostgreSQL, Redis
broker and rate-limit counts, a local object directory) and ``embedded`` (SQLite database and
broker, counts in each process's memory)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.db import make_engine
from app.core.migrate import upgrade
from app.datasets.models import Dataset, DatasetStatus
from app.teams.models import Role
from app.teams.service import create_api_key, create_team
from tests.conftest import free_port
from tests.support.databases import temporary_postgres_database, temporary_redis_db
from tests.support.processes import ServiceProcess

RATE = 8  # requests per minute per key: small, so both processes together exhaust it quickly


@dataclass
class Deployment:
    name: str
    settings: Settings
    env: dict[str, str]
    session: Session
    urls: list[str]  # one base URL per API process
    apis: list[ServiceProcess]

    def new_team(self) -> tuple[str, str, str]:
        """A fresh team with an admin key and a ready dataset: (team name, key, dataset id)."""
        team = create_team(self.session, f"q-{secrets.token_hex(4)}")
        _, key = create_api_key(self.session, team, Role.admin, self.settings.secret_key)
        dataset = Dataset(team_id=team.id, name="ready", status=DatasetStatus.ready.value)
        self.session.add(dataset)
        self.session.commit()
        return team.name, key, dataset.id

    def logs(self) -> str:
        return "\n".join(api.log_tail() for api in self.apis)


def _wait_healthy(url: str, api: ServiceProcess, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if api.process.poll() is not None:
            pytest.fail(f"fopro serve exited early:\n{api.log_tail()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail(f"fopro serve not healthy after {timeout_s} s:\n{api.log_tail()}")


@pytest.fixture(scope="module", params=["production", "embedded"])
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    root: Path = tmp_path_factory.mktemp(f"quotas-{request.param}")
    env = {
        "FOPRO_ENV": "test",
        "FOPRO_DATA_DIR": str(root / "fopro"),
        "FOPRO_RATE_LIMIT": f"{RATE}/minute",
    }
    with ExitStack() as stack:
        if request.param == "production":
            redis_url = stack.enter_context(temporary_redis_db())
            env |= {
                "FOPRO_DATABASE_URL": stack.enter_context(temporary_postgres_database()),
                "FOPRO_BROKER_URL": redis_url,
                "FOPRO_RESULT_BACKEND": redis_url,
            }
        settings = Settings(**{k.removeprefix("FOPRO_").lower(): v for k, v in env.items()})
        settings.ensure_dirs()
        upgrade(settings.database_url)
        engine = make_engine(settings.database_url)
        stack.callback(engine.dispose)
        session = stack.enter_context(Session(engine, expire_on_commit=False))
        apis, urls = [], []
        for number in range(2):
            port = free_port()
            api = ServiceProcess.start(
                ["serve", "--host", "127.0.0.1", "--port", str(port)],
                env,
                root / f"api{number}.log",
            )
            stack.callback(api.stop)
            apis.append(api)
            urls.append(f"http://127.0.0.1:{port}")
        for url, api in zip(urls, apis, strict=True):
            _wait_healthy(url, api)
        yield Deployment(request.param, settings, env, session, urls, apis)
