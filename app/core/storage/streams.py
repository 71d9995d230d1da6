"""Stream adapters both backends share (package-internal): a pass-through that digests and
size-checks an upload, and a bounded reader over a file or an HTTP response."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO, Protocol

from app.core.storage.base import COPY_CHUNK_BYTES
from app.core.storage.errors import ObjectSizeMismatch

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer


class DigestingStream:
    """Passes reads through from `source`, counting and hashing the bytes it hands out.

    When `declared_size` is given, raises `ObjectSizeMismatch` as soon as the stream is longer,
    or at end of stream when it is shorter, so the backend never commits a wrong-sized object.
    """

    def __init__(self, key: str, source: BinaryIO, declared_size: int | None) -> None:
        if declared_size is not None and declared_size < 0:
            raise ObjectSizeMismatch(f"declared size of {key!r} must be >= 0, got {declared_size}")
        self._key = key
        self._source = source
        self._declared_size = declared_size
        self._digest = hashlib.sha256()
        self.size = 0

    def read(self, size: int) -> bytes:
        """Up to `size` bytes (b"" only at the end); `size` must be positive."""
        # Many streams allocate the full requested size per read: ask for one chunk at a time.
        data = self._source.read(min(size, COPY_CHUNK_BYTES))
        if data:
            # minio requires bytes; some streams hand out bytearray or memoryview.
            chunk = data if isinstance(data, bytes) else bytes(data)
            self.size += len(chunk)
            self._digest.update(chunk)
            if self._declared_size is not None and self.size > self._declared_size:
                raise ObjectSizeMismatch(
                    f"upload of {self._key!r} is longer than its declared {self._declared_size} "
                    "bytes"
                )
            return chunk
        if self._declared_size is not None and self.size != self._declared_size:
            raise ObjectSizeMismatch(
                f"upload of {self._key!r} ended after {self.size} bytes, "
                f"{self._declared_size} were declared"
            )
        return b""

    @property
    def sha256(self) -> str:
        """Hex sha256 of the bytes read so far."""
        return self._digest.hexdigest()


class _Readable(Protocol):
    def readinto(self, buffer: memoryview, /) -> int | None: ...


class _StreamView(io.RawIOBase):
    """A raw stream over at most `limit` bytes of `source`; closing it calls `release`."""

    def __init__(self, source: _Readable, limit: int | None, release: Callable[[], None]) -> None:
        super().__init__()
        self._source = source
        self._left = limit
        self._release = release

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        view = memoryview(buffer)
        if self._left is not None:
            if self._left <= 0:
                return 0
            view = view[: self._left]
        count = self._source.readinto(view) or 0
        if self._left is not None:
            self._left -= count
        return count

    def close(self) -> None:
        if not self.closed:
            self._release()
        super().close()


def buffered_view(source: _Readable, limit: int | None, release: Callable[[], None]) -> BinaryIO:
    """A buffered stream over at most `limit` bytes of `source` (None: all of it); closing it
    calls `release`."""
    return io.BufferedReader(_StreamView(source, limit, release), buffer_size=COPY_CHUNK_BYTES)
