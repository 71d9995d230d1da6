"""The ``run_job`` task: claim a job, supervise its training in a child process, keep the lease.

The worker process (solo pool, no CUDA, no torch) claims the job with a guarded UPDATE and starts
the training in a child forked from this worker's *training forkserver*
(``multiprocessing.get_context("forkserver")``). The forkserver is a clean single-threaded
process, started when the worker boots, that imports once what every run needs (the engine,
torch, timm, ONNX, onnxruntime, matplotlib: ``PRELOAD``) and never touches CUDA; a child forked
from it starts in milliseconds instead of re-importing all of it (``spawn`` cost about 15 s per
job on a 2-core machine), initialises CUDA itself, and frees all its GPU memory when it exits.
The worker waits for the forkserver to be warm before it consumes its first task. While the child
trains, this process heart-beats the lease every ``heartbeat_seconds``. It kills the child when

* the job's cancel was requested and the child has not stopped ``cancel_grace_seconds`` later,
* the lease is gone (the reaper gave the job away, or it finished elsewhere), or
* no heartbeat succeeded for a whole lease period (the database is unreachable: we cannot prove
  that we still hold the job, and the same job must never train in two places).

The child dies with this process: it holds the reading end of a pipe whose only writer is this
supervisor, and a watchdog thread blocked on it kills the child as soon as the pipe closes, which
the kernel does when the supervisor exits however it exits. So ``kill -9`` of the worker never
leaves a trainer behind; the lease then expires and the reaper requeues the job. A child that
dies on its own (OOM killer, segfault) leaves the job running under our lease: we requeue it, or
fail it once its attempts are spent, with a reason naming the signal.

A worker told to stop (SIGTERM or Ctrl-C: what ``docker stop`` and Kubernetes send) does not wait
for the run to end nor let its lease expire: Celery's warm shutdown announces itself
(``worker_shutting_down``), the supervisor passes SIGTERM to the child, which stops at its next
step boundary, saves a checkpoint of that step and puts the job back in the queue at once,
without counting an attempt. A child that does not stop within ``cancel_grace_seconds`` is killed
and the supervisor requeues the job itself.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from celery.signals import celeryd_after_setup, worker_shutdown, worker_shutting_down
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.config import Settings, get_settings
from app.core.db import session_scope, utcnow
from app.core.logging_config import job_log_context
from app.core.queue import TaskName
from app.datasets.models import Dataset, DatasetStatus
from app.jobs.dispatch import enqueue_job, release_and_resend, requeue_and_resend
from app.jobs.lease import Heartbeat, claim_job, end_attempt, heartbeat, new_lease_owner
from app.jobs.models import Job, JobStatus
from app.jobs.state import TERMINAL, transition
from workers.celery_app import celery_app
from workers.child import probe_runtime, run_training
from workers.failures import describe_exit
from workers.metrics import lease_renewed

log = logging.getLogger("fopro.training")

# A child that has settled its job only cleans up; if it hangs there, it is killed.
FINISH_GRACE_S = 30.0
# The reaper leaves a run's scratch alone this long after its job changed state (see
# ``sweep_run_dirs``): by then its own supervisor has removed it, or is dead.
SWEEP_GRACE = timedelta(seconds=2 * FINISH_GRACE_S)
CHILD_POLL_S = 0.5
SHUTDOWN_REASON = "its worker is shutting down (SIGTERM)"

# Set once this worker begins its warm shutdown; the running supervisor winds its run down.
_draining = threading.Event()

# What the training forkserver imports once for every child: the run (app models, the engine,
# torch, timm) and what its export phase imports on first use (ONNX export and checks, INT8
# quantization, the model card's plots). A name that fails to import is skipped by
# multiprocessing; the child then imports it itself, slower but the same.
PRELOAD = (
    "workers.forkserver_init",  # first: the forkserver dies with its worker, even mid-import
    "workers.child",
    "workers.distillation",
    "torch.onnx",
    "onnx",
    "onnxruntime",
    "onnxruntime.quantization",
    "onnxruntime.quantization.shape_inference",
    "matplotlib.figure",
    "matplotlib.ticker",
    "matplotlib.backends.backend_agg",
)
_training = multiprocessing.get_context("forkserver")
_training.set_forkserver_preload(list(PRELOAD))


@celeryd_after_setup.connect
def _warm_training_runtime(**_: Any) -> None:
    """Start the training forkserver and wait until its imports are done, before this worker
    takes its first task: a job's child then starts at once, while its lease is fresh. A stop
    asked meanwhile (SIGTERM, Ctrl-C) ends the worker without leaving the forkserver behind."""
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        warm_training_runtime()
    except RuntimeError as exc:  # a worker that cannot train exits, so its supervisor sees it
        log.critical("%s; this worker stops", exc)
        stop_training_runtime()
        raise SystemExit(1) from exc
    except BaseException:
        stop_training_runtime()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


@worker_shutdown.connect
def _stop_training_runtime(**_: Any) -> None:
    stop_training_runtime()


def stop_training_runtime() -> None:
    """Stop this process's forkserver and multiprocessing's resource tracker and wait for both,
    so that a stopped worker leaves no process behind. The tracker lives as long as any child
    does, so it is left alone while one runs (a cold shutdown mid-task); that child and the
    tracker end when this process exits."""
    from multiprocessing import forkserver, resource_tracker

    # Private, and stable since Python 3.8: multiprocessing has no public way to stop them.
    server = forkserver._forkserver
    pid = getattr(server, "_forkserver_pid", None)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # it may be importing still; nothing else runs there
        server._stop()  # type: ignore[attr-defined]
    if not multiprocessing.active_children():  # else it would wait for them: they end with us
        resource_tracker._resource_tracker._stop()  # type: ignore[attr-defined]


def warm_training_runtime() -> float:
    """Start the forkserver (once per process) and run a probe child through it; the seconds it
    took. Raises when the probe fails, e.g. because the forkserver initialised CUDA
    (its children could not use the GPU)."""
    start = time.monotonic()
    probe = _training.Process(target=probe_runtime, name="fopro-train-probe", daemon=True)
    probe.start()
    probe.join()
    if probe.exitcode != 0:
        raise RuntimeError(
            f"the training forkserver is unusable (probe child exit code {probe.exitcode}); "
            "see the log lines above"
        )
    seconds = time.monotonic() - start
    log.info("training runtime ready in %.1f s", seconds)
    return seconds


@worker_shutting_down.connect
def _drain(**_: Any) -> None:
    _draining.set()


@celery_app.task(name=TaskName.run_job.value)
def run_job(job_id: str) -> dict[str, Any]:
    """Claim and run job ``job_id``; a job this worker cannot claim is left alone."""
    with job_log_context(job_id):
        return _claim_and_run(job_id)


def _claim_and_run(job_id: str) -> dict[str, Any]:
    settings = get_settings()
    owner = new_lease_owner()
    lease = timedelta(seconds=settings.lease_seconds)
    with session_scope() as session:
        if _draining.is_set():
            # Prefetched while this worker shuts down, and already acknowledged: send it again
            # for another worker instead of claiming it here (or leaving it to the reaper).
            priority = session.scalar(
                select(Job.priority).where(Job.id == job_id, Job.status == JobStatus.queued.value)
            )
            if priority is not None:
                enqueue_job(session, job_id, priority)
            return {"job_id": job_id, "ran": False, "why": "worker shutting down"}
        if not _dataset_still_usable(session, job_id):
            return {"job_id": job_id, "ran": False, "why": "dataset not ready"}
        if not claim_job(session, job_id, owner, lease=lease):
            status = session.scalar(select(Job.status).where(Job.id == job_id))
            log.info("job %s not claimed (it is %s)", job_id, status)
            return {"job_id": job_id, "ran": False, "why": f"job is {status}"}
    outcome = Supervisor(job_id, owner, settings).run()
    return {"job_id": job_id, "ran": True, "owner": owner, **outcome.as_dict()}


def _dataset_still_usable(session: Session, job_id: str) -> bool:
    """Fail a queued job at once (``queued → failed``) when its dataset is no longer ready."""
    row = session.execute(
        select(Job.status, Dataset.status.label("dataset_status"))
        .join(Dataset, Dataset.id == Job.dataset_id)
        .where(Job.id == job_id)
    ).one_or_none()
    if row is None or row.status != JobStatus.queued.value:
        return True  # nothing to decide here; the claim refuses what it must
    if row.dataset_status == DatasetStatus.ready.value:
        return True
    reason = f"The dataset cannot be used: it is {row.dataset_status}, not ready."
    transition(
        session,
        job_id,
        source=JobStatus.queued,
        target=JobStatus.failed,
        message=f"Failed before it started: {reason}",
        values={"failure_code": "invalid_dataset", "failure_reason": reason},
    )
    return False


def run_dir_for(settings: Settings, job_id: str, owner: str) -> Path:
    """The scratch folder of one run: ``<data dir>/work/<job id>-<owner's unique part>``."""
    return settings.data_dir / "work" / f"{job_id}-{owner.rsplit(':', 1)[-1]}"


def sweep_run_dirs(session: Session, settings: Settings) -> list[Path]:
    """Remove scratch folders of runs that are over: their supervisor was killed (``kill -9``,
    a lost machine) before it could clean up. A folder stays while its job is running under the
    lease owner that made it; anything else in ``work/`` is left alone. Returns what was removed.

    The folders are listed before the jobs are read, and a run's lease owner is in the database
    before its folder is made, so a run that starts meanwhile is never mistaken for a dead one.
    A job whose row changed in the last ``SWEEP_GRACE`` keeps its folders until a later sweep:
    its supervisor may be removing them itself right now (the run just finished or was requeued).
    """
    work = settings.data_dir / "work"
    if not work.is_dir():
        return []
    candidates: dict[str, list[tuple[Path, str]]] = {}
    for path in work.iterdir():
        job_id, sep, suffix = path.name.rpartition("-")
        if path.is_dir() and not path.is_symlink() and sep and job_id.startswith("job_"):
            candidates.setdefault(job_id, []).append((path, suffix))
    if not candidates:
        return []
    live: dict[str, str] = {}
    settling: set[str] = set()
    recent = utcnow() - SWEEP_GRACE
    for job_id, status, owner, updated_at in session.execute(
        select(Job.id, Job.status, Job.lease_owner, Job.updated_at).where(Job.id.in_(candidates))
    ):
        if status == JobStatus.running.value and owner is not None:
            live[job_id] = owner
        elif updated_at > recent:
            settling.add(job_id)
    removed = []
    for job_id, runs in candidates.items():
        if job_id in settling:
            continue
        for path, suffix in runs:
            if job_id in live and live[job_id].rsplit(":", 1)[-1] == suffix:
                continue
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


@dataclass(frozen=True)
class Outcome:
    """How supervision ended: the child's exit code and what the supervisor had to do."""

    exitcode: int | None
    # "finished" | "killed_after_cancel" | "killed_lease_lost" | "released" | "requeued_on_shutdown"
    action: str

    def as_dict(self) -> dict[str, Any]:
        return {"exitcode": self.exitcode, "action": self.action}


class Supervisor:
    """Runs one claimed job's training child and holds the lease until it is settled."""

    def __init__(self, job_id: str, owner: str, settings: Settings) -> None:
        self.job_id = job_id
        self.owner = owner
        self.lease = timedelta(seconds=settings.lease_seconds)
        self.heartbeat_s = float(settings.heartbeat_seconds)
        self.cancel_grace_s = float(settings.cancel_grace_seconds)
        # One folder per run (owner-unique): removed here however the child ends.
        self.run_dir = run_dir_for(settings, job_id, owner)

    def start_child(self) -> tuple[BaseProcess, Connection]:
        """Fork the training child from the forkserver; with it, the writing end of its
        lifeline, which must stay open until the child has exited (see ``die_with_parent``)."""
        lifeline, ours = _training.Pipe(duplex=False)
        child = _training.Process(
            target=run_training,
            args=(self.job_id, self.owner, str(self.run_dir), lifeline),
            name=f"fopro-train-{self.job_id}",
            daemon=True,
        )
        try:
            child.start()
        finally:
            lifeline.close()  # the child holds its own copy
        log.info("job %s: training in child pid %s", self.job_id, child.pid)
        return child, ours

    def run(self) -> Outcome:
        """Start the child and supervise it until it exits or has to be killed."""
        try:
            child, lifeline = self.start_child()
            try:
                return self._supervise(child)
            finally:
                lifeline.close()  # every path out of _supervise has seen the child exit
        finally:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def _supervise(self, child: BaseProcess) -> Outcome:
        last_ok = next_beat = time.monotonic()
        cancel_seen: float | None = None
        stop_asked: float | None = None
        while True:
            child.join(CHILD_POLL_S)
            if not child.is_alive():
                log.info("job %s: training child exited (%s)", self.job_id, child.exitcode)
                return Outcome(child.exitcode, self._settle(child.exitcode))
            now = time.monotonic()
            if _draining.is_set() and stop_asked is None and child.pid is not None:
                log.warning("job %s: worker shutting down; stopping the training", self.job_id)
                os.kill(child.pid, signal.SIGTERM)
                stop_asked = now
            if stop_asked is not None and now - stop_asked > self.cancel_grace_s:
                self._kill(child)
                self._settle(child.exitcode)
                return Outcome(child.exitcode, "requeued_on_shutdown")
            if now >= next_beat:
                next_beat = now + self.heartbeat_s
                beat = self._beat()
                if beat is not None:
                    last_ok = now
                    requeued = stop_asked is not None and beat.status is JobStatus.queued
                    if not beat.held and (beat.status in TERMINAL or requeued):
                        # The child settled the job (or requeued it, asked to stop) and is
                        # exiting on its own.
                        child.join(FINISH_GRACE_S)
                        self._kill(child)
                        return Outcome(
                            child.exitcode, "requeued_on_shutdown" if requeued else "finished"
                        )
                    if not beat.held:
                        log.warning("job %s: lease lost; stopping its training", self.job_id)
                        self._kill(child)
                        return Outcome(child.exitcode, "killed_lease_lost")
                    if beat.cancel_requested and cancel_seen is None:
                        cancel_seen = now
                elif now - last_ok > self.lease.total_seconds():
                    log.error("job %s: no heartbeat for a whole lease; stopping", self.job_id)
                    self._kill(child)
                    return Outcome(child.exitcode, "killed_lease_lost")
            if cancel_seen is not None and now - cancel_seen > self.cancel_grace_s:
                self._kill(child)
                self._force_cancel()
                return Outcome(child.exitcode, "killed_after_cancel")

    def _beat(self) -> Heartbeat | None:
        try:
            with session_scope() as session:
                beat = heartbeat(session, self.job_id, self.owner, lease=self.lease)
        except Exception:  # the database may be back next time; give up only after a lease
            log.warning("job %s: heartbeat failed", self.job_id, exc_info=True)
            return None
        if beat.held:
            lease_renewed()
        return beat

    def _kill(self, child: BaseProcess) -> None:
        if child.is_alive():
            child.kill()
        child.join()

    def _force_cancel(self) -> None:
        with session_scope() as session:
            end_attempt(
                session,
                self.job_id,
                self.owner,
                JobStatus.cancelled,
                "Cancelled; the training process did not stop within "
                f"{self.cancel_grace_s:.0f} s and was killed.",
            )

    def _settle(self, exitcode: int | None) -> str:
        """After the child exited: if it left the job running under our lease, give it back."""
        with session_scope() as session:
            still_ours = session.scalar(
                select(Job.id).where(
                    Job.id == self.job_id,
                    Job.status == JobStatus.running.value,
                    Job.lease_owner == self.owner,
                )
            )
            if still_ours is None:
                return "finished"
            if _draining.is_set():
                requeue_and_resend(
                    session, self.job_id, reason=SHUTDOWN_REASON, lease_owner=self.owner
                )
                return "requeued_on_shutdown"
            reason = describe_exit(exitcode)
            log.error("job %s: %s", self.job_id, reason)
            release_and_resend(
                session,
                self.job_id,
                reason=reason,
                failure_code="training_process_died",
                lease_owner=self.owner,
            )
            return "released"
