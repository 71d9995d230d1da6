"""A worker's own Prometheus metrics, served on its HTTP port (``fopro worker --metrics-port``).

What only the worker knows: tasks it ran and how they ended, when its supervisor last renewed a
lease, and dataset validation throughput (archive entries checked per second of validation).
The job system as a whole (jobs by state, queue depth, lease ages, training images/s) comes from
the API's ``/metrics``, read from the database, so it stays right when a worker dies.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery.signals import task_postrun, worker_ready
from prometheus_client import Counter, Gauge, start_http_server

from app.core.config import get_settings

log = logging.getLogger("fopro.metrics")

TASKS = Counter("fopro_worker_tasks", "Celery tasks this worker finished.", ["task", "state"])
LEASE_RENEWED = Gauge(
    "fopro_worker_lease_renewed_timestamp_seconds",
    "Unix time of this worker's last successful heartbeat of a running job's lease.",
)
VALIDATED_ENTRIES = Counter(
    "fopro_dataset_validation_entries", "Archive entries checked by dataset validations."
)
VALIDATION_SECONDS = Counter(
    "fopro_dataset_validation_seconds", "Seconds spent validating dataset archives."
)


def lease_renewed() -> None:
    """Record a successful heartbeat now."""
    LEASE_RENEWED.set(time.time())


def validation_done(entries: int, seconds: float) -> None:
    """Count one finished validation of ``entries`` archive entries that took ``seconds``."""
    VALIDATED_ENTRIES.inc(entries)
    VALIDATION_SECONDS.inc(seconds)


@task_postrun.connect
def _count_task(task: Any = None, state: str | None = None, **_: Any) -> None:
    TASKS.labels(getattr(task, "name", "unknown"), state or "UNKNOWN").inc()


@worker_ready.connect
def _serve_metrics(**_: Any) -> None:
    port = get_settings().worker_metrics_port
    if port:
        start_http_server(port, addr=get_settings().worker_metrics_host)
        log.info("worker metrics on http://%s:%s/metrics", get_settings().worker_metrics_host, port)
