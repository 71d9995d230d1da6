"""Prometheus metrics of the API process: request latency by route, and ``GET /metrics``.

``fopro_http_request_duration_seconds`` is a histogram labelled by the route's path *template*,
method and status, so ``/v1/jobs/{job_id}`` is one series, not one per job. Domains add
collectors read at scrape time (``app.jobs.metrics``: jobs by state, queue depth, leases,
training throughput); ``install_metrics`` serves them together.

Several uvicorn workers (``fopro serve --workers N``): each is its own process with its own
counters. Set ``PROMETHEUS_MULTIPROC_DIR`` to an empty directory before start-up and the
histogram is summed over all of them (prometheus-client's multiprocess mode); collectors read
at scrape time need no such care: each scrape reads them afresh.

A request whose answer took longer than ``slow_request_s`` to start (the server's share of the
wait: queueing for a thread or a database connection, a lock, the query) is also logged at
WARNING with its route, status, time and request id, so one slow request among thousands can be
found without a tracer. Time to the response's start, not its end: an event stream or a large
download is long by design.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence

from fastapi import FastAPI, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.registry import Collector
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.request_id import REQUEST_ID_HEADER

log = logging.getLogger("fopro.requests")

# Requests that matched no route share one label: raw paths would let a scanner create series.
UNMATCHED_ROUTE = "<unmatched>"
# Latency buckets in seconds: fine below 50 ms (the API's p99 goal), coarse above.
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUEST_DURATION = Histogram(
    "fopro_http_request_duration_seconds",
    "Time from request to the end of its response, by route template, method and status.",
    ["route", "method", "status"],
    buckets=LATENCY_BUCKETS,
)


def route_template(scope: Scope) -> str:
    """The path template of the route that served ``scope``: ``/v1/jobs/{job_id}``.

    The matched route knows only its own part (``/jobs/{job_id}``) when a router was included
    with a prefix; the prefix is what the request's path has before that part, filled in.
    """
    route: BaseRoute | None = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    if not template:
        return UNMATCHED_ROUTE
    path: str = scope.get("path", "")
    try:
        filled = str(template).format(**scope.get("path_params", {}))
    except (KeyError, IndexError, ValueError):
        return str(template)
    prefix = path[: len(path) - len(filled)] if path.endswith(filled) else ""
    return prefix + str(template)


class RequestMetrics:
    """Pure ASGI middleware timing every HTTP request (streamed responses until their end), and
    logging the ones slower than ``slow_request_s`` to start answering (0: none); Starlette's
    ``BaseHTTPMiddleware`` would buffer Server-Sent-Events."""

    def __init__(self, app: ASGIApp, slow_request_s: float = 0.0) -> None:
        self.app = app
        self.slow_request_s = slow_request_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception before the response started is a server error

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                waited = time.perf_counter() - started
                if self.slow_request_s and waited > self.slow_request_s:
                    self._log_slow(scope, message, waited)
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            REQUEST_DURATION.labels(route_template(scope), scope["method"], str(status)).observe(
                time.perf_counter() - started
            )

    @staticmethod
    def _log_slow(scope: Scope, start: Message, waited: float) -> None:
        # This middleware is outside the request-id one (its context is gone by the time the
        # response ends), so the id is read off the answer's own header.
        header = REQUEST_ID_HEADER.lower().encode()
        request_id = next(
            (value.decode("latin-1") for name, value in start.get("headers", []) if name == header),
            "-",
        )
        log.warning(
            "slow request: %s %s answered %s after %.2f s (request id %s)",
            scope["method"],
            route_template(scope),
            start["status"],
            waited,
            request_id,
        )


def scrape_registry(collectors: Sequence[Collector]) -> CollectorRegistry:
    """What ``/metrics`` exposes: this process's registry (``collectors`` are registered there
    by their modules), or under ``PROMETHEUS_MULTIPROC_DIR`` every API process's counters
    merged plus ``collectors``."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    for collector in collectors:
        registry.register(collector)
    return registry


def install_metrics(
    app: FastAPI, collectors: Sequence[Collector] = (), *, slow_request_s: float = 0.0
) -> None:
    """Time every request of ``app`` (logging those slower than ``slow_request_s`` to answer)
    and serve ``GET /metrics`` with ``collectors`` beside the request histogram.
    Unauthenticated, like ``/readyz``: expose it only to the scraper."""
    app.add_middleware(RequestMetrics, slow_request_s=slow_request_s)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        body = generate_latest(scrape_registry(collectors))
        return Response(body, media_type=CONTENT_TYPE_LATEST)
