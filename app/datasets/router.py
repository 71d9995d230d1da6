"""Datasets over HTTP: streamed or direct-to-S3 uploads, listing, details, events, manifest,
deletion."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlalchemy import func, select

from app.audit.service import AuditAction, record
from app.core.db import new_id
from app.core.errors import ErrorOut, InvalidInput, ServiceUnavailable, error_responses
from app.core.events import EventOut, EventWindowDep, read_events
from app.core.pagination import MaxOffset, Page
from app.core.routing import ServiceRoute
from app.core.storage import ObjectNotFound, StoreUnavailable
from app.core.tenancy import get_owned, scoped
from app.datasets import service
from app.datasets.models import Dataset, DatasetEvent, DatasetStatus
from app.datasets.schemas import (
    CompleteUploadRequest,
    DatasetOut,
    DirectUploadOut,
    DirectUploadRequest,
    UploadRequest,
)
from app.datasets.upload import receive_archive
from app.deps import ActorDep, CurrentPrincipal, SessionDep, SettingsDep, StoreDep
from app.teams.quotas import upload_allowance

router = APIRouter(prefix="/datasets", tags=["datasets"], route_class=ServiceRoute)


def _field_schemas() -> dict[str, dict[str, Any]]:
    """UploadRequest's fields as plain JSON schemas (a query parameter or form field is never
    null: an optional field is simply left out)."""
    schemas: dict[str, dict[str, Any]] = {}
    for name, schema in UploadRequest.model_json_schema()["properties"].items():
        branches = [b for b in schema.get("anyOf", [schema]) if b.get("type") != "null"]
        plain = {k: v for k, v in schema.items() if k not in ("anyOf", "title", "default")}
        plain.update(branches[0])
        if schema.get("default") is not None:
            plain["default"] = schema["default"]
        schemas[name] = plain
    return schemas


_UPLOAD_FIELDS = _field_schemas()
_UPLOAD_BODY: dict[str, Any] = {
    "parameters": [
        {
            "name": name,
            "in": "query",
            "required": False,
            "schema": schema,
            "description": (
                "Raw-body uploads: required, the dataset's name. Multipart: a form field instead."
                if name == "name"
                else "Raw-body uploads only (multipart: a form field instead)."
            ),
        }
        for name, schema in _UPLOAD_FIELDS.items()
    ],
    "requestBody": {
        "required": True,
        "description": (
            "Either multipart/form-data with the fields of UploadRequest (name, layout, ...) "
            "BEFORE one file part holding the archive, or the raw archive as the body with the "
            "fields as query parameters (`?name=` required). Archives: .zip, .tar, .tar.gz."
        ),
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["name", "file"],
                    "properties": {
                        **_UPLOAD_FIELDS,
                        "file": {"type": "string", "format": "binary"},
                    },
                },
                "encoding": {"file": {"contentType": "application/octet-stream"}},
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    },
}


@router.post(
    "",
    status_code=202,
    openapi_extra=_UPLOAD_BODY,
    responses={
        409: {"model": ErrorOut, "description": "name taken"},
        413: {"model": ErrorOut, "description": "over FOPRO_MAX_UPLOAD_BYTES or the quota"},
        415: {"model": ErrorOut, "description": "not a zip/tar/tar.gz"},
    },
)
async def upload_dataset(
    request: Request,
    response: Response,
    principal: CurrentPrincipal,
    actor: ActorDep,
    session: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
) -> DatasetOut:
    """Upload an archive; answers 202 with the dataset ``validating``. Poll ``GET
    /v1/datasets/{id}`` until it is ``ready`` or ``invalid`` (``stats.progress`` shows how far)."""
    principal.require_write()
    declared = request.headers.get("content-length")
    allowance = await run_in_threadpool(
        upload_allowance,
        session,
        principal.team_id,
        settings,
        declared=int(declared) if declared and declared.isdigit() else None,
    )
    dataset_id = new_id("ds")
    parsed: list[UploadRequest] = []

    multipart = request.headers.get("content-type", "").startswith("multipart/form-data")

    def before_store(fields: dict[str, str], filename: str | None) -> None:
        if multipart and "name" not in fields:
            # Fields after the file are never read (the archive streams on), so say so.
            raise InvalidInput(
                "The form has no `name` field before its file part; send the text fields "
                "(name, layout, ...) first and the archive file last."
            )
        upload = service.parse_upload_fields(fields)
        service.ensure_name_free(session, principal.team_id, upload.name)
        parsed.append(upload)

    received = await receive_archive(
        request,
        store,
        service.archive_key(principal.team_id, dataset_id),
        max_bytes=allowance.max_bytes,
        before_store=before_store,
        too_large=allowance.too_large,
    )
    record(session, actor, AuditAction.dataset_upload, created=Dataset)
    dataset = await run_in_threadpool(
        service.register_upload,
        session,
        store,
        team_id=principal.team_id,
        dataset_id=dataset_id,
        request=parsed[0],
        stored=received.stored,
        archive_format=received.format.value,
    )
    response.headers["Location"] = f"/v1/datasets/{dataset.id}"
    return DatasetOut.model_validate(dataset)


@router.post("/uploads", status_code=201, responses=error_responses(501))
def begin_direct_upload(
    body: DirectUploadRequest,
    principal: CurrentPrincipal,
    actor: ActorDep,
    session: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
) -> DirectUploadOut:
    """For very large archives on an S3 store: get one presigned URL per part, PUT the parts
    straight to S3 (keep each response's ETag), then POST them to ``complete_url``."""
    principal.require_write()
    upload_allowance(session, principal.team_id, settings, declared=body.size)
    record(session, actor, AuditAction.dataset_upload_begin, created=Dataset)
    return service.begin_direct_upload(
        session, store, settings, team_id=principal.team_id, request=body
    )


@router.post("/uploads/{dataset_id}/complete", status_code=202)
def complete_direct_upload(
    dataset_id: str,
    body: CompleteUploadRequest,
    principal: CurrentPrincipal,
    actor: ActorDep,
    session: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
) -> DatasetOut:
    """Assemble the uploaded parts; the dataset goes on to ``validating``."""
    principal.require_write()
    dataset = get_owned(session, Dataset, dataset_id, principal.team_id, what="dataset")
    record(session, actor, AuditAction.dataset_upload_complete, dataset.id)
    return DatasetOut.model_validate(
        service.complete_direct_upload(session, store, settings, dataset, body.parts)
    )


@router.get("")
def list_datasets(
    principal: CurrentPrincipal,
    session: SessionDep,
    status: DatasetStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: MaxOffset = 0,
) -> Page[DatasetOut]:
    """The team's datasets, newest first; ``deleted`` records only when asked for by status."""
    query = scoped(Dataset, principal.team_id)
    if status is not None:
        query = query.where(Dataset.status == status.value)
    else:
        query = query.where(Dataset.status != DatasetStatus.deleted.value)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(
        query.order_by(Dataset.created_at.desc(), Dataset.id).limit(limit).offset(offset)
    )
    return Page[DatasetOut](
        items=[DatasetOut.model_validate(r) for r in rows], total=total, limit=limit, offset=offset
    )


@router.get("/{dataset_id}")
def read_dataset(dataset_id: str, principal: CurrentPrincipal, session: SessionDep) -> DatasetOut:
    """Status, problems and warnings, class counts per split, imbalance ratio, shot groups,
    image size histogram and, while validating, progress."""
    return DatasetOut.model_validate(
        get_owned(session, Dataset, dataset_id, principal.team_id, what="dataset")
    )


@router.get("/{dataset_id}/events")
def list_dataset_events(
    dataset_id: str, principal: CurrentPrincipal, session: SessionDep, window: EventWindowDep
) -> Page[EventOut]:
    """The dataset's creation and status changes, oldest first (``after_id``: only newer)."""
    dataset = get_owned(session, Dataset, dataset_id, principal.team_id, what="dataset")
    return read_events(session, DatasetEvent.dataset_id, dataset.id, window)


@router.get("/{dataset_id}/manifest", response_class=StreamingResponse)
def download_manifest(
    dataset_id: str,
    principal: CurrentPrincipal,
    actor: ActorDep,
    session: SessionDep,
    store: StoreDep,
) -> StreamingResponse:
    """The manifest CSV of a ready dataset (``foprokd.manifest.MANIFEST_HEADER`` columns)."""
    dataset = get_owned(session, Dataset, dataset_id, principal.team_id, what="dataset")
    key = service.manifest_key(dataset)
    try:
        handle = store.open(key)
    except (StoreUnavailable, ObjectNotFound) as exc:
        raise ServiceUnavailable(
            f"The manifest cannot be read from the object store: {exc}"
        ) from exc
    record(session, actor, AuditAction.dataset_manifest_download, dataset.id)
    session.commit()

    def chunks() -> Iterator[bytes]:
        with handle:
            while chunk := handle.read(256 * 1024):
                yield chunk

    return StreamingResponse(
        chunks(),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{dataset.id}-manifest.csv"'},
    )


@router.delete("/{dataset_id}", status_code=204)
def delete_dataset(
    dataset_id: str,
    principal: CurrentPrincipal,
    actor: ActorDep,
    session: SessionDep,
    store: StoreDep,
) -> Response:
    """Delete the dataset and its objects; 409 while a queued or running job uses it."""
    principal.require_write()
    dataset = get_owned(session, Dataset, dataset_id, principal.team_id, what="dataset")
    record(session, actor, AuditAction.dataset_delete, dataset.id)
    service.delete_dataset(session, store, dataset)
    return Response(status_code=204)
