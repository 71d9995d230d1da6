"""The event-loop-to-thread pipe that streams upload bodies into ``ObjectStore.put``."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import BinaryIO

import anyio
import pytest

from app.core.errors import PayloadTooLarge
from app.core.storage import ObjectInfo, StoreUnavailable
from app.datasets.upload import PIPE_CHUNKS, _store_stream

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
