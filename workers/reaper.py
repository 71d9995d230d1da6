"""Running the reaper: a thread in every worker, and the ``reap_jobs`` task for Celery beat.

Choice: every worker runs ``reap_expired_leases`` in a background thread every
``heartbeat_seconds``, because the embedded deployment has no beat and a cluster must not depend
on one special process to recover from lost workers (any surviving worker recovers them; a
restarted worker sweeps at once). The sweep is idempotent and guarded, so many reapers at once
are safe. ``fopro worker --beat`` additionally schedules the ``reap_jobs`` task, for deployments
that prefer one scheduled reaper they can watch in Flower.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from typing import Any

from celery.signals import worker_ready, worker_shutdown

from app.audit.service import purge_expired
from app.core.config import get_settings
from app.core.db import session_scope
from app.core.queue import Queue, TaskName, queue_depths
from app.core.storage import open_object_store
from app.datasets.service import expire_direct_uploads
from app.jobs.reaper import ReapReport, reap_expired_leases
from workers.celery_app import celery_app
from workers.training import sweep_run_dirs

log = logging.getLogger("fopro.reaper")

_stop = threading.Event()


def sweep() -> ReapReport:
    """One reaper pass in its own transaction(s); then this machine's dead runs' scratch,
    direct uploads never completed, and audit records past their retention."""
    settings = get_settings()
    with session_scope() as session:
        report = reap_expired_leases(
            session,
            resend_after=timedelta(seconds=settings.resend_after_seconds),
            waiting_messages=lambda: queue_depths()[Queue.gpu],
        )
    if report.requeued or report.failed or report.cancelled:
        log.warning("reaper: %s", report)
    with session_scope() as session:
        removed = sweep_run_dirs(session, settings)
    if removed:
        log.warning("reaper: removed scratch of finished runs: %s", [p.name for p in removed])
    with session_scope() as session:
        expired = expire_direct_uploads(session, open_object_store(settings))
    if expired:
        log.warning("reaper: expired direct uploads never completed: %s", expired)
    with session_scope() as session:
        purged = purge_expired(session, settings.audit_retention_days)
    if purged:
        log.info("reaper: purged %d audit records past FOPRO_AUDIT_RETENTION_DAYS", purged)
    return report


@celery_app.task(name=TaskName.reap_jobs.value)
def reap_jobs() -> dict[str, list[str]]:
    """The beat-scheduled sweep; returns job ids per action."""
    report = sweep()
    return {
        "requeued": report.requeued,
        "failed": report.failed,
        "cancelled": report.cancelled,
        "sent": report.sent,
    }


def reap_forever(interval_s: float, stop: threading.Event) -> None:
    """Sweep every ``interval_s`` seconds until ``stop`` is set; errors are logged, not fatal."""
    while True:
        try:
            sweep()
        except Exception:  # a DB or broker hiccup must not kill the thread: try again later
            log.warning("reaper sweep failed", exc_info=True)
        if stop.wait(interval_s):
            return


@worker_ready.connect
def _start_reaper(**_: Any) -> None:
    _stop.clear()
    interval = float(get_settings().heartbeat_seconds)
    threading.Thread(
        target=reap_forever, args=(interval, _stop), name="fopro-reaper", daemon=True
    ).start()


@worker_shutdown.connect
def _stop_reaper(**_: Any) -> None:
    _stop.set()
