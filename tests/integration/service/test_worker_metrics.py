"""A `fopro worker --metrics-port` serves its own /metrics, and its task counter moves; its log
lines are JSON and name the request that sent the task."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.core.config import Settings
from app.core.queue import TaskName, make_celery
from tests.conftest import free_port
from tests.support.processes import ServiceProcess

pytestmark = pytest.mark.integration


def pings_done(url: str) -> float:
    text = httpx.get(url, timeout=5).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "fopro_worker_tasks_total"
        and sample.labels == {"task": TaskName.ping.value, "state": "SUCCESS"}
    )


def test_the_worker_counts_its_tasks_and_logs_the_request_that_sent_one(tmp_path: Path) -> None:
    env = {"FOPRO_ENV": "test", "FOPRO_DATA_DIR": str(tmp_path / "fopro")}
    port = free_port()
    worker = ServiceProcess.start(
        ["worker", "--queues", "cpu", "--metrics-port", str(port)], env, tmp_path / "worker.log"
    )
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert worker.process.poll() is None, worker.log_tail()
            try:
                before = pings_done(url)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, worker.log_tail()
                time.sleep(0.3)
        celery = make_celery(Settings(data_dir=tmp_path / "fopro"))
        for payload in ("a", "b"):
            assert celery.send_task(TaskName.ping.value, args=[payload]).get(timeout=60)
        # task_postrun fires just after the result is stored: give it a moment.
        deadline = time.monotonic() + 10
        while pings_done(url) < before + 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert pings_done(url) == before + 2

        # What app.core.queue.send adds while serving a request.
        sent = celery.send_task(TaskName.ping.value, args=["c"], headers={"request_id": "rid-42"})
        assert sent.get(timeout=60)
    finally:
        worker.stop()
    lines = [
        json.loads(line) for line in worker.log_path.read_text().splitlines() if line[:1] == "{"
    ]
    done = [line for line in lines if sent.id in line["message"] and "succeeded" in line["message"]]
    assert [line["request_id"] for line in done] == ["rid-42"], worker.log_tail()
