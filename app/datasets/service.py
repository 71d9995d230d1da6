"""The rules for datasets as users drive them: register uploads, direct S3 uploads, delete,
and read their events.

No row exists for a streamed upload until its archive is completely stored (a failed upload
leaves neither a row nor an object); a direct upload's row is ``uploading`` until ``complete``
and is removed with its parts if the upload fails. Rows are committed before the validation task
is sent. Status changes go through ``app.datasets.state``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.db import new_id, utcnow
from app.core.errors import (
    Conflict,
    InvalidInput,
    PayloadTooLarge,
    ServiceError,
    ServiceUnavailable,
)
from app.core.queue import TaskName, send
from app.core.storage import (
    MultipartUnsupported,
    MultipartUploadInvalid,
    ObjectInfo,
    ObjectStore,
    StoreUnavailable,
)
from app.core.tenancy import scoped, team_object_key
from app.datasets import state
from app.datasets.models import Dataset, DatasetStatus
from app.datasets.problems import Problem, ProblemCode
from app.datasets.schemas import (
    CompletedPart,
    DirectUploadOut,
    DirectUploadRequest,
    PartUrl,
    UploadRequest,
)
from app.jobs.models import Job, JobStatus

log = logging.getLogger("fopro.datasets")

# Presigned part URLs must outlive a multi-GB upload on a hospital uplink.
DIRECT_UPLOAD_TTL = timedelta(hours=24)
# A dataset 'deleting' for this long lost its DELETE to a store outage: the reaper finishes it.
STUCK_DELETE_AFTER = timedelta(hours=1)
MIN_PART_BYTES = 8 * 1024 * 1024
MAX_PARTS = 10_000
_MIB = 1024 * 1024
_ACTIVE_JOB_STATUSES = (JobStatus.queued.value, JobStatus.running.value)


class DatasetNameTaken(Conflict):
    code = "dataset_name_taken"


class DatasetInUse(Conflict):
    code = "dataset_in_use"


class DatasetNotReady(Conflict):
    """A dataset used before it is ready (a manifest read, a job submitted): 409, since the
    request is well formed but conflicts with the dataset's current state."""

    code = "dataset_not_ready"


class UploadTooLarge(PayloadTooLarge):
    code = "upload_too_large"


class UploadIncomplete(ServiceError):
    code = "upload_incomplete"


class UnsupportedArchive(ServiceError):
    status_code = 415
    code = "unsupported_archive"


class DirectUploadUnavailable(ServiceError):
    status_code = 501
    code = "direct_upload_unavailable"


def upload_too_large(limit: int) -> UploadTooLarge:
    return UploadTooLarge(
        f"The upload is larger than the limit of {limit} bytes (FOPRO_MAX_UPLOAD_BYTES). Split "
        "the dataset into several archives, or ask an admin to raise the limit.",
        details={"max_upload_bytes": limit},
    )


def parse_upload_fields(fields: dict[str, str]) -> UploadRequest:
    """Validate upload fields (query parameters or form fields); 422 naming each bad field."""
    try:
        return UploadRequest.model_validate(fields)
    except ValidationError as exc:
        problems = [
            {"field": ".".join(str(p) for p in err["loc"]) or "body", "problem": err["msg"]}
            for err in exc.errors()
        ]
        summary = "; ".join(f"{p['field']}: {p['problem']}" for p in problems[:5])
        raise InvalidInput(f"Invalid upload fields: {summary}", details=problems) from exc


def archive_key(team_id: str, dataset_id: str) -> str:
    """Where a dataset's uploaded archive is stored."""
    return team_object_key(team_id, "datasets", dataset_id, "archive")


def dataset_prefix(team_id: str, dataset_id: str) -> str:
    """The object-key prefix holding everything of one dataset (archive, images, manifest)."""
    return team_object_key(team_id, "datasets", dataset_id) + "/"


def ensure_name_free(session: Session, team_id: str, name: str) -> None:
    """Raise ``DatasetNameTaken`` when the team already has a dataset called ``name``."""
    taken = session.scalar(scoped(Dataset, team_id).where(Dataset.name == name))
    if taken is not None:
        raise _name_taken(name, taken.id)


def _name_taken(name: str, existing_id: str | None) -> DatasetNameTaken:
    which = f" ({existing_id})" if existing_id else ""
    return DatasetNameTaken(
        f"Your team already has a dataset named {name!r}{which}. Pick another name, or delete "
        "the old dataset first.",
        details={"name": name, "dataset_id": existing_id},
    )


def identical_datasets(
    session: Session, team_id: str, content_sha256: str, exclude_id: str
) -> list[Dataset]:
    """The team's other datasets whose archive has the same sha256 (re-uploads)."""
    query = scoped(Dataset, team_id).where(
        Dataset.content_sha256 == content_sha256,
        Dataset.id != exclude_id,
        Dataset.status != DatasetStatus.deleted.value,
    )
    return list(session.scalars(query.order_by(Dataset.created_at)))


def duplicate_upload_warnings(
    session: Session, team_id: str, content_sha256: str, dataset_id: str, entry: str
) -> list[dict[str, str]]:
    """One ``duplicate_upload`` warning per earlier dataset with byte-identical content."""
    return [
        Problem(
            entry,
            ProblemCode.duplicate_upload,
            f"identical content to dataset {other.id} ({other.name!r}, {other.status}, uploaded "
            f"{other.created_at:%Y-%m-%d %H:%M} UTC); both are kept",
        ).as_dict()
        for other in identical_datasets(session, team_id, content_sha256, dataset_id)
    ]


def register_upload(
    session: Session,
    store: ObjectStore,
    *,
    team_id: str,
    dataset_id: str,
    request: UploadRequest,
    stored: ObjectInfo,
    archive_format: str,
) -> Dataset:
    """Create the ``validating`` row for a completely stored archive and queue its validation.

    If the row cannot be created (the name was taken meanwhile) the archive is deleted.
    """
    entry = request.filename or request.name
    assert stored.sha256 is not None  # put() always reports the digest of what it stored
    dataset = Dataset(
        id=dataset_id,
        team_id=team_id,
        name=request.name,
        status=DatasetStatus.validating.value,
        archive_key=stored.key,
        archive_format=archive_format,
        archive_bytes=stored.size,
        content_sha256=stored.sha256,
        options=_options(request),
        warnings=duplicate_upload_warnings(session, team_id, stored.sha256, dataset_id, entry),
        stats={},
    )
    _insert_or_cleanup(
        session,
        dataset,
        "Archive uploaded; validation queued.",
        lambda: _delete_quietly(store, stored.key),
    )
    send(TaskName.validate_dataset, dataset.id)
    return dataset


def _options(request: UploadRequest) -> dict[str, Any]:
    return {
        "ingest": request.ingest_options().model_dump(),
        "filename": request.filename,
    }


def _insert_or_cleanup(
    session: Session, dataset: Dataset, message: str, cleanup: Callable[[], None]
) -> None:
    """Commit the new row with its ``created`` event (saying ``message``); if the name was taken
    meanwhile, run ``cleanup`` (drop what was uploaded) and answer 409."""
    session.add(dataset)
    state.add_created_event(session, dataset, message)
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        cleanup()
        existing = session.scalar(
            scoped(Dataset, dataset.team_id).where(Dataset.name == dataset.name)
        )
        if existing is not None:
            raise _name_taken(dataset.name, existing.id) from exc
        raise


def begin_direct_upload(
    session: Session,
    store: ObjectStore,
    settings: Settings,
    *,
    team_id: str,
    request: DirectUploadRequest,
) -> DirectUploadOut:
    """Start a multipart upload straight to S3 and hand out one presigned URL per part.

    The dataset row is ``uploading`` until ``complete_direct_upload``.
    """
    if request.size > settings.max_upload_bytes:
        raise upload_too_large(settings.max_upload_bytes)
    ensure_name_free(session, team_id, request.name)
    dataset_id = new_id("ds")
    key = archive_key(team_id, dataset_id)
    try:
        upload_id = store.create_multipart_upload(key)
    except MultipartUnsupported as exc:
        raise DirectUploadUnavailable(
            "Direct uploads need an S3 object store; this service stores objects locally. "
            "Send the archive to POST /v1/datasets instead.",
        ) from exc
    except StoreUnavailable as exc:
        raise ServiceUnavailable(f"The object store is unavailable: {exc}") from exc
    part_size = _part_size(request.size)
    count = math.ceil(request.size / part_size)
    expires_at = utcnow() + DIRECT_UPLOAD_TTL
    parts = [
        PartUrl(part_number=n, url=store.presigned_part_url(key, upload_id, n, DIRECT_UPLOAD_TTL))
        for n in range(1, count + 1)
    ]
    options = _options(request)
    options["upload"] = {
        "id": upload_id,
        "part_size": part_size,
        "parts": count,
        "size": request.size,
    }
    dataset = Dataset(
        id=dataset_id,
        team_id=team_id,
        name=request.name,
        status=DatasetStatus.uploading.value,
        archive_key=key,
        options=options,
        stats={},
    )
    _insert_or_cleanup(
        session,
        dataset,
        "Direct upload begun; waiting for its parts.",
        lambda: store.abort_multipart_upload(key, upload_id),
    )
    return DirectUploadOut(
        dataset_id=dataset_id,
        part_size=part_size,
        parts=parts,
        expires_at=expires_at,
        complete_url=f"/v1/datasets/uploads/{dataset_id}/complete",
    )


def _part_size(size: int) -> int:
    """Parts of at least 8 MiB, whole MiB, no more than 10,000 of them."""
    needed = math.ceil(size / MAX_PARTS)
    return max(MIN_PART_BYTES, math.ceil(needed / _MIB) * _MIB)


def complete_direct_upload(
    session: Session,
    store: ObjectStore,
    settings: Settings,
    dataset: Dataset,
    parts: list[CompletedPart],
) -> Dataset:
    """Assemble the uploaded parts and queue validation; an upload over the size limit is
    deleted together with its row (413)."""
    if dataset.status != DatasetStatus.uploading.value:
        raise _already_completed(dataset)
    upload = dataset.options["upload"]
    assert dataset.archive_key is not None  # set when the upload began
    try:
        stored = store.complete_multipart_upload(
            dataset.archive_key, upload["id"], [(p.part_number, p.etag) for p in parts]
        )
    except MultipartUploadInvalid as exc:
        raise InvalidInput(
            f"The parts do not match what was uploaded: {exc}. Send every part number with the "
            "ETag its PUT returned.",
        ) from exc
    except StoreUnavailable as exc:
        raise ServiceUnavailable(f"The object store is unavailable: {exc}") from exc
    if stored.size > settings.max_upload_bytes:
        _delete_quietly(store, dataset.archive_key)
        session.delete(dataset)
        session.commit()
        raise upload_too_large(settings.max_upload_bytes)
    completed = state.transition(
        session,
        dataset.id,
        source=DatasetStatus.uploading,
        target=DatasetStatus.validating,
        message="Upload completed; validation queued.",
        values={
            "archive_bytes": stored.size,
            "options": {k: v for k, v in dataset.options.items() if k != "upload"},
        },
    )
    if not completed:
        raise _already_completed(dataset)
    send(TaskName.validate_dataset, dataset.id)
    return dataset


def _already_completed(dataset: Dataset) -> Conflict:
    return Conflict(
        f"Dataset {dataset.id} is {dataset.status}, not uploading: its upload was already "
        "completed.",
    )


def active_jobs(session: Session, dataset: Dataset) -> list[str]:
    """Ids of the queued or running jobs that train on ``dataset``."""
    query = select(Job.id).where(Job.dataset_id == dataset.id, Job.status.in_(_ACTIVE_JOB_STATUSES))
    return list(session.scalars(query.order_by(Job.created_at)))


def delete_dataset(session: Session, store: ObjectStore, dataset: Dataset) -> None:
    """Remove a dataset's objects, then its row.

    Refused (409) while a queued or running job uses it. The row is marked ``deleting`` first,
    so no new job can pick it up while objects go; a dataset that finished jobs still refer to
    stays as a ``deleted`` record (its name freed) so those jobs keep their provenance.
    """
    if dataset.status == DatasetStatus.deleted.value:
        return
    jobs = active_jobs(session, dataset)
    if jobs:
        raise DatasetInUse(
            f"Dataset {dataset.id} is used by {len(jobs)} queued or running job(s): "
            f"{', '.join(jobs[:10])}. Wait for them to finish or cancel them, then delete it.",
            details={"jobs": jobs},
        )
    # Present until the upload completes, so a retried delete of one still aborts it.
    upload = dataset.options.get("upload")
    _mark_deleting(session, dataset)
    try:
        if upload is not None and dataset.archive_key is not None:
            store.abort_multipart_upload(dataset.archive_key, upload["id"])
        store.delete_prefix(dataset_prefix(dataset.team_id, dataset.id))
    except StoreUnavailable as exc:
        raise ServiceUnavailable(
            f"The object store is unavailable, so dataset {dataset.id} could not be fully "
            f"deleted ({exc}); it stays 'deleting'. Retry the DELETE.",
        ) from exc
    referenced = session.scalar(select(Job.id).where(Job.dataset_id == dataset.id).limit(1))
    if referenced is None:
        session.delete(dataset)  # its events go with it (ON DELETE CASCADE)
        session.commit()
        return
    state.transition(
        session,
        dataset.id,
        source=DatasetStatus.deleting,
        target=DatasetStatus.deleted,
        message="Deleted; the record stays for the jobs trained on it.",
        values={
            "name": f"{dataset.name[:160]} [deleted {dataset.id}]",
            "archive_key": None,
            "manifest_key": None,
        },
    )


def _mark_deleting(session: Session, dataset: Dataset) -> None:
    """Move ``dataset`` to ``deleting`` (a retried DELETE finds it there already). When an upload
    or validation moves it on first, the guard is tried again from its new status; statuses only
    move forward, so this ends."""
    while (status := DatasetStatus(dataset.status)) is not DatasetStatus.deleting:
        if state.transition(
            session,
            dataset.id,
            source=status,
            target=DatasetStatus.deleting,
            message="Deletion requested.",
        ):
            return


def expire_direct_uploads(
    session: Session, store: ObjectStore, *, now: datetime | None = None
) -> list[str]:
    """Delete direct uploads never completed within ``DIRECT_UPLOAD_TTL`` (their part URLs have
    expired, so they cannot be): abort the S3 multipart upload, whose parts would otherwise hold
    storage forever, and remove the row. Also finishes deletions left ``deleting`` for over
    ``STUCK_DELETE_AFTER`` because the store was down (an expiry the store refuses ends there
    too). Returns the ids dealt with."""
    now = now or utcnow()
    stale = session.scalars(
        select(Dataset)
        .where(
            (
                (Dataset.status == DatasetStatus.uploading.value)
                & (Dataset.created_at < now - DIRECT_UPLOAD_TTL)
            )
            | (
                (Dataset.status == DatasetStatus.deleting.value)
                & (Dataset.updated_at < now - STUCK_DELETE_AFTER)
            )
        )
        .order_by(Dataset.created_at)
    ).all()
    done = []
    for dataset in stale:
        try:
            delete_dataset(session, store, dataset)
        except ServiceUnavailable:
            log.warning("dataset %s: deletion failed, retried later", dataset.id, exc_info=True)
            continue
        done.append(dataset.id)
    return done


def manifest_key(dataset: Dataset) -> str:
    """The manifest of a ready dataset; 409 for any other status."""
    if dataset.status != DatasetStatus.ready.value or dataset.manifest_key is None:
        raise DatasetNotReady(
            f"Dataset {dataset.id} is {dataset.status}; only a ready dataset has a manifest."
        )
    return dataset.manifest_key


def _delete_quietly(store: ObjectStore, key: str) -> None:
    try:
        store.delete(key)
    except StoreUnavailable:
        # The request fails anyway; the orphan stays under the dataset's prefix, logged.
        log.warning("could not delete %s after a failed upload", key, exc_info=True)
