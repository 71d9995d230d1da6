"""The Celery client as the API sees it: queue names, task names and one configured app.

The API only *sends* tasks by name, so it never imports the worker code (or torch). Workers build on
the same configuration in ``workers/celery_app.py`` and register the task implementations.
"""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from typing import Any

from celery import Celery
from kombu import Queue as KombuQueue
from kombu.exceptions import ChannelError

from app.core.config import Settings, get_settings


class Queue(StrEnum):
    """``cpu``: dataset ingest, exports, housekeeping; ``gpu``: one training job per worker."""

    cpu = "cpu"
    gpu = "gpu"


class TaskName(StrEnum):
    ping = "fopro.ping"
    validate_dataset = "fopro.datasets.validate"
    run_job = "fopro.jobs.run"
    reap_jobs = "fopro.jobs.reap"
    verify_teacher_weights = "fopro.teachers.verify_weights"


TASK_ROUTES: dict[str, dict[str, str]] = {
    TaskName.ping: {"queue": Queue.cpu},
    TaskName.validate_dataset: {"queue": Queue.cpu},
    TaskName.run_job: {"queue": Queue.gpu},
    TaskName.reap_jobs: {"queue": Queue.cpu},
    TaskName.verify_teacher_weights: {"queue": Queue.cpu},
}


def make_celery(settings: Settings) -> Celery:
    """A Celery app for ``settings``: JSON only, one task reserved at a time, queues declared."""
    if settings.broker_is_embedded:
        settings.ensure_dirs()
    celery = Celery("fopro", broker=settings.broker_url, backend=settings.result_backend)
    celery.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_queues=[KombuQueue(q.value, routing_key=q.value) for q in Queue],
        task_default_queue=Queue.cpu.value,
        task_routes=TASK_ROUTES,
        # A training task runs for hours: never let a worker reserve a second one behind it.
        worker_prefetch_multiplier=1,
        task_acks_late=False,
        task_track_started=True,
        result_expires=3600,
        broker_connection_retry_on_startup=True,
        task_queue_max_priority=9,
        task_default_priority=5,
        enable_utc=True,
        timezone="UTC",
    )
    if settings.broker_url.startswith(("redis://", "rediss://")):
        # Redis emulates priorities with one list per step; ask for all ten so 0..9 stay distinct.
        celery.conf.broker_transport_options = {
            "priority_steps": list(range(10)),
            "queue_order_strategy": "priority",
        }
    return celery


@lru_cache
def get_celery() -> Celery:
    """The process-wide Celery client configured from the environment."""
    return make_celery(get_settings())


BROKER_TIMEOUT_S = 2


def queue_depths(celery: Celery | None = None) -> dict[Queue, int]:
    """Messages waiting in each queue (every priority level summed; messages a worker already
    took are not counted). A queue no worker has declared yet holds none. Raises the broker's
    error when it is unreachable."""
    depths: dict[Queue, int] = {}
    with (celery or get_celery()).connection_for_read() as conn:
        conn.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT_S)
        channel: Any = conn.default_channel  # kombu types it as StdChannel, without queue_declare
        for queue in Queue:
            try:
                declared = channel.queue_declare(queue=queue.value, passive=True)
            except ChannelError:  # not declared yet (no worker consumed it): nothing waits
                depths[queue] = 0
                continue
            depths[queue] = int(declared.message_count)
    return depths


def send(task: TaskName, *args: Any, priority: int | None = None) -> str:
    """Send ``task`` to its queue by name; returns the Celery task id. Sent while serving a
    request, the message carries its id (header ``request_id``): the worker's lines name it."""
    rid = _current_request_id()
    result = get_celery().send_task(
        task.value,
        args=list(args),
        priority=priority,
        headers={"request_id": rid} if rid else None,
    )
    return str(result.id)


def _current_request_id() -> str | None:
    try:
        from app.core.request_id import current_request_id
    except ImportError:  # a worker (no asgi-correlation-id) sends outside any request
        return None
    return current_request_id()
