"""Worker and training-process log lines: one JSON object each, naming the job they are about."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest

SCRIPT = textwrap.dedent(
    """
    import logging, logging.config
    from app.core.logging_config import job_log_context, worker_log_config
    logging.config.dictConfig(worker_log_config("INFO", job_id=JOB))
    log = logging.getLogger("fopro.test")
    log.debug("hidden below INFO")
    log.info("outside")
    with job_log_context("job_inner"):
        log.warning("inside %s", "the block")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("it failed")
    """
)


def log_lines(job: str | None) -> list[dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-c", f"JOB = {job!r}\n{SCRIPT}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [json.loads(line) for line in done.stderr.splitlines()]


def test_each_line_is_one_json_object_with_the_job_of_its_context() -> None:
    lines = log_lines(None)

    assert [line["message"] for line in lines] == ["outside", "inside the block", "it failed"]
    assert [line["job_id"] for line in lines] == ["-", "job_inner", "job_inner"]
    assert all(line["request_id"] == "-" for line in lines)
    assert [line["level"] for line in lines] == ["INFO", "WARNING", "ERROR"]
    assert all(line["logger"] == "fopro.test" and line["timestamp"] for line in lines)
    assert "ValueError: boom" in lines[2]["exc_info"]  # the traceback stays inside the object


def test_a_training_process_names_its_one_job_on_every_line() -> None:
    lines = log_lines("job_child")
    assert [line["job_id"] for line in lines] == ["job_child", "job_inner", "job_inner"]


def test_a_task_sent_while_serving_a_request_carries_its_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from app.core import queue, request_id

    captured: dict[str, Any] = {}

    class Recorder:
        def send_task(self, name: str, **options: Any) -> Any:
            captured.update(options)
            return type("Result", (), {"id": "t-1"})()

    monkeypatch.setattr(queue, "get_celery", lambda: Recorder())
    monkeypatch.setattr(request_id, "current_request_id", lambda: "rid-7")
    queue.send(queue.TaskName.ping, "x")
    assert captured["headers"] == {"request_id": "rid-7"}

    monkeypatch.setattr(request_id, "current_request_id", lambda: None)
    queue.send(queue.TaskName.ping, "x")
    assert captured["headers"] is None
