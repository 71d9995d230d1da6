"""Security headers on every response, and CORS only where settings name the origins.

A pure ASGI wrapper (Starlette's ``BaseHTTPMiddleware`` would buffer streamed downloads and event
streams): it adds headers to the response start and passes every body message through untouched.

* every response: ``X-Content-Type-Options: nosniff`` (a JSON error is never sniffed into HTML)
  and ``Referrer-Policy``;
* HTML (the dashboard): a strict ``Content-Security-Policy`` (scripts and styles only from this
  server, ``frame-ancestors 'none'``) and ``X-Frame-Options: DENY`` for older browsers;
  everything else gets ``default-src 'none'``: an API answer has nothing to run or frame;
* ``Strict-Transport-Security`` only when the request came over TLS (directly, or as uvicorn's
  proxy headers report it), or always with ``FOPRO_HSTS_BEHIND_PROXY`` where a TLS proxy in front
  does not forward the scheme: over plain HTTP the header would be ignored, or pin a dev box.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.config import Settings, get_settings

HTML_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'"
)
API_CSP = "default-src 'none'; frame-ancestors 'none'"
ALWAYS: dict[str, str] = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
HTML_ONLY: dict[str, str] = {"Content-Security-Policy": HTML_CSP, "X-Frame-Options": "DENY"}


class SecurityHeaders:
    """Adds the headers above to each HTTP response start; a header the route set stays."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        settings = get_settings()
        hsts = f"max-age={settings.hsts_max_age_s}; includeSubDomains"
        with_hsts = scope.get("scheme") == "https" or settings.hsts_behind_proxy

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                content_type = next(
                    (value for name, value in headers if name.lower() == b"content-type"), b""
                )
                wanted = dict(ALWAYS)
                if content_type.startswith(b"text/html"):
                    wanted.update(HTML_ONLY)
                else:
                    wanted["Content-Security-Policy"] = API_CSP
                if with_hsts:
                    wanted["Strict-Transport-Security"] = hsts
                headers.extend(
                    (name.lower().encode(), value.encode())
                    for name, value in wanted.items()
                    if name.lower().encode() not in present
                )
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install_security_headers(app: FastAPI, settings: Settings) -> None:
    """The headers above on every response; CORS only for ``FOPRO_CORS_ORIGINS`` (none: off,
    so browsers refuse cross-origin calls with a team's key)."""
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"],
            expose_headers=["X-Request-ID", "Retry-After", "Location"],
        )
    app.add_middleware(SecurityHeaders)
