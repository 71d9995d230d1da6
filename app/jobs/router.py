"""Distillation jobs over HTTP: submit, watch, cancel, retry, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from app.audit.service import AuditAction, record
from app.core.events import EventOut, EventWindowDep, read_events
from app.core.pagination import MAX_ROW_ID, MaxOffset, Page
from app.core.routing import ServiceRoute
from app.deps import (
    ActorDep,
    CallerDep,
    CurrentPrincipal,
    SessionDep,
    SettingsDep,
    StoreDep,
    in_one_hop,
)
from app.jobs import service
from app.jobs.models import Job, JobEvent, JobStatus
from app.jobs.schemas import JobCreate, JobMetricsOut, JobOut
from app.jobs.stream import job_stream

router = APIRouter(prefix="/jobs", tags=["jobs"], route_class=ServiceRoute)

IdempotencyKey = Annotated[
    str | None,
    Header(
        min_length=1,
        max_length=200,
        description="Repeat a request safely: the same key returns the same job (200).",
    ),
]


@router.post("", status_code=status.HTTP_201_CREATED)
def submit_job(
    body: JobCreate,
    principal: CurrentPrincipal,
    actor: ActorDep,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> JobOut:
    """Queue a distillation job (201); a repeated ``Idempotency-Key`` returns the first (200)."""
    record(session, actor, AuditAction.job_create, created=Job)
    job, created = service.create_job(
        session, principal, body, idempotency_key=idempotency_key, settings=settings
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    return JobOut.model_validate(job)


# The two routes dashboards poll do the key lookup and their queries in one thread hop (``Caller``).


@router.get("")
async def list_jobs(
    caller: CallerDep,
    status: JobStatus | None = None,
    dataset_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: MaxOffset = 0,
) -> Page[JobOut]:
    return await in_one_hop(
        lambda session: service.list_jobs(
            session,
            caller.principal(session),
            status=status,
            dataset_id=dataset_id,
            limit=limit,
            offset=offset,
        )
    )


@router.get("/{job_id}")
async def read_job(job_id: str, caller: CallerDep) -> JobOut:
    return await in_one_hop(
        lambda session: JobOut.model_validate(
            service.get_job(session, caller.principal(session), job_id)
        )
    )


@router.get("/{job_id}/events")
def list_job_events(
    job_id: str,
    principal: CurrentPrincipal,
    session: SessionDep,
    window: EventWindowDep,
) -> Page[EventOut]:
    service.get_job(session, principal, job_id)
    return read_events(session, JobEvent.job_id, job_id, window)


@router.get("/{job_id}/stream", response_class=StreamingResponse)
def stream_job(
    job_id: str,
    request: Request,
    principal: CurrentPrincipal,
    session: SessionDep,
    last_event_id: Annotated[int | None, Header(ge=0, le=MAX_ROW_ID)] = None,
) -> StreamingResponse:
    """Server-Sent Events: ``job_event`` (id = event id), ``progress`` and a final ``end``."""
    service.get_job(session, principal, job_id)
    return StreamingResponse(
        job_stream(
            job_id,
            principal.team_id,
            key_id=principal.key_id,
            after_id=last_event_id or 0,
            is_disconnected=request.is_disconnected,
        ),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/{job_id}/metrics")
def read_job_metrics(
    job_id: str, principal: CurrentPrincipal, session: SessionDep
) -> JobMetricsOut:
    return service.job_metrics(session, principal, job_id)


@router.post("/{job_id}/cancel")
def cancel_job(
    job_id: str, principal: CurrentPrincipal, actor: ActorDep, session: SessionDep
) -> JobOut:
    """Queued: cancelled now. Running: stops at its next training step (``cancel_requested``)."""
    record(session, actor, AuditAction.job_cancel, job_id)
    return JobOut.model_validate(service.cancel_job(session, principal, job_id))


@router.post("/{job_id}/retry", status_code=status.HTTP_201_CREATED)
def retry_job(
    job_id: str,
    principal: CurrentPrincipal,
    actor: ActorDep,
    session: SessionDep,
    settings: SettingsDep,
) -> JobOut:
    """A new job repeating a failed or cancelled one, resuming from its last checkpoint."""
    record(session, actor, AuditAction.job_retry, created=Job, details={"retry_of": job_id})
    return JobOut.model_validate(service.retry_job(session, principal, job_id, settings))


@router.delete("/{job_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_job(
    job_id: str,
    principal: CurrentPrincipal,
    actor: ActorDep,
    session: SessionDep,
    store: StoreDep,
) -> Response:
    """Delete a finished job with its artifacts, checkpoints and events (204); 409 while it is
    queued or running, or while a retry resumes from its checkpoint."""
    record(session, actor, AuditAction.job_delete, job_id)
    service.delete_job(session, store, principal, job_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
