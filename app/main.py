"""The HTTP service. Never imports torch: the API image stays small and starts fast."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path
from starlette.types import Message, Receive, Scope, Send

from app.audit.router import router as audit_router
from app.core.body_limits import BodyLimits
from app.core.config import get_settings
from app.core.errors import API_ERRORS, ServiceError
from app.core.metrics import install_metrics
from app.core.ratelimit import RateLimitHeaders
from app.core.request_id import REQUEST_ID_HEADER, current_request_id, install_request_ids
from app.core.security_headers import ALWAYS, API_CSP, install_security_headers
from app.dashboard.router import install_dashboard
from app.datasets.router import router as datasets_router
from app.health import router as health_router
from app.jobs.metrics import JOB_SYSTEM
from app.jobs.router import router as jobs_router
from app.students.router import links as download_links_router
from app.students.router import router as students_router
from app.students.signing import router as signing_router
from app.teachers.router import router as teachers_router
from app.teams.router import router as teams_router

log = logging.getLogger("fopro.api")


def _error(
    status: int,
    code: str,
    message: str,
    details: object = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, object] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def _allowed_methods(request: Request) -> str:
    """Every method some route serves at this path: Starlette's own ``Allow`` names only the
    first route that matched the path (GET and POST of one path are two routes here)."""
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.routes):
        if route.path and compile_path(route.path)[0].fullmatch(request.url.path):
            methods |= set(route.methods or ())
    return ", ".join(sorted(methods))


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return _error(exc.status_code, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"field": ".".join(str(p) for p in err.get("loc", ())), "problem": err.get("msg", "")}
            for err in exc.errors()
        ]
        summary = "; ".join(f"{p['field']}: {p['problem']}" for p in problems[:5])
        return _error(422, "invalid_input", f"Invalid request: {summary}", problems)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = _allowed_methods(request)
        return _error(exc.status_code, code, str(exc.detail), headers=headers)

    @app.exception_handler(OperationalError)
    async def database_unavailable(request: Request, exc: OperationalError) -> JSONResponse:
        # Out of connections, restarting, a lock timeout: nothing the client did, worth a retry.
        log.warning(
            "database unavailable on %s %s: %s",
            request.method,
            request.url.path,
            type(exc.orig).__name__,
        )
        return _error(
            503,
            "unavailable",
            "The database did not answer (busy or restarting); retry in a moment.",
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(PoolTimeout)
    async def connections_busy(request: Request, exc: PoolTimeout) -> JSONResponse:
        log.warning(
            "no database connection free on %s %s within the pool's timeout",
            request.method,
            request.url.path,
        )
        return _error(
            503,
            "unavailable",
            "Every database connection of this API process is busy; retry in a moment.",
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # The traceback goes to the log only: exception text can hold SQL, paths or secrets.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        rid = current_request_id() or ""
        return _error(
            500,
            "internal_error",
            f"Internal error; quote request id {rid} to support.",
            {"request_id": rid},
            # Sent from outside every middleware, so their headers are added here.
            headers={REQUEST_ID_HEADER: rid, **ALWAYS, "Content-Security-Policy": API_CSP},
        )


class ServiceApp(FastAPI):
    """FastAPI that does not hand an error it has already answered (and logged, with the
    request id, in the 500 handler) on to the server, which would log it a second time."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        answered = False

        async def noting_send(message: Message) -> None:
            nonlocal answered
            answered = answered or message["type"] == "http.response.start"
            await send(message)

        try:
            await super().__call__(scope, receive, noting_send)
        except Exception:
            if not answered:
                raise


def create_app() -> FastAPI:
    app = ServiceApp(
        title="FoPro-KD Service",
        version="0.1.0",
        description="Distil compact students from frozen teachers on small long-tailed image sets.",
    )

    app.add_middleware(BodyLimits)
    app.add_middleware(RateLimitHeaders)
    install_request_ids(app)
    settings = get_settings()
    install_security_headers(app, settings)
    install_metrics(app, [JOB_SYSTEM], slow_request_s=settings.slow_request_s)
    _install_error_handlers(app)
    app.include_router(health_router)
    app.include_router(teams_router, prefix="/v1", responses=API_ERRORS)
    app.include_router(datasets_router, prefix="/v1", responses=API_ERRORS)
    app.include_router(teachers_router, prefix="/v1", responses=API_ERRORS)
    app.include_router(students_router, prefix="/v1", responses=API_ERRORS)
    app.include_router(jobs_router, prefix="/v1", responses=API_ERRORS)
    app.include_router(audit_router, prefix="/v1", responses=API_ERRORS)
    app.include_router(download_links_router)  # signed links: the token is the credential
    app.include_router(signing_router)  # a public key: no credential
    install_dashboard(app)
    return app


app = create_app()
