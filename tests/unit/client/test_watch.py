"""``watch``: typed updates from the job stream, reconnecting with ``Last-Event-ID`` when the
stream drops so no event is lost or repeated."""

from __future__ import annotations

import httpx
import pytest

from fopro_client import ConnectionFailed, Event, JobProgress, NotFound, StreamEnd
from tests.unit.client.conftest import (
    DroppingStream,
    Server,
    envelope,
    event_json,
    job_json,
    sse_message,
)

PROGRESS = {"status": "running", "phase": "training", "attempt": 1, "progress": {"epoch": 1}}


def stream(*chunks: bytes) -> httpx.Response:
    return httpx.Response(
        200, headers={"Content-Type": "text/event-stream"}, stream=DroppingStream(*chunks)
    )


def complete(*chunks: bytes) -> httpx.Response:
    return httpx.Response(
        200, headers={"Content-Type": "text/event-stream"}, content=b"".join(chunks)
    )


def test_a_dropped_stream_resumes_after_the_last_event_seen() -> None:
    answers = iter(
        [
            stream(
                sse_message("job_event", event_json(4, "Queued."), 4),
                sse_message("progress", PROGRESS),
                sse_message("job_event", event_json(5, "Running."), 5),
                b'event: job_event\ndata: {"id": 6',  # cut in the middle of event 6
            ),
            complete(
                b": keep-alive\n\n",
                sse_message("job_event", event_json(6, "Epoch 1 done.", "epoch"), 6),
                sse_message("end", {"status": "succeeded"}),
            ),
        ]
    )
    server = Server(lambda request: next(answers))
    with server.client() as client:
        updates = list(client.watch("job_1"))
    assert [type(u) for u in updates] == [Event, JobProgress, Event, Event, StreamEnd]
    assert [u.id for u in updates if isinstance(u, Event)] == [4, 5, 6]
    assert isinstance(updates[1], JobProgress)
    assert updates[1].phase == "training"
    assert updates[-1] == StreamEnd(status="succeeded")
    first, second = server.requests
    assert "Last-Event-ID" not in first.headers
    assert second.headers["Last-Event-ID"] == "5"
    assert second.url.path == "/v1/jobs/job_1/stream"
    assert len(server.waits) == 1


def test_a_stream_that_closes_before_the_end_reconnects_too() -> None:
    answers = iter(
        [
            complete(sse_message("job_event", event_json(1, "Queued."), 1)),
            complete(sse_message("end", {"status": "cancelled"})),
        ]
    )
    server = Server(lambda request: next(answers))
    with server.client() as client:
        updates = list(client.watch("job_1", last_event_id=0))
    assert updates[-1] == StreamEnd(status="cancelled")
    assert [r.headers["Last-Event-ID"] for r in server.requests] == ["0", "1"]


def test_the_server_s_retry_field_sets_the_reconnect_delay() -> None:
    answers = iter(
        [
            stream(b"retry: 1500\n\n", b": ping\n\n"),
            complete(sse_message("end", {"status": "failed"})),
        ]
    )
    server = Server(lambda request: next(answers))
    with server.client() as client:
        list(client.watch("job_1"))
    assert server.waits == [1.5]


def test_watching_gives_up_after_failures_in_a_row() -> None:
    server = Server(lambda request: stream(b": keep-alive\n\n"))
    with server.client(attempts=3) as client, pytest.raises(ConnectionFailed) as caught:
        list(client.watch("job_1", last_event_id=9))
    assert len(server.requests) == 3
    assert "last_event_id=9" in caught.value.message


def test_failures_count_only_in_a_row() -> None:
    """Each connection delivers one new event before dropping: the watch never gives up."""
    answers = iter(
        [stream(sse_message("job_event", event_json(i, f"event {i}"), i)) for i in range(1, 6)]
        + [complete(sse_message("end", {"status": "succeeded"}))]
    )
    server = Server(lambda request: next(answers))
    with server.client(attempts=2) as client:
        updates = list(client.watch("job_1"))
    assert [u.id for u in updates if isinstance(u, Event)] == [1, 2, 3, 4, 5]
    assert [r.headers.get("Last-Event-ID") for r in server.requests] == [
        None,
        "1",
        "2",
        "3",
        "4",
        "5",
    ]


def test_another_team_s_job_is_not_found() -> None:
    server = Server(lambda request: envelope(404, "not_found", "No job 'job_x'."))
    with server.client() as client, pytest.raises(NotFound):
        list(client.watch("job_x"))


def test_wait_finished_returns_the_finished_job() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/stream"):
            return complete(sse_message("end", {"status": "failed"}))
        return httpx.Response(200, json=job_json(status="failed", failure_reason="NaN loss"))

    server = Server(handler)
    with server.client() as client:
        job = client.wait_finished("job_1")
    assert job.status == "failed"
    assert job.failure_reason == "NaN loss"
