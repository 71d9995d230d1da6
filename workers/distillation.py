"""One distillation run, inside the training child that ``workers.training`` forks and supervises.

The run writes only through guarded statements on the lease its supervisor holds: progress,
epoch events, the checkpoint pointer (after the checkpoint's upload completed) and, at the end,
the job's outcome. A thread polls the job row twice a second; a cancel request or a lost lease
sets an event that the trainer's ``should_cancel`` sees before its next step.
"""

from __future__ import annotations

import dataclasses
import logging
import logging.config
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from sqlalchemy import select

from app.core.config import Settings, get_settings
from app.core.db import session_scope
from app.core.logging_config import worker_log_config
from app.core.storage import COPY_CHUNK_BYTES, ObjectStore, StoreUnavailable, open_object_store
from app.core.tenancy import team_object_key
from app.datasets.models import Dataset, DatasetStatus
from app.jobs.dispatch import release_and_resend, requeue_and_resend
from app.jobs.lease import (
    end_attempt,
    move_checkpoint,
    record_event,
    resume_point,
    write_progress,
)
from app.jobs.models import Job, JobStatus
from app.jobs.schemas import JobParams
from app.jobs.state import EventKind
from app.students.models import Artifact
from app.students.service import upload_artifact
from app.teachers.service import resolve_teacher
from foprokd.bundle import BUNDLE_FILE
from foprokd.catalog import TEACHERS, ModelSpec
from foprokd.errors import TrainingCancelled, TrainingSuspended
from foprokd.hyperparams import TEACHER_METHODS
from foprokd.pipeline import DistillationRequest, PipelineCallbacks, run_distillation
from foprokd.quantize import Int8Gate
from foprokd.signing import load_or_create_private_key, sign_bundle
from foprokd.trainer import EpochSummary, Progress
from foprokd.zoo import resolve_spec, resolve_weights
from workers.dataset_cache import fetch_dataset
from workers.failures import DatasetUnusable, describe_failure

log = logging.getLogger("fopro.training")

PROGRESS_INTERVAL_S = 1.0  # at most one progress UPDATE per second
# How long a checkpoint upload is retried while the object store is unreachable (a restart, a
# network blip); training waits meanwhile, since its next epoch would need the checkpoint anyway.
CHECKPOINT_RETRY_S = 180.0
POLL_INTERVAL_S = 0.5  # how often the job row is read for cancel / lease loss
# Set by SIGTERM: the run stops at its next step and the job goes back to the queue.
SHUTDOWN = threading.Event()
# Each phase after "preparing" starts with an info event: progress snapshots are sampled and a
# short phase can fall between two of them, but the events are a durable record of each phase.
# What of the pipeline's metrics the job row keeps (the curves are the epoch events).
JOB_METRICS = (
    "evaluated_split",
    "report",
    "best_epoch",
    "best_val_balanced_accuracy",
    "split_sizes",
    "trust",
)
PHASE_EVENTS = {
    "training": "Training started.",
    "evaluating": "Training done: evaluating the best epoch's student.",
    "exporting": "Exporting the student (safetensors, TorchScript, ONNX) and its model card.",
}


def apply_thread_budget(threads: int) -> None:
    """Give this training process's torch ``threads`` intra-op threads (``FOPRO_TRAIN_THREADS``);
    0 keeps torch's default. Called in the child only: the worker itself never imports torch."""
    if threads <= 0:
        return
    import torch

    torch.set_num_threads(threads)


def run_in_child(job_id: str, owner: str, run_dir: str) -> None:
    """In the training child (``workers.child.run_training``): run job ``job_id`` held by
    ``owner`` in the scratch folder ``run_dir`` (the supervisor removes it)."""
    # The supervisor passes on its worker's shutdown; Ctrl-C reaches the whole process group.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: SHUTDOWN.set())
    logging.config.dictConfig(worker_log_config(job_id=job_id))
    settings = get_settings()
    apply_thread_budget(settings.train_threads)
    run = DistillationRun(job_id, owner, settings, open_object_store(settings))
    run.execute(Path(run_dir))


class JobWatch:
    """Polls the job row: ``stop`` is set when a cancel is requested or the lease is gone."""

    def __init__(self, job_id: str, owner: str) -> None:
        self.job_id = job_id
        self.owner = owner
        self.stop = threading.Event()
        self.lease_lost = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="job-watch", daemon=True)

    def __enter__(self) -> JobWatch:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._done.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._done.wait(POLL_INTERVAL_S):
            try:
                with session_scope() as session:
                    row = session.execute(
                        select(Job.status, Job.lease_owner, Job.cancel_requested).where(
                            Job.id == self.job_id
                        )
                    ).one_or_none()
            except Exception:  # a DB hiccup: the supervisor's heartbeat decides about the lease
                log.warning("job %s: could not read the job row", self.job_id, exc_info=True)
                continue
            if (
                row is None
                or row.status != JobStatus.running.value
                or (row.lease_owner != self.owner)
            ):
                self.lease_lost.set()
                self.stop.set()
            elif row.cancel_requested:
                self.stop.set()


class JobCallbacks(PipelineCallbacks):
    """The pipeline's hooks: progress into the job row, phase and epoch events, warnings,
    checkpoint uploads."""

    def __init__(self, run: DistillationRun, watch: JobWatch) -> None:
        self.run = run
        self.watch = watch
        self.latest_val: dict[str, Any] = {}

    def should_cancel(self) -> bool:
        return self.watch.stop.is_set()

    def should_suspend(self) -> bool:
        return SHUTDOWN.is_set()

    def on_decode(self, done: int, total: int) -> None:
        self.run.preparing("decoding", done, total)

    def on_phase(self, phase: str) -> None:
        # Training announces itself with its first step's progress; later phases report the
        # finished training progress.
        if phase != "training":
            self.run.report(phase, {**self.run.training_progress, "percent": 100.0, "eta_s": 0.0})

    def on_warning(self, message: str) -> None:
        self.run.event(EventKind.warning, message)

    def on_progress(self, progress: Progress) -> None:
        self.run.report(
            "training",
            {
                "epoch": progress.epoch,
                "epochs": progress.epochs,
                "step": progress.step,
                "steps_per_epoch": progress.steps_per_epoch,
                "global_step": progress.global_step,
                "total_steps": progress.total_steps,
                "percent": round(100.0 * progress.global_step / progress.total_steps, 2),
                "images_per_s": round(progress.images_per_s, 2),
                "eta_s": round(progress.eta_s, 1),
                "losses": {k: round(v, 6) for k, v in progress.losses.items()},
                "val": self.latest_val,
            },
            throttled=progress.step != 1,
        )

    def on_epoch_end(self, summary: EpochSummary) -> None:
        self.latest_val = {
            "epoch": summary.epoch,
            "loss": summary.val_loss,
            "balanced_accuracy": summary.val_balanced_accuracy,
            "macro_f1": summary.val_macro_f1,
            "best_epoch": summary.best_epoch,
            "best_balanced_accuracy": summary.best_balanced_accuracy,
        }
        best = " (best so far)" if summary.is_best else ""
        self.run.event(
            EventKind.epoch,
            f"Epoch {summary.epoch}/{summary.epochs}: val balanced accuracy "
            f"{summary.val_balanced_accuracy:.3f}{best}, val loss {summary.val_loss:.4f}, "
            f"{summary.seconds:.1f} s.",
            dataclasses.asdict(summary),
        )

    def on_checkpoint(self, path: Path, epoch: int, step: int) -> None:
        self.run.store_checkpoint(path, epoch, step)


class DistillationRun:
    """Everything one attempt of a job does, from downloading its data to its outcome."""

    def __init__(self, job_id: str, owner: str, settings: Settings, store: ObjectStore) -> None:
        self.job_id = job_id
        self.owner = owner
        self.settings = settings
        self.store = store
        self.team_id = ""
        self.phase = "preparing"
        self.checkpoint_key: str | None = None
        self.checkpoint_epoch: int | None = None
        self.checkpoint_step: int | None = None
        self._last_report = 0.0
        self.training_progress: dict[str, Any] = {}

    # --- guarded writes -------------------------------------------------------------------

    def report(
        self,
        phase: str,
        progress: Mapping[str, Any],
        metrics: Mapping[str, Any] | None = None,
        *,
        throttled: bool = False,
    ) -> None:
        """Write progress for ``phase``; ``throttled`` skips it within a second of the last one.

        A lost lease makes the guarded write a no-op; the JobWatch notices and stops the run.
        """
        if phase == "training":
            self.training_progress = dict(progress)
        now = time.monotonic()
        if throttled and phase == self.phase and now - self._last_report < PROGRESS_INTERVAL_S:
            return
        started = phase != self.phase
        self.phase, self._last_report = phase, now
        with session_scope() as session:
            write_progress(
                session, self.job_id, self.owner, phase=phase, progress=progress, metrics=metrics
            )
        if started and phase in PHASE_EVENTS:
            self.event(EventKind.info, PHASE_EVENTS[phase], {"phase": phase})

    def event(self, kind: EventKind, message: str, data: Mapping[str, Any] | None = None) -> None:
        with session_scope() as session:
            record_event(session, self.job_id, kind, message, data)

    def store_checkpoint(self, path: Path, epoch: int, step: int = 0) -> None:
        """Upload the checkpoint (``epoch`` epochs and ``step`` steps done), THEN point the job
        at it, then drop the previous one."""
        name = f"epoch_{epoch:04d}_step_{step:06d}.pt" if step else f"epoch_{epoch:04d}.pt"
        key = team_object_key(self.team_id, "jobs", self.job_id, "checkpoints", name)
        self._upload_checkpoint(key, path, resume_point(epoch, step))
        with session_scope() as session:
            moved = move_checkpoint(
                session, self.job_id, self.owner, key=key, epoch=epoch, step=step
            )
        previous, self.checkpoint_key = self.checkpoint_key, key
        self.checkpoint_epoch, self.checkpoint_step = epoch, step
        # Only this job's own older checkpoints go: a retry may start from its parent's.
        own_prefix = team_object_key(self.team_id, "jobs", self.job_id, "checkpoints", "")
        if moved and previous and previous != key and previous.startswith(own_prefix):
            self.store.delete(previous)

    def _upload_checkpoint(self, key: str, path: Path, point: str) -> None:
        """Put the checkpoint at ``key``, retrying with back-off through a store outage of up
        to ``CHECKPOINT_RETRY_S``; a failed try leaves no object (puts are atomic)."""
        delay, deadline = 1.0, time.monotonic() + CHECKPOINT_RETRY_S
        while True:
            try:
                with path.open("rb") as handle:
                    self.store.put(key, handle, size=path.stat().st_size)
                return
            except StoreUnavailable as exc:
                if time.monotonic() + delay > deadline:
                    raise
                if delay == 1.0:  # once per checkpoint: the user sees why the run pauses
                    self.event(
                        EventKind.warning,
                        f"The checkpoint could not be stored at {point} ({exc}); retrying.",
                    )
                log.warning("job %s: checkpoint upload failed, retry in %.0f s", self.job_id, delay)
                time.sleep(delay)
                delay = min(2 * delay, 15.0)

    # --- the run --------------------------------------------------------------------------

    def execute(self, run_dir: Path) -> None:
        """Run the attempt in ``run_dir`` and settle the job: succeeded, failed, cancelled or
        queued again."""
        with session_scope() as session:
            job = session.get_one(Job, self.job_id)
            dataset = session.get_one(Dataset, job.dataset_id)
            session.expunge_all()
        self.team_id = job.team_id
        self.checkpoint_key, self.checkpoint_epoch = job.checkpoint_key, job.checkpoint_epoch
        self.checkpoint_step = job.checkpoint_step
        run_dir.mkdir(parents=True, exist_ok=True)
        with JobWatch(self.job_id, self.owner) as watch:
            try:
                self._run(job, dataset, run_dir, watch)
            except TrainingSuspended as exc:
                self._requeue_for_shutdown(exc)
            except TrainingCancelled as exc:
                if SHUTDOWN.is_set() and not watch.stop.is_set():
                    self._requeue_for_shutdown(exc)  # stopped outside the training loop
                else:
                    self._cancelled(exc, watch)
            except Exception as exc:
                log.exception("job %s failed", self.job_id)
                self._failed(exc)

    def preparing(self, stage: str, done: int, total: int) -> None:
        """Progress of the ``preparing`` phase: ``downloading`` then ``decoding`` images."""
        percent = round(100.0 * done / max(total, 1), 1)
        self.report(
            "preparing",
            {"stage": stage, "done": done, "total": total, "percent": percent},
            throttled=done != total,
        )

    def _run(self, job: Job, dataset: Dataset, run_dir: Path, watch: JobWatch) -> None:
        """Fetch the inputs, run the engine's pipeline, publish the student, record success."""
        params = JobParams.model_validate(job.params)
        config = params.train_config(job.method)
        if dataset.status != DatasetStatus.ready.value:
            raise DatasetUnusable(f"it is {dataset.status}, not ready")
        # Weights files first: a missing one must fail before a long download.
        allow_random = params.allow_random_weights
        teacher_spec, teacher_path = self._teacher_weights(job, allow_random, run_dir)
        student_path = (
            None  # a scratch student loads no weights file
            if config.student_init == "scratch"
            else resolve_weights(
                resolve_spec(job.student, "student"),
                weights_dir=self.settings.weights_dir,
                allow_random=allow_random,
            )
        )
        images = fetch_dataset(
            self.store,
            dataset_id=dataset.id,
            manifest_key=dataset.manifest_key,
            classes=list(dataset.classes),
            cache_root=self.settings.data_dir / "cache",
            on_progress=lambda done, total: self.preparing("downloading", done, total),
        )
        request = DistillationRequest(
            images=images,
            out_dir=run_dir / "run",
            config=config,
            teacher=teacher_spec,
            student=job.student,
            teacher_weights=teacher_path,
            student_weights=student_path,
            allow_random_weights=allow_random,
            resume_from=self._fetch_checkpoint(job, run_dir),
            # How the dataset was split (per image or per patient group) goes into the model card.
            dataset={
                "name": dataset.name,
                "id": dataset.id,
                "split": dict((dataset.stats or {}).get("split") or {}),
            },
            provenance={"job_id": job.id, "dataset_id": job.dataset_id},
            split_seed=dataset.split_seed,
            int8_gate=Int8Gate(
                max_balanced_accuracy_drop=self.settings.int8_max_balanced_accuracy_drop,
                max_few_shot_recall_drop=self.settings.int8_max_few_shot_recall_drop,
                min_speedup=self.settings.int8_min_speedup or None,
            ),
        )
        outcome = run_distillation(request, JobCallbacks(self, watch))

        files = list(outcome.files)
        bundle = next((path for path in files if path.name == BUNDLE_FILE), None)
        if bundle is not None:  # proof of origin for clinic IT
            assert self.settings.bundle_signing_key is not None  # filled by Settings
            key = load_or_create_private_key(self.settings.bundle_signing_key)
            files.append(sign_bundle(bundle.parent, key))
        artifacts = [
            upload_artifact(self.store, team_id=self.team_id, job_id=self.job_id, path=path)
            for path in files
        ]
        metrics = {key: outcome.metrics[key] for key in JOB_METRICS}
        finished = {**self.training_progress, "percent": 100.0, "eta_s": 0.0}
        self._settle(
            JobStatus.succeeded,
            f"Succeeded: best epoch {outcome.result.best_epoch}; {outcome.evaluated_split} "
            f"balanced accuracy {outcome.report['balanced_accuracy']:.3f}.",
            values={"metrics": metrics, "progress": finished},
            data={"artifacts": [a.name for a in artifacts]},
            artifacts=artifacts,
        )

    def _teacher_weights(
        self, job: Job, allow_random: bool, run_dir: Path
    ) -> tuple[ModelSpec, Path | None]:
        """The teacher's spec and weights file: a zoo teacher's from the weights dir, a team
        teacher's uploaded file fetched from the store. None only for test-only random weights
        or when the method never loads the teacher."""
        with session_scope() as session:
            choice = resolve_teacher(
                session, self.team_id, job.teacher, require_weights=False, settings=self.settings
            )
        needed = job.method in TEACHER_METHODS
        if choice.source == "zoo":
            spec = TEACHERS[choice.name]
            if not needed:
                return spec, None
            weights_dir = self.settings.weights_dir
            return spec, resolve_weights(spec, weights_dir=weights_dir, allow_random=allow_random)
        spec = ModelSpec(
            name=choice.name,
            timm_name=choice.arch,
            feature_dim=choice.feature_dim,
            input_size=choice.input_size,
            mean=(choice.mean[0], choice.mean[1], choice.mean[2]),
            std=(choice.std[0], choice.std[1], choice.std[2]),
            role="teacher",
        )
        if not needed or choice.weights_key is None:
            return spec, None
        path = run_dir / f"teacher{PurePosixPath(choice.weights_key).suffix}"
        self._download(choice.weights_key, path)
        return spec, path

    def _fetch_checkpoint(self, job: Job, run_dir: Path) -> Path | None:
        if job.checkpoint_key is None:
            return None
        path = run_dir / "resume.pt"
        self._download(job.checkpoint_key, path)
        self.event(
            EventKind.info,
            f"Resumed from its checkpoint at "
            f"{resume_point(job.checkpoint_epoch, job.checkpoint_step)}.",
            {
                "resumed_from_epoch": job.checkpoint_epoch,
                "resumed_from_step": job.checkpoint_step or 0,
                "checkpoint_key": job.checkpoint_key,
            },
        )
        return path

    def _download(self, key: str, path: Path) -> None:
        with self.store.open(key) as source, path.open("wb") as out:
            while chunk := source.read(COPY_CHUNK_BYTES):
                out.write(chunk)

    # --- endings other than success -------------------------------------------------------

    def _requeue_for_shutdown(self, exc: TrainingCancelled) -> None:
        point = resume_point(self.checkpoint_epoch, self.checkpoint_step)
        resume = (
            f"resumes from its checkpoint at {point}"
            if self.checkpoint_key is not None
            else "starts over (no step was checkpointed)"
        )
        reason = (
            f"its worker is shutting down (SIGTERM) at epoch {exc.epoch}, step {exc.step}; "
            f"the next run {resume}"
        )
        with session_scope() as session:
            requeue_and_resend(session, self.job_id, reason=reason, lease_owner=self.owner)
        log.info(
            "job %s: requeued for shutdown at epoch %s, step %s", self.job_id, exc.epoch, exc.step
        )

    def _cancelled(self, exc: TrainingCancelled, watch: JobWatch) -> None:
        if watch.lease_lost.is_set():
            log.warning("job %s: lease lost; stopped without touching the job", self.job_id)
            return
        kept = (
            f"; its checkpoint at {resume_point(self.checkpoint_epoch, self.checkpoint_step)} "
            "is kept"
            if self.checkpoint_key is not None
            else ""
        )
        self._settle(
            JobStatus.cancelled,
            f"Cancelled at epoch {exc.epoch}, step {exc.step}{kept}.",
            data={"epoch": exc.epoch, "step": exc.step},
        )

    def _failed(self, exc: BaseException) -> None:
        failure = describe_failure(exc)
        if failure.retryable:
            with session_scope() as session:
                release_and_resend(
                    session,
                    self.job_id,
                    reason=failure.reason,
                    failure_code=failure.code,
                    lease_owner=self.owner,
                )
            return
        self._settle(
            JobStatus.failed,
            f"Failed while {self.phase}: {failure.reason}",
            values={"failure_code": failure.code, "failure_reason": failure.reason},
            data={"code": failure.code, "phase": self.phase},
        )

    def _settle(
        self, target: JobStatus, message: str, artifacts: Sequence[Artifact] = (), **details: Any
    ) -> None:
        """End the attempt under this run's lease, a success's ``artifacts`` in the same commit."""
        with session_scope() as session:
            session.add_all(artifacts)
            end_attempt(session, self.job_id, self.owner, target, message, **details)
