"""Real deployments for job tests: the API in-process, `fopro worker` processes beside it.

``production``: PostgreSQL + Redis broker + SeaweedFS S3. ``embedded``: the zero-server defaults
(SQLite database and broker, local object directory). Leases are short (5 s, heartbeat 1 s) so a
killed worker's job is reaped within seconds.
"""

from __future__ import annotations

import secrets
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.core.config import get_settings
from app.core.db import get_sessionmaker
from app.core.migrate import upgrade
from app.core.storage import ObjectStore, open_object_store
from app.teams.models import Role
from tests.support.processes import ServiceProcess
from tests.support.seaweed import S3Server
from tests.support.service import configure_service, reset_service_caches
from tests.unit.jobs.ready_dataset import auth, make_team_key, put_ready_dataset

TERMINAL = {"succeeded", "failed", "cancelled"}
# Tiny but real: random-weight resnet18 teacher and student on 32x32 textures (test-only switch).
TEST_PARAMS: dict[str, Any] = {
    "batch_size": 8,
    "image_size": 32,
    "seed": 1,
    "allow_random_weights": True,
}


@dataclass
class Deployment:
    """A configured service: the FOPRO_ environment its workers get, and the in-process API."""

    name: str
    env: dict[str, str]
    client: TestClient
    store: ObjectStore
    key: str
    dataset_id: str
    log_dir: Path
    workers: list[WorkerProcess] = field(default_factory=list)
    # Parameters of every job this deployment submits, over TEST_PARAMS (a call's win).
    default_params: dict[str, Any] = field(default_factory=dict)

    def start_worker(self) -> WorkerProcess:
        worker = WorkerProcess.start_worker(self.env, self.log_dir, len(self.workers))
        self.workers.append(worker)
        return worker

    def submit(
        self,
        epochs: int,
        *,
        method: str | None = None,
        random_weights: bool = True,
        params: dict[str, Any] | None = None,
        **headers: str,
    ) -> Any:
        """POST a resnet18 → resnet18 job; ``random_weights=False`` needs installed weights;
        ``params`` override the test defaults."""
        params = {
            **TEST_PARAMS,
            **self.default_params,
            "epochs": epochs,
            "allow_random_weights": random_weights,
            **(params or {}),
        }
        body: dict[str, Any] = {
            "dataset_id": self.dataset_id,
            "teacher": "resnet18",
            "student": "resnet18",
            "params": params,
        }
        if method is not None:
            body["method"] = method
        response = self.client.post("/v1/jobs", json=body, headers={**auth(self.key), **headers})
        assert response.status_code in (200, 201), response.text
        return response

    def get(self, path: str) -> Any:
        response = self.client.get(f"/v1/jobs{path}", headers=auth(self.key))
        assert response.status_code == 200, response.text
        return response.json()

    def post(self, path: str) -> Any:
        return self.client.post(f"/v1/jobs{path}", headers=auth(self.key))

    def events(self, job_id: str) -> list[dict[str, Any]]:
        return list(self.get(f"/{job_id}/events?limit=1000")["items"])

    def wait_for(
        self, job_id: str, done: Callable[[dict[str, Any]], bool], timeout_s: float, what: str
    ) -> dict[str, Any]:
        """Poll the job until ``done(job)``; on timeout fail with the job, events and logs."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            job = self.get(f"/{job_id}")
            if done(job):
                return dict(job)
            if job["status"] in TERMINAL:
                break
            time.sleep(0.25)
        pytest.fail(
            f"[{self.name}] job never {what}: {job}\nevents: "
            f"{[e['message'] for e in self.events(job_id)]}\n{self.worker_logs()}"
        )

    def wait_terminal(self, job_id: str, timeout_s: float = 180) -> dict[str, Any]:
        return self.wait_for(job_id, lambda j: j["status"] in TERMINAL, timeout_s, "finished")

    def worker_logs(self) -> str:
        return "\n".join(w.log_tail() for w in self.workers)


@dataclass
class WorkerProcess(ServiceProcess):
    """One `fopro worker --queues cpu,gpu` subprocess with its own log file."""

    @classmethod
    def start_worker(cls, env: dict[str, str], log_dir: Path, number: int) -> WorkerProcess:
        name = f"test-{number}-{secrets.token_hex(3)}@localhost"
        args = ["worker", "--queues", "cpu,gpu", "--loglevel", "info", "--name", name]
        started = cls.start(args, env, log_dir / f"worker-{number}.log")
        return cls(started.process, started.log_path)

    @property
    def pid(self) -> int:
        return self.process.pid

    def trainers(self) -> list[int]:
        """Pids of this worker's training children: named ``fopro-train``, forked by the
        worker's forkserver (so the worker's grandchildren), never its probe or helpers."""
        found = []
        for proc in Path("/proc").glob("[0-9]*"):
            stat = _stat(int(proc.name))
            if stat is not None and stat[0] == "fopro-train" and self.pid in _ancestors(stat[1]):
                found.append(int(proc.name))
        return found

    def kill9(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)


def _stat(pid: int) -> tuple[str, int] | None:
    """``(command name, parent pid)`` of a process from ``/proc/PID/stat``; None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name, rest = text.split("(", 1)[1].rsplit(")", 1)
    return name, int(rest.split()[1])


def _ancestors(pid: int) -> list[int]:
    """``pid`` and the pids above it, up to init."""
    chain = []
    while pid > 1 and len(chain) < 64:
        chain.append(pid)
        stat = _stat(pid)
        if stat is None:
            break
        pid = stat[1]
    return chain


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) process."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def all_exited(pids: list[int], timeout_s: float = 10) -> bool:
    """Wait up to ``timeout_s`` for every process in ``pids`` to exit; whether they all did."""
    deadline = time.monotonic() + timeout_s
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not any(pid_alive(p) for p in pids)


@pytest.fixture(params=["production", "embedded"])
def deployment(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Deployment]:
    env = {
        "FOPRO_ENV": "test",
        "FOPRO_DATA_DIR": str(tmp_path / "fopro"),
        "FOPRO_LEASE_SECONDS": "5",
        "FOPRO_HEARTBEAT_SECONDS": "1",
    }
    if request.param == "production":
        redis_url = str(request.getfixturevalue("redis_url"))
        s3: S3Server = request.getfixturevalue("s3_server")
        env |= {
            "FOPRO_DATABASE_URL": str(request.getfixturevalue("pg_url")),
            "FOPRO_BROKER_URL": redis_url,
            "FOPRO_RESULT_BACKEND": redis_url,
            "FOPRO_STORAGE_URL": f"s3://{s3.bucket}/jobs-{secrets.token_hex(4)}",
            "FOPRO_S3_ENDPOINT": s3.endpoint,
            "FOPRO_S3_ACCESS_KEY": s3.access_key,
            "FOPRO_S3_SECRET_KEY": s3.secret_key,
            "FOPRO_S3_REGION": s3.region,
        }
    configure_service(
        monkeypatch,
        tmp_path / "fopro",
        **{k.removeprefix("FOPRO_").lower(): v for k, v in env.items() if k != "FOPRO_DATA_DIR"},
    )
    settings = get_settings()
    upgrade(settings.database_url)
    store = open_object_store(settings)
    with get_sessionmaker()() as session:
        team_id, key = make_team_key(session, Role.admin)
        # 4 classes x (4 train, 1 val, 1 test): two training steps per epoch at batch 8.
        dataset = put_ready_dataset(session, store, team_id, per_class=6)
    from app.main import app

    with TestClient(app, raise_server_exceptions=False) as client:
        deployed = Deployment(
            name=request.param,
            env=env,
            client=client,
            store=store,
            key=key,
            dataset_id=dataset.id,
            log_dir=tmp_path,
        )
        try:
            yield deployed
        finally:
            for worker in deployed.workers:
                worker.stop()
    reset_service_caches()
