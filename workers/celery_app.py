"""The worker-side Celery app: the shared client configuration plus the task implementations.

Pool choice: run one worker process per GPU with ``--pool solo`` (``fopro worker`` does). The
solo pool executes tasks in the worker's main process, which never imports torch nor initialises
CUDA; a training task supervises training in a child forked from the worker's training forkserver
(``workers.training``), the only process that initialises CUDA.
Select the GPU per worker with ``CUDA_VISIBLE_DEVICES``. The ``cpu`` queue may use more processes.
"""

from __future__ import annotations

import logging
import logging.config
from typing import Any

from celery import Task
from celery.signals import setup_logging, task_prerun

from app.core.config import get_settings
from app.core.logging_config import set_task_request_id, worker_log_config
from app.core.queue import Queue, TaskName, make_celery

celery_app = make_celery(get_settings())
celery_app.conf.update(
    # Each module registers its tasks under the names in app.core.queue.TaskName.
    include=[
        "workers.ping",
        "workers.teacher_checks",
        "workers.ingest",
        "workers.training",
        "workers.reaper",
        "workers.metrics",
    ],
    worker_pool="solo",
    worker_concurrency=1,
    worker_send_task_events=True,
    task_send_sent_event=True,
)

# Only used by `fopro worker --beat`; every worker also reaps in a thread (workers/reaper.py).
celery_app.conf.beat_schedule = {
    "reap-jobs": {
        "task": TaskName.reap_jobs.value,
        "schedule": float(get_settings().heartbeat_seconds),
    }
}

ALL_QUEUES = ",".join(q.value for q in Queue)


@setup_logging.connect
def _json_logs(loglevel: int | str | None = None, **_: Any) -> None:
    """Celery's own handlers are replaced (a receiver here tells Celery not to install them):
    every line of the worker, Celery's included, is one JSON object."""
    level = loglevel if isinstance(loglevel, str) else logging.getLevelName(loglevel or 20)
    logging.config.dictConfig(worker_log_config(level))


@task_prerun.connect
def _name_the_request(task: Task | None = None, **_: Any) -> None:
    """Lines of a task sent while serving an HTTP request name that request (its header)."""
    request_id = getattr(task.request, "request_id", None) if task is not None else None
    set_task_request_id(request_id if isinstance(request_id, str) else None)
