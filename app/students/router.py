"""``/v1/jobs/{job_id}/artifacts`` (list, download with Range or a presigned redirect) and
``/v1/jobs/{job_id}/predict`` (the exported ONNX student, run in the API)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Annotated, BinaryIO

from fastapi import APIRouter, File, Query, Request, Response, UploadFile
from fastapi.responses import JSONResponse, RedirectResponse, StreamingResponse

from app.core.deps import CurrentPrincipal, SessionDep, SettingsDep, StoreDep
from app.core.storage import COPY_CHUNK_BYTES, content_disposition
from app.students.byte_ranges import RangeNotSatisfiable, parse_range
from app.students.models import Artifact
from app.students.predict import predict_for_job
from app.students.schemas import ArtifactOut, PredictionsOut
from app.students.service import get_artifact, list_artifacts

router = APIRouter(prefix="/jobs/{job_id}", tags=["artifacts"])


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


@router.get("/artifacts/{name}", response_class=StreamingResponse)
def download_artifact(
    job_id: str,
    name: str,
    request: Request,
    principal: CurrentPrincipal,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    redirect: Annotated[
        bool, Query(description="On S3, answer 307 to a short-lived presigned URL.")
    ] = False,
) -> Response:
    """Stream one artifact; ``Range: bytes=a-b`` answers 206 with that slice (416 if invalid)."""
    artifact = get_artifact(session, principal.team_id, job_id, name)
    if redirect:
        url = store.download_url(
            artifact.object_key,
            expires=timedelta(seconds=settings.download_url_ttl_s),
            filename=artifact.name,
        )
        if url is not None:
            return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})
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


@router.post("/predict")
def predict(
    job_id: str,
    principal: CurrentPrincipal,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    files: Annotated[list[UploadFile], File(description="One or more image files.")],
    top_k: Annotated[int, Query(ge=1, le=1000, description="Classes per image.")] = 5,
) -> PredictionsOut:
    """Top-k classes per image from the job's student.onnx, preprocessed as in training."""
    # Read one byte past the limit: enough to refuse an oversized file without holding it all.
    images = [
        (upload.filename or f"image-{i}", upload.file.read(settings.max_file_bytes + 1))
        for i, upload in enumerate(files)
    ]
    return predict_for_job(
        session, store, settings, team_id=principal.team_id, job_id=job_id, images=images, k=top_k
    )
