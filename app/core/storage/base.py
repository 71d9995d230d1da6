"""The object store's interface: `ObjectStore`, what it reports (`ObjectInfo`) and what it reads
from the settings (`StoreSettings`).

sha256 bookkeeping: every `put`/`put_bytes` returns the sha256 and size of what it stored,
computed while streaming. `stat()` also reports the sha256 on the local store (sidecar file) and
for S3 objects written with `put_bytes` (object metadata). A streamed S3 upload cannot attach it:
S3 takes metadata before the first byte, and attaching it afterwards means a server-side copy of
the whole object (double I/O for multi-GB archives, and CopyObject stops at 5 GiB). Callers record
the returned sha256 in the database, which is the source of truth for artifact digests.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import quote

DEFAULT_CONTENT_TYPE = "application/octet-stream"
# Local copies and reads move data in chunks of this size, so memory stays flat for any object size.
COPY_CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class ObjectInfo:
    """What the store knows about one object.

    `size` is in bytes; `sha256` is the lowercase hex digest when known (see the module docstring);
    `etag` is the S3 ETag (None on the local store); `modified` is a UTC-aware datetime (None in
    what an S3 `put` returns: S3 does not report it there); `content_type` is None where the
    backend did not report it (listings).
    """

    key: str
    size: int
    sha256: str | None
    etag: str | None
    modified: datetime | None
    content_type: str | None


class StoreSettings(Protocol):
    """The settings fields the object store reads (a subset of `app.core.config.Settings`)."""

    @property
    def storage_url(self) -> str: ...

    @property
    def s3_endpoint(self) -> str | None: ...

    @property
    def s3_access_key(self) -> str | None: ...

    @property
    def s3_secret_key(self) -> str | None: ...

    @property
    def s3_region(self) -> str: ...

    @property
    def s3_secure(self) -> bool: ...

    @property
    def s3_public_endpoint(self) -> str | None: ...

    @property
    def data_dir(self) -> Path: ...

    @property
    def local_store_min_free_bytes(self) -> int: ...


class ObjectStore(Protocol):
    """Blob storage keyed by validated relative paths.

    S3 failures (network, credentials) raise `StoreUnavailable`; local disk failures (full,
    read-only) surface as `OSError`.
    """

    def put(
        self,
        key: str,
        stream: BinaryIO,
        *,
        size: int | None = None,
        content_type: str = DEFAULT_CONTENT_TYPE,
    ) -> ObjectInfo:
        """Store everything `stream` yields under `key`, replacing any old object atomically.

        Reads in bounded chunks; `size` (bytes) is optional and, when given, enforced
        (`ObjectSizeMismatch`). Returns the stored size and sha256. If the stream raises,
        its exception propagates and nothing is stored.
        """
        ...

    def put_bytes(
        self, key: str, data: bytes, *, content_type: str = DEFAULT_CONTENT_TYPE
    ) -> ObjectInfo:
        """Store `data` under `key`; `stat()` will report its sha256 on every backend."""
        ...

    def open(self, key: str) -> BinaryIO:
        """A readable stream of the object's bytes; close it. Raises `ObjectNotFound`."""
        ...

    def open_range(self, key: str, start: int, length: int | None) -> BinaryIO:
        """A stream of bytes [start, start + length) clipped to the object's end (None: to the end).

        `start` is a 0-based byte offset; `length` >= 1. Raises `InvalidRange` when `start` is at or
        past the end, `ObjectNotFound` when the object does not exist.
        """
        ...

    def get_bytes(self, key: str) -> bytes:
        """The whole object in memory: for small objects only (model cards, manifests)."""
        ...

    def stat(self, key: str) -> ObjectInfo:
        """Size, digest, ETag, mtime and content type of one object. Raises `ObjectNotFound`."""
        ...

    def exists(self, key: str) -> bool:
        """Whether an object is stored under `key`."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object; removing a missing object is not an error."""
        ...

    def delete_prefix(self, prefix: str) -> int:
        """Remove every object whose key starts with the non-empty `prefix`; returns how many."""
        ...

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose key starts with `prefix` ("" = all), recursively, sorted by key.

        Listings report key, size and mtime (and the ETag on S3); sha256 and content type are None:
        call `stat()` for those.
        """
        ...

    def download_url(
        self, key: str, *, expires: timedelta, filename: str | None = None
    ) -> str | None:
        """A URL a browser can GET the object from without credentials, valid for `expires`
        (1 s to 7 days), served as an attachment named `filename` when given; None when the
        backend cannot hand out URLs and the API must stream the object itself."""
        ...

    def ping(self) -> None:
        """Check that the store is reachable and writable; raises `StoreUnavailable` with why."""
        ...

    def create_multipart_upload(self, key: str, *, content_type: str = DEFAULT_CONTENT_TYPE) -> str:
        """Start a client-side multipart upload to `key`; returns its upload id."""
        ...

    def presigned_part_url(
        self, key: str, upload_id: str, part_number: int, expires: timedelta
    ) -> str:
        """A URL the client PUTs part `part_number` (1..10000) to; the response carries its ETag."""
        ...

    def complete_multipart_upload(
        self, key: str, upload_id: str, parts: Sequence[tuple[int, str]]
    ) -> ObjectInfo:
        """Assemble the uploaded parts, given as (part number, ETag), into the object."""
        ...

    def abort_multipart_upload(self, key: str, upload_id: str) -> None:
        """Drop an unfinished multipart upload and its parts; unknown ids are ignored."""
        ...


def content_disposition(filename: str) -> str:
    """An RFC 6266 `attachment` Content-Disposition value that survives any Unicode filename."""
    fallback = "".join(
        char if 0x20 <= ord(char) < 0x7F and char not in '"\\' else "_" for char in filename
    )
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"
