"""Typed errors: every API refusal becomes one of these, carrying the service's error envelope
``{"error": {"code", "message", "details"}}``; transport failures become ``ConnectionFailed``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

    from fopro_client.models import Dataset


class FoproError(Exception):
    """Base of every error the client raises.

    ``code``: the API's stable error code (e.g. ``dataset_name_taken``); ``message``: what to do
    next, as the API worded it; ``details``: the API's structured details (or None); ``status``:
    the HTTP status (None when no response arrived); ``request_id``: quote it to support.
    """

    default_code = "error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: Any = None,
        status: int | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.details = details
        self.status = status
        self.request_id = request_id

    def __str__(self) -> str:
        return f"{self.message} [{self.code}]"

    def envelope(self) -> dict[str, Any]:
        """The error as the API's envelope, for ``--json`` output."""
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class AuthError(FoproError):
    """401 or 403: no key, a wrong or revoked key, or a role that may not do this."""

    default_code = "unauthenticated"


class Forbidden(AuthError):
    """403: the key is valid but its role may not do this (e.g. a viewer submitting a job)."""

    default_code = "forbidden"


class NotFound(FoproError):
    """404: no such object in your team (another team's id answers 404 too)."""

    default_code = "not_found"


class Conflict(FoproError):
    """409: the object's state forbids it (name taken, job still running, illegal transition)."""

    default_code = "conflict"


class ValidationFailed(FoproError):
    """400, 413, 415, 416 or 422: the request itself was refused; ``details`` says why."""

    default_code = "invalid_input"


class RateLimited(FoproError):
    """429 that outlasted the retries; ``retry_after`` (seconds) is the server's hint, if any."""

    default_code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class ServerError(FoproError):
    """5xx: the service failed or is unavailable (503 outlasted the retries)."""

    default_code = "internal"


class ConnectionFailed(FoproError):
    """No usable answer: the server could not be reached, or the connection dropped."""

    default_code = "connection_failed"


class DatasetInvalid(FoproError):
    """The dataset finished validation ``invalid``; ``problems`` name each bad entry."""

    default_code = "dataset_invalid"

    def __init__(self, dataset: Dataset) -> None:
        shown = "; ".join(f"{p.entry}: {p.message}" for p in dataset.problems[:5])
        more = len(dataset.problems) - 5
        suffix = f" (and {more} more)" if more > 0 else ""
        super().__init__(
            f"Dataset {dataset.id} ({dataset.name}) is invalid: {shown}{suffix}",
            details=[p.model_dump(mode="json") for p in dataset.problems],
        )
        self.dataset = dataset
        self.problems = dataset.problems


class DownloadMismatch(FoproError):
    """A downloaded file's size or SHA-256 differs from what the API recorded (nothing kept)."""

    default_code = "download_mismatch"


_BY_STATUS: dict[int, type[FoproError]] = {
    400: ValidationFailed,
    401: AuthError,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: ValidationFailed,
    415: ValidationFailed,
    416: ValidationFailed,
    422: ValidationFailed,
    429: RateLimited,
}


def error_from_response(response: httpx.Response, retry_after: float | None = None) -> FoproError:
    """The typed error for a 4xx/5xx ``response`` (its body read), from its envelope if any."""
    code, message, details = None, None, None
    try:
        body = response.json()
    except ValueError:
        body = None
    envelope = body.get("error") if isinstance(body, dict) else None
    if isinstance(envelope, dict):
        code = envelope.get("code")
        message = envelope.get("message")
        details = envelope.get("details")
    if not message:
        text = response.text.strip()[:300]
        message = f"HTTP {response.status_code} {response.reason_phrase}" + (
            f": {text}" if text else ""
        )
    cls = _BY_STATUS.get(response.status_code)
    if cls is None:
        cls = ServerError if response.status_code >= 500 else FoproError
    kwargs: dict[str, Any] = {
        "code": str(code) if code else None,
        "details": details,
        "status": response.status_code,
        "request_id": response.headers.get("x-request-id"),
    }
    if cls is RateLimited:
        return RateLimited(str(message), retry_after=retry_after, **kwargs)
    return cls(str(message), **kwargs)
