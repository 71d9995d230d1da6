"""A live service for the client and the CLI: `fopro serve` plus a cpu and a gpu `fopro worker`
as processes, as `fopro up` runs them; one set per deployment, shared by this folder's modules,
with one walk from an archive to a trained student (``journey``) that both modules inspect.

``production``: PostgreSQL + Redis broker + SeaweedFS S3 (own database, Redis DB number and key
prefix). ``embedded``: SQLite database and broker, local object directory. The team has an admin
key (jobs here train from random weights, an admin-only test switch) and a viewer key.
"""

from __future__ import annotations

import secrets
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.db import make_engine
from app.core.migrate import upgrade
from app.teams.models import Role
from app.teams.service import create_api_key, create_team
from fopro_client import Dataset, FoproClient, Job, JobUpdate, RetryPolicy
from foprokd.synthetic import (
    SampleDataset,
    encode_image,
    sample_dataset,
    texture_image,
    write_archive,
)
from tests.conftest import free_port
from tests.integration.jobs.conftest import TEST_PARAMS
from tests.support.databases import temporary_postgres_database, temporary_redis_db
from tests.support.processes import ServiceProcess
from tests.support.seaweed import S3Server

# One epoch of a plain supervised student: the client is under test here, not the engine.
JOB: dict[str, Any] = {
    "teacher": "resnet18",
    "student": "resnet18",
    "method": "ce",
    "params": {**TEST_PARAMS, "epochs": 1},
}
STARTUP_TIMEOUT_S = 90.0


@dataclass
class Live:
    """A running API and its workers, with keys of one fresh team."""

    name: str
    url: str
    key: str
    viewer_key: str
    root: Path
    processes: list[ServiceProcess]

    def client(self, key: str | None = None) -> FoproClient:
        # Few, short retries: a failure should show up as itself, not after long backoff.
        return FoproClient(
            self.url, key or self.key, retry=RetryPolicy(attempts=3, base_delay_s=0.2)
        )

    def logs(self) -> str:
        return "\n".join(p.log_tail() for p in self.processes)


def wait_until_ready(url: str, processes: list[ServiceProcess]) -> None:
    """Poll ``/readyz`` (database, broker and store answer) or fail with the logs."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if any(p.process.poll() is not None for p in processes):
            break
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    pytest.fail("the live service did not come up:\n" + "\n".join(p.log_tail() for p in processes))


def stop_all(processes: list[ServiceProcess]) -> None:
    """Ask every process to stop at once, then wait for each (a worker's warm shutdown takes
    seconds; one after the other they add up)."""
    for process in processes:
        if process.process.poll() is None:
            process.process.send_signal(signal.SIGTERM)
    for process in processes:
        process.stop()


@pytest.fixture(scope="package", params=["production", "embedded"])
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    root = tmp_path_factory.mktemp(f"client-{request.param}")
    env = {"FOPRO_ENV": "test", "FOPRO_DATA_DIR": str(root / "fopro")}
    with ExitStack() as stack:
        if request.param == "production":
            s3: S3Server = request.getfixturevalue("s3_server")
            redis_url = stack.enter_context(temporary_redis_db())
            env |= {
                "FOPRO_DATABASE_URL": stack.enter_context(temporary_postgres_database()),
                "FOPRO_BROKER_URL": redis_url,
                "FOPRO_RESULT_BACKEND": redis_url,
                "FOPRO_STORAGE_URL": f"s3://{s3.bucket}/client-{secrets.token_hex(4)}",
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
        with Session(engine) as session:
            team = create_team(session, f"client-{secrets.token_hex(4)}")
            _, key = create_api_key(session, team, Role.admin, settings.secret_key)
            _, viewer_key = create_api_key(session, team, Role.viewer, settings.secret_key)
            session.commit()
        port = free_port()
        processes = [
            ServiceProcess.start(
                ["serve", "--host", "127.0.0.1", "--port", str(port)], env, root / "api.log"
            ),
            *(
                ServiceProcess.start(
                    ["worker", "--queues", queue, "--name", f"{queue}-{secrets.token_hex(3)}@test"],
                    env,
                    root / f"worker-{queue}.log",
                )
                for queue in ("cpu", "gpu")
            ),
        ]
        stack.callback(stop_all, processes)
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(url, processes)
        yield Live(request.param, url, key, viewer_key, root, processes)


@dataclass
class Journey:
    """What one walk from an archive to predictions saw."""

    archive: Path
    classes: list[str]
    num_images: int
    uploaded: list[tuple[str, int, int]]
    dataset: Dataset
    job: Job
    repeat: Job
    updates: list[JobUpdate]
    finished: Job
    downloads: list[Path]
    images: list[Path]


@pytest.fixture(scope="package")
def client(live: Live) -> Iterator[FoproClient]:
    with live.client() as made:
        yield made


@pytest.fixture(scope="package")
def journey(live: Live, client: FoproClient, tmp_path_factory: pytest.TempPathFactory) -> Journey:
    folder = tmp_path_factory.mktemp(f"journey-{live.name}")
    archive, sample = sample_archive(folder / "derm-2026.zip")
    uploaded: list[tuple[str, int, int]] = []
    created = client.upload_dataset(
        archive, split_seed=3, progress=lambda *report: uploaded.append(report)
    )
    dataset = client.wait_ready(created.id, timeout_s=90, poll_s=0.3)
    key = f"journey-{secrets.token_hex(4)}"
    job = client.submit_job(dataset.id, **JOB, idempotency_key=key)
    repeat = client.submit_job(dataset.id, **JOB, idempotency_key=key)
    updates = list(client.watch(job.id))
    finished = client.get_job(job.id)
    assert finished.status == "succeeded", (finished, live.logs())
    downloads = client.download_artifacts(job.id, folder / "student")
    rng = np.random.default_rng(7)
    images = [folder / f"query-{index}.png" for index in range(2)]
    for index, path in enumerate(images):
        path.write_bytes(encode_image(texture_image(index, len(sample.classes), rng, 40)))
    return Journey(
        archive,
        sample.classes,
        sample.num_images,
        uploaded,
        dataset,
        job,
        repeat,
        updates,
        finished,
        downloads,
        images,
    )


def sample(seed: int = 1) -> SampleDataset:
    """Three long-tailed classes of 32 px textures (8, 6 and 4 images)."""
    return sample_dataset(classes=3, head=8, imbalance=2, size=32, seed=seed)


def sample_archive(path: Path, seed: int = 1) -> tuple[Path, SampleDataset]:
    dataset = sample(seed)
    return write_archive(path, dataset.members, "zip"), dataset
