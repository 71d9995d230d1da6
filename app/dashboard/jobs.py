"""Job pages: the list (live), one job (live over SSE, curves, test report, artifacts, events),
the new-job form, and the cancel / retry / delete buttons.

Every read and write calls the function the matching ``/v1`` route calls (or the route function
itself), so a page shows exactly what the API returns and obeys the same rules.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import RedirectResponse, StreamingResponse
from pydantic import ValidationError
from sqlalchemy.orm import Session

from app.audit.service import AuditAction, record
from app.core.errors import InvalidInput, NotFound, ServiceError
from app.core.events import EventOut, EventWindow
from app.core.pagination import MAX_ROW_ID
from app.dashboard import views
from app.dashboard.auth import CsrfCheckedDep, SignedIn, SignedInDep
from app.dashboard.pages import DashboardRoute, PageNumber, list_window, page, page_count
from app.datasets import router as datasets_api
from app.datasets.models import DatasetStatus
from app.deps import SessionDep, SettingsDep, StoreDep, actor_for
from app.jobs import router as jobs_api
from app.jobs import service as jobs_service
from app.jobs.models import Job, JobStatus
from app.jobs.schemas import JobCreate, JobOut, Priority
from app.students import router as artifacts_api
from app.teachers import router as teachers_api
from foprokd.catalog import STUDENTS, find_weights
from foprokd.hyperparams import DEFAULT_METHOD

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)

EVENTS_SHOWN = 200
STATUS_FILTERS = [None, *JobStatus]


def _status_filter(value: str) -> JobStatus | None:
    if not value:
        return None
    try:
        return JobStatus(value)
    except ValueError:
        raise InvalidInput(
            f"No job status {value!r}; use one of {', '.join(s.value for s in JobStatus)}."
        ) from None


def _jobs_table(session: Session, user: SignedIn, status: str, page_number: int) -> dict[str, Any]:
    limit, offset = list_window(page_number)
    listing = jobs_service.list_jobs(
        session,
        user.principal,
        status=_status_filter(status),
        dataset_id=None,
        limit=limit,
        offset=offset,
    )
    return {
        "jobs": [(job, views.progress_view(job)) for job in listing.items],
        "total": listing.total,
        "status": status,
        "page_number": page_number,
        "pages": page_count(listing.total),
    }


@router.get("/jobs")
def jobs_page(
    request: Request,
    user: SignedInDep,
    session: SessionDep,
    status: str = "",
    page_number: PageNumber = 1,
) -> Response:
    return page(
        request,
        "jobs.html",
        user,
        {"filters": STATUS_FILTERS, **_jobs_table(session, user, status, page_number)},
    )


@router.get("/jobs/table")
def jobs_table(
    request: Request,
    user: SignedInDep,
    session: SessionDep,
    status: str = "",
    page_number: PageNumber = 1,
) -> Response:
    """The list's table alone: htmx swaps it in every few seconds."""
    return page(request, "_jobs_table.html", user, _jobs_table(session, user, status, page_number))


def _new_job_form(
    request: Request,
    user: SignedIn,
    session: SessionDep,
    settings: SettingsDep,
    *,
    values: dict[str, Any],
    errors: list[str],
    status_code: int = 200,
) -> Response:
    fields = views.param_fields(include_admin_only=user.is_admin)
    datasets = datasets_api.list_datasets(
        user.principal, session, status=DatasetStatus.ready, limit=200, offset=0
    )
    assert settings.weights_dir is not None  # Settings fills it from the data dir
    students = [(name, find_weights(name, settings.weights_dir)) for name in STUDENTS]
    return page(
        request,
        "new_job.html",
        user,
        {
            "datasets": datasets.items,
            "teachers": teachers_api.list_teachers(user.principal, session, settings),
            "students": students,
            "methods": views.METHODS_WITH_HELP,
            "priorities": list(Priority),
            "fields": fields,
            "values": values,
            "errors": errors,
            # A fresh key per rendered form: a double click or a resent POST makes one job.
            "idempotency_key": secrets.token_urlsafe(16),
        },
        status_code=status_code,
    )


@router.get("/jobs/new")
def new_job_form(
    request: Request,
    user: SignedInDep,
    session: SessionDep,
    settings: SettingsDep,
    dataset_id: str = "",
) -> Response:
    user.principal.require_write()
    defaults = {f.name: f.default for f in views.param_fields(include_admin_only=user.is_admin)}
    values = {
        "dataset_id": dataset_id,
        "teacher": "",
        "student": "",
        "method": DEFAULT_METHOD,
        "priority": Priority.normal.value,
        **defaults,
    }
    return _new_job_form(request, user, session, settings, values=values, errors=[])


@router.post("/jobs/new")
async def submit_job(
    request: Request, user: CsrfCheckedDep, session: SessionDep, settings: SettingsDep
) -> Response:
    """Validate the form as ``POST /v1/jobs`` validates its body; errors re-render the form
    with what was typed."""
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    fields = views.param_fields(include_admin_only=user.is_admin)
    params = views.parse_params(form, fields)
    shown = {**form, **{f.name: params.get(f.name, "") for f in fields}}
    try:
        body = JobCreate.model_validate(
            {
                "dataset_id": form.get("dataset_id", ""),
                "teacher": form.get("teacher", ""),
                "student": form.get("student", ""),
                "method": form.get("method", DEFAULT_METHOD),
                "priority": form.get("priority", Priority.normal.value),
                "params": params,
            },
            strict=False,  # a form sends text: "7" is the number the user typed
        )
        record(session, actor_for(request, user.principal), AuditAction.job_create, created=Job)
        job, _ = jobs_service.create_job(
            session,
            user.principal,
            body,
            idempotency_key=form.get("idempotency_key") or None,
            settings=settings,
        )
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in err['loc'] if p != 'params')}: {err['msg']}"
            for err in exc.errors()
        ]
        return _new_job_form(
            request, user, session, settings, values=shown, errors=problems, status_code=422
        )
    except ServiceError as exc:
        return _new_job_form(
            request,
            user,
            session,
            settings,
            values=shown,
            errors=[exc.message],
            status_code=exc.status_code,
        )
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)


def _recent_events(session: Session, user: SignedIn, job_id: str) -> tuple[list[EventOut], int]:
    """The job's last ``EVENTS_SHOWN`` events, oldest first, and how many there are."""
    total = jobs_api.list_job_events(job_id, user.principal, session, EventWindow(limit=1)).total
    window = EventWindow(limit=EVENTS_SHOWN, offset=max(0, total - EVENTS_SHOWN))
    return jobs_api.list_job_events(job_id, user.principal, session, window).items, total


@router.get("/jobs/{job_id}")
def job_page(request: Request, job_id: str, user: SignedInDep, session: SessionDep) -> Response:
    job = JobOut.model_validate(jobs_service.get_job(session, user.principal, job_id))
    metrics = jobs_api.read_job_metrics(job_id, user.principal, session)
    events, events_total = _recent_events(session, user, job_id)
    try:
        dataset_name: str | None = datasets_api.read_dataset(
            job.dataset_id, user.principal, session
        ).name
    except NotFound:
        dataset_name = None
    return page(
        request,
        "job.html",
        user,
        {
            "job": job,
            "progress": views.progress_view(job),
            "actions": views.job_actions(job),
            "metrics": metrics,
            "report": views.report_view(metrics.report, metrics.trust) if metrics.report else None,
            "trust": views.trust_view(metrics.trust),
            "artifacts": artifacts_api.read_artifacts(job_id, user.principal, session),
            "events": events,
            "events_total": events_total,
            "dataset_name": dataset_name,
            "live": {
                "job_id": job.id,
                "status": job.status.value,
                "last_event_id": events[-1].id if events else 0,
                "metrics": metrics.model_dump(mode="json", include={"epochs", "best_epoch"}),
            },
        },
    )


@router.get("/jobs/{job_id}/stream", response_class=StreamingResponse)
def job_stream(
    job_id: str,
    request: Request,
    user: SignedInDep,
    session: SessionDep,
    after_id: Annotated[int, Query(ge=0, le=MAX_ROW_ID)] = 0,
    last_event_id: Annotated[int | None, Header(ge=0, le=MAX_ROW_ID)] = None,
) -> StreamingResponse:
    """``GET /v1/jobs/{id}/stream`` for the page's EventSource, which cannot send a bearer key;
    ``after_id`` skips the events the page was rendered with (a reconnect sends Last-Event-ID)."""
    return jobs_api.stream_job(
        job_id, request, user.principal, session, last_event_id=last_event_id or after_id
    )


@router.get("/jobs/{job_id}/metrics")
def job_metrics(job_id: str, user: SignedInDep, session: SessionDep) -> Any:
    """The curves the page redraws after every epoch (``GET /v1/jobs/{id}/metrics``)."""
    return jobs_api.read_job_metrics(job_id, user.principal, session)


@router.get("/jobs/{job_id}/artifacts/{name}", response_class=StreamingResponse)
def download_artifact(
    job_id: str,
    name: str,
    request: Request,
    user: SignedInDep,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
) -> Response:
    """The download button: ``GET /v1/jobs/{id}/artifacts/{name}`` (Range included)."""
    actor = actor_for(request, user.principal)
    return artifacts_api.download_artifact(
        job_id, name, request, user.principal, actor, session, store, settings, redirect=False
    )


@router.post("/jobs/{job_id}/cancel")
def cancel_job(
    job_id: str, request: Request, user: CsrfCheckedDep, session: SessionDep
) -> Response:
    jobs_api.cancel_job(job_id, user.principal, actor_for(request, user.principal), session)
    return RedirectResponse(f"/jobs/{job_id}", status_code=303)


@router.post("/jobs/{job_id}/retry")
def retry_job(
    job_id: str,
    request: Request,
    user: CsrfCheckedDep,
    session: SessionDep,
    settings: SettingsDep,
) -> Response:
    actor = actor_for(request, user.principal)
    retry = jobs_api.retry_job(job_id, user.principal, actor, session, settings)
    return RedirectResponse(f"/jobs/{retry.id}", status_code=303)


@router.post("/jobs/{job_id}/delete")
def delete_job(
    job_id: str, request: Request, user: CsrfCheckedDep, session: SessionDep, store: StoreDep
) -> Response:
    actor = actor_for(request, user.principal)
    jobs_api.delete_job(job_id, user.principal, actor, session, store)
    return RedirectResponse("/jobs", status_code=303)
