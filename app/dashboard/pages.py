"""How dashboard routes answer: pages rendered from the Jinja templates with the dashboard's
security headers, and failures as an HTML page (or a sign-in redirect) for people, while scripts
asking for JSON get the API's error envelope.

Every dashboard route uses ``DashboardRoute``, so a service error raised anywhere below a page
turns into the same page, with the error's status code, message and code.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Coroutine, Mapping
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from app.core.errors import InvalidInput, ServiceError
from app.core.pagination import MAX_OFFSET
from app.core.routing import ServiceRoute
from app.core.security_headers import ALWAYS, HTML_ONLY
from app.dashboard.auth import SignedIn, SignInRequired

PACKAGE_DIR = Path(__file__).resolve().parent
TEMPLATES_DIR = PACKAGE_DIR / "templates"
STATIC_DIR = PACKAGE_DIR / "static"
STATIC_URL = "/static"
SIGN_IN_PATH = "/sign-in"
PAGE_SIZE = 20  # rows per page of a list

PageNumber = Annotated[int, Query(ge=1, le=MAX_OFFSET // PAGE_SIZE, alias="page")]

# Scripts and styles only from this server (vendored libraries included): an injected tag or
# attribute cannot run, and no other site may frame the pages' buttons.
SECURITY_HEADERS: dict[str, str] = {**ALWAYS, **HTML_ONLY}


def duration(seconds: float | None) -> str:
    """``3725`` -> ``1 h 02 m``; ``65`` -> ``1 m 05 s``; None -> an en dash."""
    if seconds is None or not math.isfinite(seconds):
        return "–"
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} m"
    if minutes:
        return f"{minutes} m {secs:02d} s"
    return f"{secs} s"


def size(num_bytes: int | None) -> str:
    """Bytes in the largest unit that keeps the number >= 1 (``1536`` -> ``1.5 KiB``)."""
    if num_bytes is None:
        return "–"
    value = float(num_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def fraction(value: float | None, digits: int = 3) -> str:
    """A metric in [0, 1] with ``digits`` decimals (``–`` when absent)."""
    return "–" if value is None else f"{value:.{digits}f}"


def timestamp(value: datetime | None) -> str:
    return "–" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(duration=duration, size=size, fraction=fraction, timestamp=timestamp)
    env.globals["static"] = lambda path: f"{STATIC_URL}/{path}"
    return env


templates = Jinja2Templates(env=_environment())


def page(
    request: Request,
    template: str,
    user: SignedIn | None,
    context: Mapping[str, Any] | None = None,
    *,
    status_code: int = 200,
) -> Response:
    """Render ``template`` for ``user`` (None on the sign-in and error pages)."""
    return templates.TemplateResponse(
        request,
        template,
        {"user": user, "path": request.url.path, **(context or {})},
        status_code=status_code,
        headers={"Cache-Control": "no-store"},
    )


def list_window(page_number: int) -> tuple[int, int]:
    """``(limit, offset)`` of page ``page_number`` (from 1) of a list."""
    return PAGE_SIZE, (page_number - 1) * PAGE_SIZE


def page_count(total: int) -> int:
    """Pages a list of ``total`` rows takes (at least one, even when empty)."""
    return max(1, -(-total // PAGE_SIZE))


def sign_in_url(next_path: str) -> str:
    return f"{SIGN_IN_PATH}?next={quote(next_path, safe='/')}"


def is_fragment_request(request: Request) -> bool:
    """A request htmx makes to refresh part of a page."""
    return request.headers.get("hx-request") == "true"


def wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "") and not is_fragment_request(request)


def _failure(request: Request, exc: ServiceError) -> Response | None:
    """The response a person gets for ``exc``; None lets the API's JSON handler answer."""
    if is_fragment_request(request):
        # htmx follows these headers whatever the status; a 200 keeps the console clean.
        if isinstance(exc, SignInRequired):
            headers = {"HX-Redirect": sign_in_url(request.headers.get("hx-current-url", "/"))}
        else:
            headers = {"HX-Refresh": "true"}
        return Response(status_code=200, headers=headers)
    if not wants_html(request):
        return None
    if isinstance(exc, SignInRequired):
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(sign_in_url(path), status_code=303)
    return page(
        request,
        "error.html",
        getattr(request.state, "signed_in", None),
        {"status": exc.status_code, "code": exc.code, "message": exc.message},
        status_code=exc.status_code,
    )


class DashboardRoute(ServiceRoute):
    """An APIRoute whose failures answer people with pages and whose responses carry the
    dashboard's security headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                response = await handler(request)
            except ServiceError as exc:
                failure = _failure(request, exc)
                if failure is None:
                    raise
                response = failure
            except RequestValidationError as exc:
                summary = "; ".join(
                    f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg', '')}"
                    for err in exc.errors()[:5]
                )
                failure = _failure(request, InvalidInput(f"Invalid request: {summary}"))
                if failure is None:
                    raise
                response = failure
            response.headers.update(SECURITY_HEADERS)
            return response

        return route
