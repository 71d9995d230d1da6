"""A ``FoproClient`` over ``httpx.MockTransport``: scripted server answers, recorded requests and
recorded backoff waits (nothing actually sleeps)."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from fopro_client import FoproClient, RetryPolicy

BASE_URL = "http://fopro.test"
CREATED = "2026-12-01T10:00:00Z"

Handler = Callable[[httpx.Request], httpx.Response]


@dataclass
class Server:
    """Answers requests with ``handler`` and keeps every request (body read) and every wait."""

    handler: Handler
    requests: list[httpx.Request] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        return self.handler(request)

    def client(self, attempts: int = 4, **policy: Any) -> FoproClient:
        retry = RetryPolicy(
            attempts=attempts, sleep=self.waits.append, rng=random.Random(0), **policy
        )
        return FoproClient(BASE_URL, "fpk_test", retry=retry, transport=httpx.MockTransport(self))


def scripted(*answers: httpx.Response | Exception) -> Handler:
    """A handler that gives ``answers`` in order (an exception is raised instead)."""
    queue: Iterator[httpx.Response | Exception] = iter(answers)

    def handler(request: httpx.Request) -> httpx.Response:
        answer = next(queue)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return handler


def envelope(status: int, code: str, message: str, details: Any = None, **headers: str) -> Any:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return httpx.Response(status, json={"error": body}, headers=headers)


def dataset_json(**fields: Any) -> dict[str, Any]:
    return {
        "id": "ds_1",
        "name": "derm",
        "status": "validating",
        "archive_format": "zip",
        "archive_bytes": 10,
        "content_sha256": None,
        "classes": [],
        "num_images": 0,
        "image_bytes": 0,
        "stats": {},
        "problems": [],
        "warnings": [],
        "split_seed": 1,
        "created_at": CREATED,
        "updated_at": CREATED,
        **fields,
    }


def job_json(**fields: Any) -> dict[str, Any]:
    return {
        "id": "job_1",
        "dataset_id": "ds_1",
        "teacher": "resnet50",
        "student": "resnet18",
        "method": "fopro_akd",
        "params": {},
        "priority": "normal",
        "retry_of": None,
        "status": "queued",
        "phase": None,
        "progress": {},
        "metrics": {},
        "attempt": 1,
        "max_attempts": 3,
        "cancel_requested": False,
        "checkpoint_epoch": None,
        "failure_code": None,
        "failure_reason": None,
        "created_at": CREATED,
        "started_at": None,
        "finished_at": None,
        "updated_at": CREATED,
        **fields,
    }


def event_json(event_id: int, message: str, kind: str = "state") -> dict[str, Any]:
    return {"id": event_id, "kind": kind, "message": message, "data": {}, "created_at": CREATED}


def sse_message(event: str, data: dict[str, Any], event_id: int | None = None) -> bytes:
    """One message as ``app.jobs.stream`` writes it."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data)}\n\n".encode()


class DroppingStream(httpx.SyncByteStream):
    """A response body that sends ``chunks`` and then loses the connection."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks
        raise httpx.ReadError("connection reset by peer")
