"""Requests per API key, counted by the `limits` library in a store every API process shares.

`limits` has no token bucket; its moving window is the same contract (at most N requests in any
trailing period, a slot coming back as each old request ages out) without the fixed window's
double burst at a boundary. Counts live in Redis in production (shared by every API process) and
in this process's memory on the embedded default, which runs one API.

A request is counted once, when it is authenticated: an upload or a Server-Sent-Events stream is
one request however many chunks or events it carries. The counting is a dependency; only the
``RateLimit-*`` headers of an allowed request are added by a pure ASGI wrapper, so no body is
ever buffered.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from functools import lru_cache

from limits import RateLimitItem, parse
from limits.errors import StorageError
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import TooManyRequests

log = logging.getLogger("fopro.ratelimit")

# Where the dependency leaves an allowed request's state for the header wrapper (scope["state"]).
STATE_KEY = "rate_limit"
_NAMESPACE = "fopro-api-key"


class RateLimited(TooManyRequests):
    code = "rate_limited"


@dataclass(frozen=True)
class RateLimitState:
    """One key's standing after a request: ``limit`` requests per window, ``remaining`` of them
    now, and ``reset_s`` seconds until a slot comes back (the oldest counted request ages out)."""

    limit: int
    remaining: int
    reset_s: int

    def headers(self) -> dict[str, str]:
        """The IETF draft's ``RateLimit-Limit``, ``RateLimit-Remaining``, ``RateLimit-Reset``."""
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_s),
        }


class KeyRateLimiter:
    """``rate`` (e.g. ``"600/minute"``) per API key, counted in the store at ``storage_url``
    (``memory://``, ``redis://host:port/db``, anything `limits` accepts)."""

    def __init__(self, rate: str, storage_url: str) -> None:
        self.rate = rate
        self._item: RateLimitItem = parse(rate)
        # wrap_exceptions: any backend failure arrives as one type, StorageError.
        self._limiter = MovingWindowRateLimiter(
            storage_from_string(storage_url, wrap_exceptions=True)
        )

    def hit(self, key_id: str) -> RateLimitState | None:
        """Count one request of ``key_id``; raises ``RateLimited`` (429, ``Retry-After``) when
        the window is full. None when the counting store is unreachable: requests then pass,
        since refusing all traffic would turn a Redis hiccup into an outage of the whole API."""
        try:
            allowed = self._limiter.hit(self._item, _NAMESPACE, key_id)
            stats = self._limiter.get_window_stats(self._item, _NAMESPACE, key_id)
        except StorageError:
            log.warning("rate-limit store unreachable; request of %s not counted", key_id)
            return None
        state = RateLimitState(
            limit=self._item.amount,
            remaining=max(0, stats.remaining),
            reset_s=max(1, math.ceil(stats.reset_time - time.time())),
        )
        if not allowed:
            raise RateLimited(
                f"This API key made {state.limit} requests in the last "
                f"{_period(self._item)} (limit {self.rate}); retry in {state.reset_s} s.",
                details={"limit": self.rate, "retry_after_s": state.reset_s},
                headers={"Retry-After": str(state.reset_s), **state.headers()},
            )
        return state


def _period(item: RateLimitItem) -> str:
    unit = item.GRANULARITY.name
    return unit if item.multiples == 1 else f"{item.multiples} {unit}s"


_building = threading.Lock()


def key_rate_limiter(rate: str, storage_url: str) -> KeyRateLimiter:
    """One limiter per configuration, so the in-memory counts outlive a request.

    Built under a lock: `limits` imports its backend's client lazily, and requests arriving
    together on a fresh process (50 at once, bench.api_load) otherwise saw a half-imported
    ``redis`` ("minimum version 3.0 ... Found 0.0.0") and answered 500."""
    with _building:
        return _limiter_for(rate, storage_url)


@lru_cache(maxsize=8)
def _limiter_for(rate: str, storage_url: str) -> KeyRateLimiter:
    return KeyRateLimiter(rate, storage_url)


class RateLimitHeaders:
    """Adds the ``RateLimit-*`` headers of an allowed request (left in ``scope["state"]`` by the
    counting dependency) to its response start; passes every body message through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})

        async def send_with_headers(message: Message) -> None:
            limited = state.get(STATE_KEY)
            if message["type"] == "http.response.start" and isinstance(limited, RateLimitState):
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [
                    (name.lower().encode(), value.encode())
                    for name, value in limited.headers().items()
                    if name.lower().encode() not in present  # a 429 already carries its own
                ]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
