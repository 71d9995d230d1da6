"""The dataset validation task: archive in, images + manifest out, dataset ``ready`` or ``invalid``.

Runs on the cpu queue without torch. The archive streams from the object store through
``app.datasets.ingest.validation``; valid images are stored content-addressed under
``teams/<team>/datasets/<id>/images/``; the manifest goes to ``.../manifest.csv``. An invalid
dataset keeps no image objects. The archive itself is deleted once validation ends (the images and
manifest are the dataset from then on), before the outcome is committed, so a ready or invalid row
always describes the final store. Re-running the task for the same dataset starts
from scratch, so a retry after a store or database outage is safe (if the outage hit between
deleting the archive and committing, the retry reports the archive as gone).
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from celery import Task
from sqlalchemy.exc import OperationalError

from app.core.config import Settings, get_settings
from app.core.db import session_scope
from app.core.queue import TaskName
from app.core.storage import ObjectNotFound, ObjectStore, StoreUnavailable, open_object_store
from app.core.tenancy import team_object_key
from app.datasets.ingest.archive import ArchiveError, open_archive
from app.datasets.ingest.entries import IngestLimits, IngestProgress, StoredImage, archive_problem
from app.datasets.ingest.images import CheckedImage
from app.datasets.ingest.validation import IngestResult, validate_archive
from app.datasets.models import Dataset, DatasetStatus
from app.datasets.problems import ProblemCode
from app.datasets.schemas import IngestOptions
from app.datasets.validation_outcome import mark_failed, record_validation
from foprokd.manifest import write_manifest
from workers.celery_app import celery_app
from workers.metrics import validation_done

log = logging.getLogger("fopro.ingest")

# Progress is written at most this often: often enough for a progress bar, rare enough for the DB.
PROGRESS_INTERVAL_S = 1.0
# Image uploads overlap with decoding; bounded so memory stays a few images.
STORE_THREADS = 4
IN_FLIGHT = 8
TRANSIENT_RETRIES = 3


class DatasetGone(Exception):
    """The dataset was deleted while it was being validated."""


@dataclass(frozen=True)
class _Target:
    """What the task needs from the dataset row, read once."""

    id: str
    team_id: str
    archive_key: str
    archive_bytes: int | None
    archive_name: str
    options: IngestOptions

    def key(self, *parts: str) -> str:
        return team_object_key(self.team_id, "datasets", self.id, *parts)


@celery_app.task(name=TaskName.validate_dataset.value, bind=True, max_retries=TRANSIENT_RETRIES)
def validate_dataset(self: Task, dataset_id: str) -> str:
    """Validate dataset ``dataset_id``; returns its final status (or ``skipped``/``deleted``).

    Store or database outages are retried with back-off; after the last retry, and on any other
    error, the dataset is marked ``invalid`` with an ``internal_error`` problem.
    """
    try:
        return ingest_dataset(dataset_id)
    except (StoreUnavailable, OperationalError) as exc:
        if self.request.retries < TRANSIENT_RETRIES:
            raise self.retry(exc=exc, countdown=5 * 2**self.request.retries) from exc
        _mark_failed(
            dataset_id, f"the object store or database was unreachable ({type(exc).__name__})"
        )
        raise
    except Exception as exc:
        log.exception("validation of dataset %s crashed", dataset_id)
        _mark_failed(
            dataset_id,
            f"validation crashed ({type(exc).__name__}); quote the dataset id to support",
        )
        raise


def ingest_dataset(dataset_id: str, *, settings: Settings | None = None) -> str:
    """Run one validation of ``dataset_id`` end to end (see the module docstring)."""
    settings = settings or get_settings()
    store = open_object_store(settings)
    target = _load_target(dataset_id)
    if target is None:
        return "skipped"
    images_prefix = target.key("images") + "/"
    store.delete_prefix(images_prefix)  # a previous attempt may have stored some
    started = time.monotonic()
    try:
        result = _validate(target, store, settings)
    except DatasetGone:
        store.delete_prefix(images_prefix)
        return "deleted"
    checked = (result.stats.get("progress") or {}).get("entries_done") or len(result.rows)
    validation_done(int(checked), time.monotonic() - started)
    manifest_key = None
    if result.ok:
        manifest_key = _store_manifest(target, store, result, settings)
    else:
        store.delete_prefix(images_prefix)
    # The store is final before the row says so: whoever sees ready/invalid sees these objects.
    store.delete(target.archive_key)
    final = _record(target, result, manifest_key)
    if final == "deleted":
        store.delete_prefix(team_object_key(target.team_id, "datasets", target.id) + "/")
    return final


def _load_target(dataset_id: str) -> _Target | None:
    with session_scope() as session:
        dataset = session.get(Dataset, dataset_id)
        if dataset is None or dataset.status != DatasetStatus.validating.value:
            return None  # deleted, or already validated by an earlier delivery of this task
        assert dataset.archive_key is not None  # a validating dataset has its archive
        options = dataset.options or {}
        return _Target(
            id=dataset.id,
            team_id=dataset.team_id,
            archive_key=dataset.archive_key,
            archive_bytes=dataset.archive_bytes,
            archive_name=options.get("filename")
            or f"{dataset.name}.{dataset.archive_format or 'archive'}",
            options=IngestOptions.model_validate(options.get("ingest", {})),
        )


class _ConcurrentSink:
    """Stores images content-addressed under ``prefix`` from a few threads, so per-object store
    latency (fsyncs, S3 round trips) overlaps with decoding; at most ``IN_FLIGHT`` images wait in
    memory. Leaving the ``with`` block waits for every upload (also on errors, so nothing lands
    after a cleanup), then raises the first upload error, if any."""

    def __init__(self, store: ObjectStore, prefix: str) -> None:
        self._store = store
        self._prefix = prefix
        self._pool = ThreadPoolExecutor(STORE_THREADS, thread_name_prefix="ingest-put")
        self._slots = threading.Semaphore(IN_FLIGHT)
        self._errors: list[BaseException] = []

    def __call__(self, image: CheckedImage, source_sha256: str) -> StoredImage:
        if self._errors:
            raise self._errors[0]
        key = f"{self._prefix}/{source_sha256[:2]}/{source_sha256}.{image.extension}"
        self._slots.acquire()
        self._pool.submit(self._put, key, image)
        return StoredImage(key, hashlib.sha256(image.data).hexdigest())

    def _put(self, key: str, image: CheckedImage) -> None:
        try:
            self._store.put_bytes(key, image.data, content_type=image.content_type)
        except BaseException as exc:
            self._errors.append(exc)
        finally:
            self._slots.release()

    def __enter__(self) -> _ConcurrentSink:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        self._pool.shutdown(wait=True)
        if exc_type is None and self._errors:
            raise self._errors[0]


def _validate(target: _Target, store: ObjectStore, settings: Settings) -> IngestResult:
    progress = _ProgressWriter(target.id)
    scratch = settings.data_dir / "tmp"
    limits = IngestLimits.from_settings(settings)
    try:
        with (
            _ConcurrentSink(store, target.key("images")) as sink,
            store.open(target.archive_key) as stream,
            open_archive(stream, scratch_dir=scratch, max_entries=limits.max_entries) as reader,
        ):
            result = validate_archive(
                reader,
                options=target.options,
                limits=limits,
                sink=sink,
                archive_name=target.archive_name,
                group_salt=settings.group_salt,
                archive_bytes=target.archive_bytes,
                progress=progress,
            )
    except ObjectNotFound:
        return IngestResult.rejected(
            target.archive_name,
            ProblemCode.internal_error,
            "the uploaded archive is no longer in the object store; upload it again",
        )
    except ArchiveError as exc:
        return IngestResult.rejected(target.archive_name, archive_problem(exc), str(exc))
    result.stats["progress"] = progress.final()
    return result


class _ProgressWriter:
    """Writes ``stats["progress"]`` at most every ``PROGRESS_INTERVAL_S``; raises ``DatasetGone``
    when the dataset was deleted (or is being deleted) meanwhile."""

    def __init__(self, dataset_id: str) -> None:
        self._dataset_id = dataset_id
        self._last_write = 0.0
        self._latest: IngestProgress | None = None

    def __call__(self, progress: IngestProgress) -> None:
        self._latest = progress
        now = time.monotonic()
        if now - self._last_write < PROGRESS_INTERVAL_S:
            return
        self._last_write = now
        with session_scope() as session:
            dataset = session.get(Dataset, self._dataset_id)
            if dataset is None or dataset.status != DatasetStatus.validating.value:
                raise DatasetGone(self._dataset_id)
            dataset.stats = {**dataset.stats, "progress": progress.as_dict()}

    def final(self) -> dict[str, Any] | None:
        """The progress block of a finished validation: every entry done."""
        if self._latest is None:
            return None
        done = self._latest.entries_done
        total = self._latest.bytes_total or self._latest.bytes_done
        return IngestProgress(done, done, total, total).as_dict()


def _store_manifest(
    target: _Target, store: ObjectStore, result: IngestResult, settings: Settings
) -> str:
    key = target.key("manifest.csv")
    scratch = settings.data_dir / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    # Through a temp file: 500k rows would be ~100 MB as one string.
    with tempfile.TemporaryFile("w+b", dir=scratch, prefix="manifest-") as raw:
        with open(raw.fileno(), "w", encoding="utf-8", newline="", closefd=False) as text:
            write_manifest(result.rows, text)
        raw.seek(0)
        store.put(key, raw, content_type="text/csv")
    return key


def _record(target: _Target, result: IngestResult, manifest_key: str | None) -> str:
    """Write the outcome on the row; ``deleted`` if the row went away meanwhile."""
    with session_scope() as session:
        dataset = session.get(Dataset, target.id)
        if dataset is None:
            return "deleted"
        status = record_validation(
            session, dataset, result, manifest_key=manifest_key, archive_name=target.archive_name
        )
        return "deleted" if status is None else status.value


def _mark_failed(dataset_id: str, reason: str) -> None:
    """Mark a dataset invalid after a crash, removing its images (the archive stays for support)."""
    try:
        with session_scope() as session:
            dataset = session.get(Dataset, dataset_id)
            if dataset is None:
                return
            team_id = dataset.team_id
            if not mark_failed(session, dataset, reason):
                return
        open_object_store(get_settings()).delete_prefix(
            team_object_key(team_id, "datasets", dataset_id, "images") + "/"
        )
    except Exception:
        log.exception("could not mark dataset %s as failed", dataset_id)
