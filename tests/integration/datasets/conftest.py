"""Real deployments for dataset tests: `fopro serve` and `fopro worker --queues cpu` as processes.

``s3``: PostgreSQL + Redis broker + SeaweedFS S3 (own database and Redis DB number, own key
prefix in the session's bucket). ``embedded``: SQLite database and broker, local object directory.
One API and one worker per backend for the whole module; limits are small so that attacks stay
tiny archives.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.db import make_engine
from app.core.migrate import upgrade
from app.core.storage import ObjectStore, open_object_store
from app.teams.models import Role
from app.teams.service import create_api_key, create_team
from tests.conftest import free_port
from tests.support.databases import temporary_postgres_database, temporary_redis_db
from tests.support.processes import ServiceProcess
from tests.support.seaweed import S3Server

LIMITS = {
    "FOPRO_MAX_UPLOAD_BYTES": str(4_000_000),
    "FOPRO_MAX_FILE_BYTES": str(2_000_000),
    "FOPRO_MAX_IMAGE_PIXELS": str(1_000_000),
    "FOPRO_MAX_COMPRESSION_RATIO": "50",
    "FOPRO_MAX_IMAGES": "1000",
}
SETTLED = {"ready", "invalid"}


@dataclass
class Deployment:
    """A running API + worker pair, an API key of a fresh team, and the store they share."""

    name: str
    settings: Settings
    base_url: str
    store: ObjectStore
    session: Session
    team_id: str
    key: str
    api: ServiceProcess
    worker: ServiceProcess

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        with httpx.Client(base_url=self.base_url, timeout=60) as client:
            return client.request(
                method, path, headers={**self.headers, **(headers or {})}, **kwargs
            )

    def upload(
        self, data: bytes, name: str, filename: str = "data.zip", **fields: str
    ) -> httpx.Response:
        return self.request(
            "POST",
            "/v1/datasets",
            data={"name": name, **fields},
            files={"file": (filename, data, "application/octet-stream")},
        )

    def settle(self, dataset_id: str, timeout_s: float = 90) -> dict[str, Any]:
        """Poll the dataset until the worker made it ready or invalid."""
        deadline = time.monotonic() + timeout_s
        body: dict[str, Any] = {}
        while time.monotonic() < deadline:
            body = self.request("GET", f"/v1/datasets/{dataset_id}").json()
            if body.get("status") in SETTLED:
                return body
            time.sleep(0.3)
        pytest.fail(f"[{self.name}] dataset never settled: {body}\n{self.logs()}")

    def upload_and_settle(
        self, data: bytes, filename: str = "data.zip", **fields: str
    ) -> dict[str, Any]:
        response = self.upload(data, f"ds-{secrets.token_hex(4)}", filename, **fields)
        assert response.status_code == 202, response.text
        return self.settle(response.json()["id"])

    def objects(self, dataset_id: str) -> list[str]:
        prefix = f"teams/{self.team_id}/datasets/{dataset_id}/"
        return [info.key for info in self.store.list(prefix)]

    def logs(self) -> str:
        return f"{self.api.log_tail()}\n{self.worker.log_tail()}"


def _wait_healthy(base_url: str, api: ServiceProcess, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if api.process.poll() is not None:
            pytest.fail(f"fopro serve exited early:\n{api.log_tail()}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail(f"fopro serve not healthy after {timeout_s} s:\n{api.log_tail()}")


@pytest.fixture(scope="module", params=["s3", "embedded"])
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp(f"datasets-{request.param}")
    env = {"FOPRO_ENV": "test", "FOPRO_DATA_DIR": str(root / "fopro"), **LIMITS}
    with ExitStack() as stack:
        if request.param == "s3":
            s3: S3Server = request.getfixturevalue("s3_server")
            redis_url = stack.enter_context(temporary_redis_db())
            env |= {
                "FOPRO_DATABASE_URL": stack.enter_context(temporary_postgres_database()),
                "FOPRO_BROKER_URL": redis_url,
                "FOPRO_RESULT_BACKEND": redis_url,
                "FOPRO_STORAGE_URL": f"s3://{s3.bucket}/datasets-{secrets.token_hex(4)}",
                "FOPRO_S3_ENDPOINT": s3.endpoint,
                "FOPRO_S3_ACCESS_KEY": s3.access_key,
                "FOPRO_S3_SECRET_KEY": s3.secret_key,
                "FOPRO_S3_REGION": s3.region,
            }
        settings = Settings(**{k.removeprefix("FOPRO_").lower(): v for k, v in env.items()})
        settings.ensure_dirs()
        upgrade(settings.database_url)
        engine = make_engine(settings.database_url)
        stack.callback(engine.dispose)
        session = stack.enter_context(Session(engine, expire_on_commit=False))
        team = create_team(session, f"datasets-{secrets.token_hex(4)}")
        _, key = create_api_key(session, team, Role.member, settings.secret_key)
        session.commit()
        port = free_port()
        api = ServiceProcess.start(
            ["serve", "--host", "127.0.0.1", "--port", str(port)], env, root / "api.log"
        )
        stack.callback(api.stop)
        worker = ServiceProcess.start(
            ["worker", "--queues", "cpu", "--name", f"ingest-{secrets.token_hex(3)}@localhost"],
            env,
            root / "worker.log",
        )
        stack.callback(worker.stop)
        base_url = f"http://127.0.0.1:{port}"
        _wait_healthy(base_url, api)
        yield Deployment(
            name=request.param,
            settings=settings,
            base_url=base_url,
            store=open_object_store(settings),
            session=session,
            team_id=team.id,
            key=key,
            api=api,
            worker=worker,
        )
