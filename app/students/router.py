"""``/v1/jobs/{job_id}/artifacts`` (list, download with Range or a short-lived link) and
``/v1/jobs/{job_id}/predict`` (the exported ONNX student, run in the API).

``?redirect=true`` answers 307 to a link that needs no API key and expires after
``FOPRO_DOWNLOAD_URL_TTL_S``: a presigned URL on S3, or on a local store ``/downloads/{token}``
served by this API and signed with ``FOPRO_SECRET_KEY`` (so a clinic device or a browser can fetch
a student without holding the team's key)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from enum import StrEnum
from functools import partial
from typing import Annotated, Any, BinaryIO

import numpy as np
from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, RedirectResponse, StreamingResponse

from app.audit.service import Actor, AuditAction, record
from app.core.errors import ErrorOut, NotFound, ServiceError, error_responses
from app.core.request_id import current_request_id
from app.core.routing import ServiceRoute
from app.core.security import sign_download, verify_download
from app.core.storage import COPY_CHUNK_BYTES, ObjectStore, content_disposition
from app.deps import ActorDep, CurrentPrincipal, SessionDep, SettingsDep, StoreDep, client_address
from app.students.byte_ranges import RangeNotSatisfiable, parse_range
from app.students.explain import check_profile, occlusion_plan
from app.students.models import Artifact
from app.students.predict import (
    MAX_IMAGES_PER_REQUEST,
    Precision,
    predict_batch,
    student_for_job,
)
from app.students.predict_limits import (
    IMAGE_FIELD,
    PredictBudget,
    decode_images,
    decode_reduced,
    image_parts,
    prediction_slots,
)
from app.students.schemas import ArtifactOut, PredictionsOut
from app.students.service import get_artifact, list_artifacts

router = APIRouter(prefix="/jobs/{job_id}", tags=["artifacts"], route_class=ServiceRoute)


class ExplainMethod(StrEnum):
    occlusion = "occlusion"


links = APIRouter(tags=["artifacts"], route_class=ServiceRoute)


class InvalidDownloadLink(ServiceError):
    status_code = 403
    code = "invalid_link"


def _artifact_out(artifact: Artifact) -> ArtifactOut:
    return ArtifactOut(
        name=artifact.name,
        media_type=artifact.media_type,
        bytes=artifact.bytes,
        sha256=artifact.sha256,
        created_at=artifact.created_at,
        url=f"/v1/jobs/{artifact.job_id}/artifacts/{artifact.name}",
    )


@router.get("/artifacts")
def read_artifacts(
    job_id: str, principal: CurrentPrincipal, session: SessionDep
) -> list[ArtifactOut]:
    """What the job produced (empty until it succeeds): name, bytes, sha256, media type."""
    return [_artifact_out(a) for a in list_artifacts(session, principal.team_id, job_id)]


@router.get(
    "/artifacts/{name}",
    response_class=StreamingResponse,
    responses={
        206: {"description": "The byte range asked for with `Range`."},
        307: {"description": "With `?redirect=true`: to a short-lived link needing no key."},
        **error_responses(416),
    },
)
def download_artifact(
    job_id: str,
    name: str,
    request: Request,
    principal: CurrentPrincipal,
    actor: ActorDep,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    redirect: Annotated[
        bool,
        Query(description="Answer 307 to a short-lived link that needs no API key."),
    ] = False,
) -> Response:
    """Stream one artifact; ``Range: bytes=a-b`` answers 206 with that slice (416 if invalid)."""
    artifact = get_artifact(session, principal.team_id, job_id, name)
    action = AuditAction.artifact_link if redirect else AuditAction.artifact_download
    record(session, actor, action, f"{job_id}/{name}", details=_range_of(request))
    session.commit()
    if redirect:
        ttl = timedelta(seconds=settings.download_url_ttl_s)
        url = store.download_url(artifact.object_key, expires=ttl, filename=artifact.name)
        if url is None:  # the store cannot presign: this API serves a signed link itself
            token = sign_download(artifact.id, settings.secret_key, settings.download_url_ttl_s)
            url = str(request.url_for("download_by_link", token=token))
        return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})
    return _serve(artifact, request, store)


@links.get(
    "/downloads/{token}",
    response_class=StreamingResponse,
    responses=error_responses(403, 404, 416, 503),
)
def download_by_link(
    token: str, request: Request, session: SessionDep, store: StoreDep, settings: SettingsDep
) -> Response:
    """An artifact by the signed, expiring link ``?redirect=true`` handed out (no API key)."""
    artifact_id = verify_download(token, settings.secret_key)
    if artifact_id is None:
        raise InvalidDownloadLink(
            "This download link is invalid or has expired; ask the API for a new one "
            "(GET /v1/jobs/{id}/artifacts/{name}?redirect=true)."
        )
    artifact = session.get(Artifact, artifact_id)  # the token grants this one row
    if artifact is None:
        raise NotFound("The file behind this download link no longer exists.")
    # A link carries no key: the record names the team that owns the file and no actor.
    anonymous = Actor(
        artifact.team_id, None, None, None, client_address(request), current_request_id()
    )
    record(
        session,
        anonymous,
        AuditAction.artifact_link_download,
        f"{artifact.job_id}/{artifact.name}",
        details=_range_of(request),
    )
    session.commit()
    return _serve(artifact, request, store)


def _range_of(request: Request) -> dict[str, str]:
    range_header = request.headers.get("range")
    return {"range": range_header[:100]} if range_header else {}


def _serve(artifact: Artifact, request: Request, store: ObjectStore) -> Response:
    etag = f'"{artifact.sha256}"'
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": etag,
        "Content-Disposition": content_disposition(artifact.name),
    }
    range_header = request.headers.get("range")
    if_range = request.headers.get("if-range")
    # A client resuming a download of a file that has since changed gets the whole new file.
    if if_range is not None and if_range != etag:
        range_header = None
    try:
        byte_range = parse_range(range_header, artifact.bytes)
    except RangeNotSatisfiable as exc:
        return JSONResponse(
            {"error": {"code": exc.code, "message": exc.message, "details": exc.details}},
            status_code=exc.status_code,
            headers={"Content-Range": f"bytes */{exc.size}", **headers},
        )
    if byte_range is None:
        stream = store.open(artifact.object_key)
        headers["Content-Length"] = str(artifact.bytes)
        status_code = 200
    else:
        stream = store.open_range(artifact.object_key, byte_range.start, byte_range.length)
        headers["Content-Length"] = str(byte_range.length)
        headers["Content-Range"] = byte_range.content_range
        status_code = 206
    return StreamingResponse(
        _chunks(stream), status_code=status_code, media_type=artifact.media_type, headers=headers
    )


def _chunks(stream: BinaryIO) -> Iterator[bytes]:
    try:
        while chunk := stream.read(COPY_CHUNK_BYTES):
            yield chunk
    finally:
        stream.close()


_PREDICT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [IMAGE_FIELD],
                    "properties": {
                        IMAGE_FIELD: {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "One or more image files (PNG, JPEG, TIFF, ...).",
                        }
                    },
                }
            }
        },
    }
}


@router.post(
    "/predict",
    openapi_extra=_PREDICT_BODY,
    responses={
        409: {"model": ErrorOut, "description": "the job has no exported student"},
        413: {"model": ErrorOut, "description": "too many images, bytes or pixels"},
        429: {"model": ErrorOut, "description": "rate limit, or predictions busy on this server"},
    },
)
async def predict(
    job_id: str,
    request: Request,
    principal: CurrentPrincipal,
    actor: ActorDep,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    top_k: Annotated[int, Query(ge=1, le=1000, description="Classes per image.")] = 5,
    threshold_profile: Annotated[
        str | None,
        Query(
            max_length=32,
            description="Flag findings at an operating point of config.json (sens90: the "
            "thresholds that reached 90 % sensitivity per class on val; sens95).",
        ),
    ] = None,
    explain: Annotated[
        ExplainMethod | None,
        Query(description="occlusion: a heat map per image for its most probable class."),
    ] = None,
    patch: Annotated[
        int | None,
        Query(ge=1, le=1024, description="Occlusion patch side in px (default: S / 8)."),
    ] = None,
    precision: Annotated[
        Precision,
        Query(
            description="fp32: the student; int8: its INT8 model, where the job published one "
            "(409 int8_not_published says why not). Temperature and operating points are the "
            "FP32 student's, fitted on val."
        ),
    ] = Precision.fp32,
) -> PredictionsOut:
    """Top-k classes per image from the job's student.onnx, preprocessed as in training, with
    calibrated probabilities; optionally findings at an operating point and heat maps.

    The job, its student and the profile are checked before the body is read; images are then
    read and decoded one at a time within the request's budget (``app.students.predict_limits``)."""
    runtime = await run_in_threadpool(
        partial(
            student_for_job,
            session,
            store,
            team_id=principal.team_id,
            job_id=job_id,
            precision=precision,
        )
    )
    if threshold_profile is not None:
        check_profile(threshold_profile, runtime.thresholds)
    budget = PredictBudget(
        max_images=MAX_IMAGES_PER_REQUEST,
        max_image_bytes=settings.max_file_bytes,
        max_total_bytes=settings.max_predict_bytes,
        max_image_pixels=settings.max_predict_image_pixels,
        max_total_pixels=settings.max_predict_pixels,
    )

    def decode(data: bytes) -> tuple[np.ndarray, int]:
        return decode_reduced(data, runtime.image_size, max_pixels=budget.max_image_pixels)

    with prediction_slots.hold(settings.max_concurrent_predictions):
        names, batch = await decode_images(
            image_parts(request, budget), decode, budget, run_in_threadpool
        )
        occlusion_patch = (
            occlusion_plan(runtime.image_size, patch, len(names), settings.explain_max_passes)
            if explain is not None
            else None
        )
        out = await run_in_threadpool(
            lambda: predict_batch(
                runtime,
                job_id,
                names,
                batch,
                top_k,
                threshold_profile=threshold_profile,
                patch=occlusion_patch,
            )
        )
    record(
        session,
        actor,
        AuditAction.job_predict,
        job_id,
        details={"images": len(names), "precision": precision.value},
    )
    await run_in_threadpool(session.commit)
    return out
