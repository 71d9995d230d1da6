"""A real `fopro worker` process round-trips a task over Redis and the embedded SQLite broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery

from app.core.config import Settings
from app.core.queue import TaskName, make_celery

pytestmark = pytest.mark.integration


@pytest.fixture(params=["redis", "sqlite"])
def broker_env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    env = {"FOPRO_ENV": "test", "FOPRO_DATA_DIR": str(tmp_path / "fopro")}
    if request.param == "redis":
        redis_url = str(request.getfixturevalue("redis_url"))
        env["FOPRO_BROKER_URL"] = redis_url
        env["FOPRO_RESULT_BACKEND"] = redis_url
    return env


@pytest.fixture
def worker(broker_env: dict[str, str]) -> Iterator[Celery]:
    env = {**os.environ, **broker_env}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fopro", "worker", "--queues", "cpu,gpu", "--loglevel", "warning"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    settings = Settings(**{k.removeprefix("FOPRO_").lower(): v for k, v in broker_env.items()})
    try:
        yield make_celery(settings)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.returncode not in (0, -signal.SIGTERM):
            output = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            pytest.fail(f"worker exited with {proc.returncode}:\n{output[-3000:]}")


def test_worker_round_trips_a_task(worker: Celery) -> None:
    result = worker.send_task(TaskName.ping.value, args=["hello"])
    reply = result.get(timeout=60)
    assert reply["echo"] == "hello"
    assert reply["pid"] != os.getpid()
