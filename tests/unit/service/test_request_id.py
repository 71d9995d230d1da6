"""Request ids: taken from a sane ``X-Request-ID`` or made up, returned on every response (errors
and streams included), written on the log lines of the request; an unexpected error answers a
500 envelope that names the id and nothing of the exception."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncIterator, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.core.config import get_settings
from app.core.db import get_sessionmaker
from app.core.request_id import RequestIdFilter, current_request_id, is_sane_request_id
from app.core.storage import open_object_store
from app.jobs.models import Job, JobStatus
from app.teams.models import Role
from tests.conftest import Service, free_port
from tests.support.processes import ServiceProcess
from tests.unit.jobs.ready_dataset import auth, make_team_key, put_ready_dataset

GENERATED = re.compile(r"[0-9a-f]{32}")
SECRET_ERROR = "SELECT secret FROM /etc/passwd"
log = logging.getLogger("fopro.test.request_id")
# TestClient answers with httpx2 responses; the served process is asked with httpx.
Response = httpx.Response | httpx2.Response


def make_app() -> FastAPI:
    """The real app (middleware, handlers, routes) plus routes that log, fail and stream."""
    from app.main import create_app

    app = create_app()

    @app.get("/test/log")
    def log_something() -> dict[str, str | None]:
        log.info("inside a sync route")
        return {"seen": current_request_id()}

    @app.get("/test/boom")
    async def boom() -> None:
        raise RuntimeError(SECRET_ERROR)

    @app.get("/test/stream")
    def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for n in range(3):
                log.info("streaming chunk %d", n)
                yield f"chunk {n}\n".encode()

        return StreamingResponse(chunks(), media_type="text/plain")

    return app


@pytest.fixture
def client(embedded_service: Service) -> Iterator[TestClient]:
    with TestClient(make_app(), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def session(embedded_service: Service) -> Iterator[Session]:
    with get_sessionmaker()() as db:
        yield db


@pytest.fixture
def records(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """caplog with the filter ``fopro serve`` puts on its handler."""
    caplog.handler.addFilter(RequestIdFilter())
    caplog.set_level(logging.INFO)
    return caplog


def the_id(response: Response) -> str:
    """The response's one ``X-Request-ID`` (never two: the middleware adds, handlers don't)."""
    values = response.headers.get_list("X-Request-ID")
    assert len(values) == 1, values
    return values[0]


# --- the id --------------------------------------------------------------------------------------


def test_a_request_without_an_id_gets_a_fresh_one(client: TestClient) -> None:
    first, second = the_id(client.get("/healthz")), the_id(client.get("/healthz"))
    assert GENERATED.fullmatch(first)
    assert GENERATED.fullmatch(second)
    assert first != second


@pytest.mark.parametrize("given", ["req-123", "a.B_c-9", "x" * 128, "0"])
def test_a_sane_id_is_echoed_and_seen_by_the_route(client: TestClient, given: str) -> None:
    response = client.get("/test/log", headers={"X-Request-ID": given})
    assert the_id(response) == given
    assert response.json() == {"seen": given}


@pytest.mark.parametrize(
    "given",
    ["x" * 129, "two words", "id;rm -rf", "../../etc", "a/b", 'quote"d', "tab\there", "ünï"],
)
def test_an_id_that_is_not_a_sane_token_is_replaced(client: TestClient, given: str) -> None:
    response = client.get("/test/log", headers=[(b"X-Request-ID", given.encode())])
    replaced = the_id(response)
    assert GENERATED.fullmatch(replaced)
    assert response.json() == {"seen": replaced}  # the route sees the replacement too


def test_the_sanity_rule() -> None:
    assert is_sane_request_id("Ab0._-")
    assert is_sane_request_id("a" * 128)
    for value in ("", "a" * 129, "a\n", "a b", "a/b", "é", "a\x00"):
        assert not is_sane_request_id(value), repr(value)


# --- on every response ---------------------------------------------------------------------------


def test_errors_carry_the_id(client: TestClient, session: Session) -> None:
    _, key = make_team_key(session, Role.member)
    cases = [
        (client.get("/v1/datasets", headers={"X-Request-ID": "rid-401"}), 401, "unauthenticated"),
        (client.get("/v1/keys", headers={**auth(key), "X-Request-ID": "rid-403"}), 403, None),
        (client.get("/nowhere", headers={"X-Request-ID": "rid-404"}), 404, "not_found"),
        (client.delete("/healthz", headers={"X-Request-ID": "rid-405"}), 405, None),
        (
            client.get("/v1/datasets?limit=0", headers={**auth(key), "X-Request-ID": "rid-422"}),
            422,
            "invalid_input",
        ),
    ]
    for response, status, code in cases:
        assert response.status_code == status, response.text
        assert the_id(response) == f"rid-{status}"
        assert "code" in response.json()["error"]
        if code is not None:
            assert response.json()["error"]["code"] == code


def test_a_streamed_response_carries_the_id_and_its_logs_name_it(
    client: TestClient, records: pytest.LogCaptureFixture
) -> None:
    with client.stream("GET", "/test/stream", headers={"X-Request-ID": "rid-stream"}) as response:
        body = "".join(response.iter_text())
        assert the_id(response) == "rid-stream"
    assert body == "chunk 0\nchunk 1\nchunk 2\n"
    chunks = [r for r in records.records if r.getMessage().startswith("streaming chunk")]
    assert [r.request_id for r in chunks] == ["rid-stream"] * 3  # type: ignore[attr-defined]


def test_the_job_event_stream_carries_the_id(client: TestClient, session: Session) -> None:
    team_id, key = make_team_key(session, Role.viewer)
    dataset = put_ready_dataset(
        session, open_object_store(get_settings()), team_id, num_classes=2, per_class=5
    )
    job = Job(
        team_id=team_id,
        dataset_id=dataset.id,
        teacher="resnet18",
        student="resnet18",
        method="fopro_akd",
        params={},
        status=JobStatus.cancelled,
    )
    session.add(job)
    session.commit()
    headers = {**auth(key), "X-Request-ID": "rid-sse"}
    with client.stream("GET", f"/v1/jobs/{job.id}/stream", headers=headers) as response:
        text = "".join(response.iter_text())
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert the_id(response) == "rid-sse"
    assert "event: end" in text


def test_a_stream_is_passed_on_chunk_by_chunk(embedded_service: Service) -> None:
    """Pure ASGI: the first chunk reaches the server before the route makes the second (a
    buffering middleware would wait for the whole body, and the route would time out)."""
    app = make_app()
    first_sent = anyio.Event()
    messages: list[MutableMapping[str, Any]] = []

    @app.get("/test/paced")
    def paced() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"first"
            with anyio.fail_after(5):
                await first_sent.wait()
            yield b"second"

        return StreamingResponse(chunks())

    async def receive() -> dict[str, Any]:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(message: MutableMapping[str, Any]) -> None:
        messages.append(message)
        if message.get("body") == b"first":
            first_sent.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/test/paced",
        "raw_path": b"/test/paced",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"x-request-id", b"rid-paced")],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
    }

    async def serve_once() -> None:
        await app(scope, receive, send)

    anyio.run(serve_once)
    start = messages[0]
    assert start["type"] == "http.response.start"
    assert (b"x-request-id", b"rid-paced") in [(k.lower(), v) for k, v in start["headers"]]
    assert [m.get("body") for m in messages[1:] if m.get("body")] == [b"first", b"second"]


# --- unexpected errors ---------------------------------------------------------------------------


def assert_safe_500(response: Response, request_id: str) -> None:
    assert response.status_code == 500
    assert the_id(response) == request_id
    error = response.json()["error"]
    assert error["code"] == "internal_error"
    assert error["details"] == {"request_id": request_id}
    assert request_id in error["message"]
    for leak in ("SELECT", "secret", "/etc/passwd", "RuntimeError", "Traceback", ".py"):
        assert leak not in response.text


def test_an_unexpected_error_answers_the_envelope_and_logs_the_traceback_with_the_id(
    client: TestClient, records: pytest.LogCaptureFixture
) -> None:
    response = client.get("/test/boom", headers={"X-Request-ID": "rid-boom"})
    assert_safe_500(response, "rid-boom")
    logged = [r for r in records.records if r.name == "fopro.api" and r.exc_info]
    assert len(logged) == 1
    assert logged[0].request_id == "rid-boom"  # type: ignore[attr-defined]
    assert SECRET_ERROR in records.text  # the log keeps what the client must not see


def test_a_real_route_failing_inside_a_service_answers_the_safe_500(
    client: TestClient, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.teams import router

    def failing(*args: object, **kwargs: object) -> None:
        raise RuntimeError(SECRET_ERROR)

    monkeypatch.setattr(router, "create_api_key", failing)
    _, admin = make_team_key(session, Role.admin)
    response = client.post("/v1/keys", json={"role": "viewer"}, headers=auth(admin))
    assert_safe_500(response, the_id(response))
    assert GENERATED.fullmatch(the_id(response))


# --- the served process ---------------------------------------------------------------------------


def test_fopro_serve_writes_the_id_on_access_and_app_log_lines(tmp_path: Path) -> None:
    port = free_port()
    env = {"FOPRO_ENV": "test", "FOPRO_DATA_DIR": str(tmp_path / "fopro")}
    api = ServiceProcess.start(
        ["serve", "--host", "127.0.0.1", "--port", str(port)], env, tmp_path / "api.log"
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert api.process.poll() is None, api.log_tail()
            try:
                httpx.get(f"{url}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, api.log_tail()
                time.sleep(0.2)
        response = httpx.get(f"{url}/v1/me", headers={"X-Request-ID": "rid-served"}, timeout=10)
        assert response.status_code == 401
        assert the_id(response) == "rid-served"
    finally:
        api.stop()
    # Every line is one JSON object.
    lines = [json.loads(line) for line in api.log_path.read_text().splitlines()]
    access = [line for line in lines if '"GET /v1/me HTTP/1.1" 401' in line["message"]]
    assert len(access) == 1, api.log_tail()
    assert (access[0]["logger"], access[0]["request_id"]) == ("uvicorn.access", "rid-served")
    startup = [line for line in lines if "Application startup complete" in line["message"]]
    assert len(startup) == 1, api.log_tail()
    assert startup[0]["request_id"] == "-"  # outside any request
    assert {"timestamp", "level", "job_id"} <= set(startup[0])
