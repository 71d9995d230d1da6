"""The event-loop-to-thread pipe that streams upload bodies into ``ObjectStore.put``."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

import anyio
import pytest
from starlette.requests import Request

from app.core.errors import PayloadTooLarge
from app.core.storage import LocalObjectStore, ObjectInfo, StoreUnavailable
from app.datasets.service import UploadIncomplete
from app.datasets.upload import PIPE_CHUNKS, _store_stream, receive_archive
from foprokd.synthetic import archive_bytes, sample_dataset

CHUNK = b"x" * 1000


class RecordingStore:
    """A store whose put reads slowly and records how far the sender ran ahead of it."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.sent = 0
        self.read = 0
        self.most_ahead = 0
        self.committed: bytes | None = None
        self._fail_after = fail_after

    def put(self, key: str, stream: BinaryIO, **_: object) -> ObjectInfo:
        received = bytearray()
        while chunk := stream.read(len(CHUNK)):
            received += chunk
            self.read += 1
            self.most_ahead = max(self.most_ahead, self.sent - self.read)
            if self._fail_after is not None and self.read >= self._fail_after:
                raise StoreUnavailable("disk full")
            time.sleep(0.0005)
        self.committed = bytes(received)
        return ObjectInfo(key, len(received), None, None, None, None)

    async def chunks(self, count: int, fail_at: int | None = None) -> AsyncIterator[bytes]:
        for number in range(count):
            if number == fail_at:
                raise PayloadTooLarge("too big")
            self.sent += 1
            yield CHUNK


def test_the_sender_never_runs_more_than_the_pipe_ahead_of_the_store() -> None:
    store = RecordingStore()

    async def main() -> ObjectInfo:
        return await _store_stream(store.chunks(300), store, "k")  # type: ignore[arg-type]

    info = anyio.run(main)
    assert info.size == 300 * len(CHUNK)
    assert store.committed == CHUNK * 300
    assert store.most_ahead <= PIPE_CHUNKS + 2


def test_a_failing_body_stores_nothing_and_raises_its_own_error() -> None:
    store = RecordingStore()

    async def main() -> None:
        await _store_stream(store.chunks(100, fail_at=50), store, "k")  # type: ignore[arg-type]

    with pytest.raises(PayloadTooLarge):
        anyio.run(main)
    assert store.committed is None


def test_a_failing_store_stops_the_body_and_raises_the_store_error() -> None:
    store = RecordingStore(fail_after=10)

    async def main() -> None:
        await _store_stream(store.chunks(1000), store, "k")  # type: ignore[arg-type]

    with pytest.raises(StoreUnavailable, match="disk full"):
        anyio.run(main)
    assert store.sent < 100


def request_that_disconnects(body: bytes, after: int) -> Request:
    """A raw-body upload request whose client goes away after ``after`` bytes."""
    messages = [
        {"type": "http.request", "body": body[:after], "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, object]:
        return messages.pop(0)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/datasets",
        "query_string": b"name=cut",
        "headers": [(b"content-type", b"application/zip")],
    }
    return Request(scope, receive)


def test_a_client_that_disconnects_leaves_no_object(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    data = archive_bytes(sample_dataset().members, "zip")
    seen: list[dict[str, str]] = []

    async def main() -> None:
        await receive_archive(
            request_that_disconnects(data, len(data) // 2),
            store,
            "teams/t/datasets/d/archive",
            max_bytes=10**9,
            before_store=lambda fields, _: seen.append(fields),
        )

    with pytest.raises(UploadIncomplete, match="closed after"):
        anyio.run(main)
    assert seen == [{"name": "cut"}]
    assert list(store.list("")) == []
