"""When and how long to wait before trying a request again.

Exponential backoff with full jitter (a random wait up to ``base * 2**n``, capped), so many
clients refused at once do not come back at once; a server's ``Retry-After`` is honoured as is.
Which requests may be repeated at all is the client's decision (``FoproClient._send``): only
those the API treats as idempotent, and any request whose connection never opened.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

RETRY_STATUSES = frozenset({429, 503})


@dataclass
class RetryPolicy:
    """``attempts``: tries in all (1 = never retry); waits grow from ``base_delay_s`` and never
    exceed ``max_delay_s``; a ``Retry-After`` longer than ``max_retry_after_s`` is not waited
    for (the error is raised with the hint instead). ``sleep`` and ``rng`` are injectable so
    tests can observe the waits without spending them."""

    attempts: int = 5
    base_delay_s: float = 0.5
    max_delay_s: float = 20.0
    max_retry_after_s: float = 120.0
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)

    def backoff(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (0 for the first retry)."""
        return self.rng.uniform(0.0, min(self.max_delay_s, self.base_delay_s * 2**retry))

    def wait(self, retry: int, retry_after: float | None = None) -> float:
        """Sleep before retry number ``retry`` (the server's hint if given) and return how long."""
        delay = retry_after if retry_after is not None else self.backoff(retry)
        self.sleep(delay)
        return delay


def retry_after_seconds(response: httpx.Response, now: datetime | None = None) -> float | None:
    """The ``Retry-After`` header in seconds (delta-seconds or an HTTP date), or None."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
