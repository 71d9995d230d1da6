"""Typed service errors; ``app.main`` maps them to HTTP in one handler."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """An error the caller can act on: ``code`` is stable, ``message`` tells what to do next."""

    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class Unauthenticated(ServiceError):
    status_code = 401
    code = "unauthenticated"


class Forbidden(ServiceError):
    status_code = 403
    code = "forbidden"


class NotFound(ServiceError):
    status_code = 404
    code = "not_found"


class Conflict(ServiceError):
    status_code = 409
    code = "conflict"


class PayloadTooLarge(ServiceError):
    status_code = 413
    code = "payload_too_large"


class InvalidInput(ServiceError):
    status_code = 422
    code = "invalid_input"


class IllegalTransition(Conflict):
    code = "illegal_transition"


class ServiceUnavailable(ServiceError):
    status_code = 503
    code = "unavailable"
