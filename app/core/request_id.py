"""Request ids: each HTTP request carries one, each response returns it, each log line written
while serving it names it, so a user quoting an id leads to the lines of that request.

The id is the client's ``X-Request-ID`` when it is a sane token (see ``is_sane_request_id``), else
a fresh one. asgi-correlation-id's middleware carries it: pure ASGI, since Starlette's
``BaseHTTPMiddleware`` would buffer streamed and Server-Sent-Events responses. This module holds
the policy around it. API only: the worker image does not install that package.
"""

from __future__ import annotations

import logging
import re
import uuid

from asgi_correlation_id import CorrelationIdMiddleware, correlation_id
from starlette.applications import Starlette

REQUEST_ID_HEADER = "X-Request-ID"
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


def is_sane_request_id(value: str) -> bool:
    """True for 1 to 128 characters of ASCII letters, digits, ``.``, ``_`` and ``-``: safe to put
    in a header, a log line and a JSON body as it is. Anything else is replaced, not cleaned."""
    return _SANE_REQUEST_ID.fullmatch(value) is not None


def new_request_id() -> str:
    """A fresh id: 32 hex digits (a random UUID)."""
    return uuid.uuid4().hex


def current_request_id() -> str | None:
    """The id of the request this code runs for, or None outside a request."""
    return correlation_id.get()


def install_request_ids(app: Starlette) -> None:
    """Give every request of ``app`` an id and every response the ``X-Request-ID`` header.

    Responses sent by Starlette's outermost error middleware (unhandled exceptions) bypass it:
    the 500 handler sets the header itself from ``current_request_id``.
    """
    app.add_middleware(
        CorrelationIdMiddleware,
        header_name=REQUEST_ID_HEADER,
        generator=new_request_id,
        validator=is_sane_request_id,
    )


class RequestIdFilter(logging.Filter):
    """Sets ``record.request_id`` to the current request's id (``-`` outside a request), so a
    format can say ``request_id=%(request_id)s``. Installed on handlers, it covers every logger
    whose records reach them: uvicorn's access and error logs and the service's own."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id() or "-"
        return True
