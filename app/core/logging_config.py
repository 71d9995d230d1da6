"""How every process logs: one JSON object per line on stderr, naming the request and the job.

``fopro serve`` hands ``api_log_config()`` to uvicorn, which applies it before it loads the app,
so uvicorn's access and error lines and the service's own loggers share the format. Celery
workers apply ``worker_log_config()`` from its ``setup_logging`` signal (``workers.celery_app``)
and each training child applies it again for its one job.

Every line has ``timestamp``, ``level``, ``logger``, ``message``, ``request_id`` and ``job_id``
(``-`` when unknown), plus ``exc_info`` for an exception: a log shipper needs no parsing rules.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

# Fields of each line, in order; python-json-logger takes them from a %-style format.
JSON_FIELDS = ("asctime", "levelname", "name", "message", "request_id", "job_id")
RENAMED = {"asctime": "timestamp", "levelname": "level", "name": "logger"}
UNKNOWN = "-"

_job_id: ContextVar[str | None] = ContextVar("fopro_job_id", default=None)
# In a worker: the id of the HTTP request that sent the task being run, if one did.
_task_request_id: ContextVar[str | None] = ContextVar("fopro_task_request_id", default=None)


def set_task_request_id(request_id: str | None) -> None:
    """Lines logged from now on in this context name ``request_id`` (the request that sent the
    task about to run; None for one sent outside a request)."""
    _task_request_id.set(request_id)


@contextmanager
def job_log_context(job_id: str) -> Iterator[None]:
    """Lines logged inside the block (this thread or task) carry ``job_id``."""
    token = _job_id.set(job_id)
    try:
        yield
    finally:
        _job_id.reset(token)


class JobIdFilter(logging.Filter):
    """Sets ``record.job_id``: the job of the enclosing ``job_log_context``, else the filter's
    ``job_id`` (a training process runs exactly one job), else ``-``. Records no request filter
    saw get the request id of the task being run (``set_task_request_id``) or ``-``, so every
    line has both fields."""

    def __init__(self, job_id: str | None = None) -> None:
        super().__init__()
        self.job_id = job_id

    def filter(self, record: logging.LogRecord) -> bool:
        record.job_id = _job_id.get() or self.job_id or UNKNOWN
        if not hasattr(record, "request_id"):
            record.request_id = _task_request_id.get() or UNKNOWN
        return True


def _config(filters: dict[str, dict[str, Any]], level: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` mapping: records at ``level`` or above, from any logger,
    to stderr as JSON after ``filters``."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        # Strings, resolved when applied: importing this module needs neither API nor worker.
        "filters": filters,
        "formatters": {
            "json": {
                "()": "pythonjsonlogger.json.JsonFormatter",
                "format": " ".join(f"%({name})s" for name in JSON_FIELDS),
                "rename_fields": RENAMED,
            }
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "json",
                "filters": list(filters),
            }
        },
        # Loggers left unconfigured (uvicorn's, Celery's) propagate here.
        "root": {"handlers": ["stderr"], "level": level.upper()},
    }


def api_log_config() -> dict[str, Any]:
    """The API's logging: each line names the request it was written for (``X-Request-ID``)."""
    return _config(
        {
            "request_id": {"()": "app.core.request_id.RequestIdFilter"},
            "job_id": {"()": "app.core.logging_config.JobIdFilter"},
        },
        "INFO",
    )


def worker_log_config(level: str = "INFO", job_id: str | None = None) -> dict[str, Any]:
    """A worker's logging; ``job_id`` for a process that only ever runs that job."""
    job_filter = {"()": "app.core.logging_config.JobIdFilter", "job_id": job_id}
    return _config({"job_id": job_filter}, level)
