"""SIGTERM to `fopro up` (what a service manager sends) while it trains a job: every child
stops within the grace time, and the job goes back to the queue instead of being lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from app.core.config import get_settings
from app.core.db import get_sessionmaker
from app.core.migrate import upgrade
from app.core.storage import open_object_store
from app.jobs.models import Job
from app.teams.models import Role
from fopro.local_service import STOP_GRACE_S
from tests.conftest import free_port
from tests.faults.conftest import METHOD
from tests.integration.jobs.conftest import TEST_PARAMS
from tests.support.service import configure_service, reset_service_caches
from tests.unit.jobs.ready_dataset import auth, make_team_key, put_ready_dataset

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]


def still_running(session: int, wait_s: float = 5.0) -> list[str]:
    """Processes left in ``session`` (pid and command) after up to ``wait_s``: a child's helper
    (multiprocessing's resource tracker) may take a moment to notice its parent is gone."""
    deadline = time.monotonic() + wait_s
    while True:
        found = subprocess.run(
            ["ps", "-o", "pid=,args=", "-s", str(session)],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.splitlines()
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_sigterm_to_fopro_up_stops_every_child_in_the_grace_time_and_requeues_its_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "fopro"
    # The embedded deployment's files: this process writes the team and dataset into them.
    configure_service(monkeypatch, data_dir, lease_seconds="120", heartbeat_seconds="1")
    upgrade(get_settings().database_url)
    with get_sessionmaker()() as session:
        team_id, key = make_team_key(session, Role.admin)
        dataset = put_ready_dataset(
            session, open_object_store(get_settings()), team_id, per_class=6
        )
    port = free_port()
    env = {
        **os.environ,
        "FOPRO_DATA_DIR": str(data_dir),
        "FOPRO_ENV": "test",
        "FOPRO_LEASE_SECONDS": "120",
        "FOPRO_HEARTBEAT_SECONDS": "1",
    }
    log_path = tmp_path / "up.log"
    with log_path.open("wb") as log:
        up = subprocess.Popen(
            [sys.executable, "-m", "fopro", "up", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert up.poll() is None, log_path.read_text()[-3000:]
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.5)
        body = {
            "dataset_id": dataset.id,
            "teacher": "resnet18",
            "student": "resnet18",
            "method": METHOD,
            "params": {**TEST_PARAMS, "epochs": 200},
        }
        created = httpx.post(f"{url}/v1/jobs", json=body, headers=auth(key), timeout=30)
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]
        deadline = time.monotonic() + 180
        while httpx.get(f"{url}/v1/jobs/{job_id}", headers=auth(key)).json()["phase"] != (
            "training"
        ):
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.5)

        asked = time.monotonic()
        up.send_signal(signal.SIGTERM)
        returncode = up.wait(timeout=STOP_GRACE_S + 15)
        took = time.monotonic() - asked
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()
    output = log_path.read_text(errors="replace")
    assert returncode == 0, output[-3000:]
    assert took < STOP_GRACE_S, f"fopro up took {took:.1f} s to stop"
    assert still_running(session=up.pid) == [], "children outlived fopro up"
    with get_sessionmaker()() as session:
        status, attempt = session.execute(
            select(Job.status, Job.attempt).where(Job.id == job_id)
        ).one()
    assert (status, attempt) == ("queued", 1), "the stopped run's job waits for the next start"
    reset_service_caches()
