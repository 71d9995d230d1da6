"""The ping task: a round-trip check for tests and operators."""

from __future__ import annotations

import os
import socket

from app.core.queue import TaskName
from workers.celery_app import celery_app


@celery_app.task(name=TaskName.ping.value)
def ping(payload: str) -> dict[str, str | int]:
    """Round-trip check used by readiness probes and tests: echoes the payload with who ran it."""
    return {"echo": payload, "host": socket.gethostname(), "pid": os.getpid()}
