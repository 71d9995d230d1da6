"""Typed service errors; ``app.main`` maps them to HTTP in one handler."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


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


class ErrorBody(BaseModel):
    code: str = Field(description="Stable, machine-readable, e.g. not_found, rate_limited.")
    message: str = Field(description="What went wrong and what to do next.")
    details: Any = None


class ErrorOut(BaseModel):
    """The body of every error response: ``{"error": {"code", "message", "details"}}``."""

    error: ErrorBody


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` declaring the error envelope for each of ``codes``."""
    return {code: {"model": ErrorOut} for code in codes}


# What any authenticated /v1 route may answer besides its own successes: bad key, another
# team's (or no) object, refused role, invalid input, body limits, quotas and rate limits,
# a state conflict, an object store that is down.
API_ERRORS = error_responses(400, 401, 403, 404, 408, 409, 413, 422, 429, 503)
