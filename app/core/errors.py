"""Typed service errors; ``app.main`` maps them to HTTP in one handler."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """An error the caller can act on: ``code`` is stable, ``message`` tells what to do next."""

    status_code = 400
    code = "bad_request"

    def __init__(
        self, message: str, *, details: Any = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        # Sent with the error response (Retry-After on a 429, for instance).
        self.headers = headers


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


class TooManyRequests(ServiceError):
    """A quota or rate limit says no for now; ``Retry-After`` says when, where waiting helps."""

    status_code = 429
    code = "too_many_requests"


class InvalidInput(ServiceError):
    status_code = 422
    code = "invalid_input"


class IllegalTransition(Conflict):
    code = "illegal_transition"


class ServiceUnavailable(ServiceError):
    status_code = 503
    code = "unavailable"
