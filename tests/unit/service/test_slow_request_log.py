"""The API logs a request that was slow to start answering, with its route template, status
and request id, and leaves fast requests and long streams alone."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient

from app.core.metrics import RequestMetrics
from app.core.request_id import install_request_ids


def app_with(slow_request_s: float) -> FastAPI:
    app = FastAPI()

    @app.get("/things/{thing_id}")
    async def thing(thing_id: str, wait: float = 0.0) -> dict[str, str]:
        await asyncio.sleep(wait)
        return {"id": thing_id}

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(3):
                await asyncio.sleep(0.1)
                yield b"tick\n"

        return StreamingResponse(chunks())

    install_request_ids(app)
    app.add_middleware(RequestMetrics, slow_request_s=slow_request_s)  # outermost, as in main
    return app


def slow_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "fopro.requests"]


def test_a_slow_answer_is_logged_with_its_route_template_status_and_request_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="fopro.requests")
    with TestClient(app_with(0.05)) as client:
        response = client.get("/things/t1?wait=0.2", headers={"X-Request-ID": "req-slow-1"})
        assert response.status_code == 200
        assert client.get("/things/t2").status_code == 200

    (line,) = slow_lines(caplog)
    assert line.startswith("slow request: GET /things/{thing_id} answered 200 after ")
    assert line.endswith("(request id req-slow-1)")
    waited = float(line.split(" after ")[1].split(" s ")[0])
    assert 0.2 <= waited < 5


def test_a_long_stream_that_starts_at_once_is_not_slow(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="fopro.requests")
    with TestClient(app_with(0.05)) as client:
        response = client.get("/stream")
    assert response.text == "tick\n" * 3
    assert slow_lines(caplog) == []


def test_zero_turns_the_log_off(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="fopro.requests")
    with TestClient(app_with(0.0)) as client:
        assert client.get("/things/t1?wait=0.1").status_code == 200
    assert slow_lines(caplog) == []
