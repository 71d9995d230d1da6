"""Object store: where datasets, checkpoints and student artifacts live.

One small interface (`ObjectStore`) with two backends chosen by `settings.storage_url`:

* `file:///abs/dir` or `file://relative/dir` (relative to the data dir): `LocalObjectStore`, a
  directory on this machine, for the embedded single-machine deployment.
* `s3://bucket[/prefix]`: `S3ObjectStore`, any S3 server (MinIO, SeaweedFS, AWS) through the
  `minio` client, for production.

Keys are `/`-separated relative paths (`team/datasets/ds_1/archive.zip`), validated the same way on
both backends so that code tested against one behaves the same on the other. Writes are atomic: a
reader sees the old object or the complete new one, and a failed upload leaves nothing behind.

sha256 bookkeeping: every `put`/`put_bytes` returns the sha256 and size of what it stored,
computed while streaming. `stat()` also reports the sha256 on the local store (sidecar file) and
for S3 objects written with `put_bytes` (object metadata). A streamed S3 upload cannot attach it:
S3 takes metadata before the first byte, and attaching it afterwards means a server-side copy of
the whole object (double I/O for multi-GB archives, and CopyObject stops at 5 GiB). Callers record
the returned sha256 in the database, which is the source of truth for artifact digests.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from stat import S_ISREG
from typing import TYPE_CHECKING, BinaryIO, Protocol, cast
from urllib.parse import quote, unquote, urlsplit

import certifi
import urllib3
from minio import Minio
from minio.datatypes import Part
from minio.deleteobjects import DeleteObject
from minio.error import MinioException, S3Error
from minio.helpers import DictType, check_bucket_name

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

DEFAULT_CONTENT_TYPE = "application/octet-stream"
# Local copies and reads move data in chunks of this size, so memory stays flat for any object size.
COPY_CHUNK_BYTES = 1024 * 1024
# minio holds about three parts in memory during a streamed upload (~25 MiB); 8 MiB x 10,000 parts
# caps unknown-size streams at 78 GiB, ample for dataset archives and checkpoints.
DEFAULT_PART_SIZE = 8 * 1024 * 1024
MIN_PART_SIZE = 5 * 1024 * 1024
MAX_PARTS = 10_000
MAX_KEY_BYTES = 1024
# The local store turns key segments into file names, which NAME_MAX limits to 255 bytes.
MAX_SEGMENT_BYTES = 255


class ObjectStoreError(Exception):
    """Base class of every error raised by an object store."""


class InvalidObjectKey(ObjectStoreError, ValueError):
    """The key is not a safe relative `/`-separated path, or collides with another object."""


class ObjectNotFound(ObjectStoreError, KeyError):
    """No object is stored under the key."""

    def __init__(self, key: str) -> None:
        super().__init__(f"object {key!r} does not exist")
        self.key = key

    def __str__(self) -> str:
        # KeyError would print the repr of the message; keep it readable.
        return str(self.args[0])


class InvalidRange(ObjectStoreError, ValueError):
    """A byte range is negative or empty, or starts at or past the end of the object (HTTP 416)."""


class ObjectSizeMismatch(ObjectStoreError, ValueError):
    """A stream delivered more or fewer bytes than the size declared for it."""


class StoreUnavailable(ObjectStoreError):
    """The store cannot be reached or refuses us (network, credentials, permissions)."""


class MultipartUnsupported(ObjectStoreError):
    """The backend has no client-side multipart uploads (the local directory store)."""


class MultipartUploadInvalid(ObjectStoreError, ValueError):
    """A multipart upload id is unknown or its part list does not match the uploaded parts."""


class StorageConfigError(ObjectStoreError, ValueError):
    """`storage_url` or the S3 settings cannot describe a store."""


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


def validate_object_key(key: str) -> str:
    """Return `key` if it is a safe relative path, else raise `InvalidObjectKey` saying why."""
    _check_path_like(key, what="key")
    if key.endswith("/"):
        raise InvalidObjectKey(f"key {key!r} must not end with '/'")
    return key


def _check_path_like(value: str, *, what: str) -> None:
    if not value:
        raise InvalidObjectKey(f"{what} must not be empty")
    if len(value.encode("utf-8")) > MAX_KEY_BYTES:
        raise InvalidObjectKey(f"{what} {value[:40]!r}... is longer than {MAX_KEY_BYTES} bytes")
    if value.startswith("/"):
        raise InvalidObjectKey(f"{what} {value!r} must be relative (no leading '/')")
    if "\\" in value:
        raise InvalidObjectKey(f"{what} {value!r} must use '/' separators, not '\\'")
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in value):
        raise InvalidObjectKey(f"{what} {value!r} must not contain control characters")
    # A trailing "/" (prefixes only) leaves one empty last segment, which is fine.
    segments = value.removesuffix("/").split("/")
    for segment in segments:
        if segment == "":
            raise InvalidObjectKey(f"{what} {value!r} has an empty path segment ('//')")
        if segment in (".", ".."):
            raise InvalidObjectKey(f"{what} {value!r} must not contain '.' or '..' segments")
        if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise InvalidObjectKey(
                f"{what} {value!r} has a segment longer than {MAX_SEGMENT_BYTES} bytes"
            )


def _validate_prefix(prefix: str, *, allow_empty: bool) -> str:
    if prefix == "" and allow_empty:
        return prefix
    _check_path_like(prefix, what="prefix")
    return prefix


def _check_range(start: int, length: int | None) -> None:
    if start < 0:
        raise InvalidRange(f"range start must be >= 0, got {start}")
    if length is not None and length < 1:
        raise InvalidRange(f"range length must be >= 1 or None, got {length}")


def content_disposition(filename: str) -> str:
    """An RFC 6266 `attachment` Content-Disposition value that survives any Unicode filename."""
    fallback = "".join(
        char if 0x20 <= ord(char) < 0x7F and char not in '"\\' else "_" for char in filename
    )
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


class _DigestingStream:
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


def _buffered(source: _Readable, limit: int | None, release: Callable[[], None]) -> BinaryIO:
    return io.BufferedReader(_StreamView(source, limit, release), buffer_size=COPY_CHUNK_BYTES)


class LocalObjectStore:
    """Objects as files under `root`, for the embedded deployment.

    Layout: `root/objects/<key>` holds the bytes, `root/meta/<key>` a JSON sidecar (sha256, content
    type, and the data file's inode and size, so a sidecar left stale by a crash or a concurrent
    writer is ignored rather than trusted), and `root/.tmp/` the uploads in progress. The local
    store cannot hold both `a` and `a/b` (a file cannot be a directory): such a put raises
    `InvalidObjectKey`.
    """

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._objects = self.root / "objects"
        self._meta = self.root / "meta"
        self._tmp = self.root / ".tmp"

    def put(
        self,
        key: str,
        stream: BinaryIO,
        *,
        size: int | None = None,
        content_type: str = DEFAULT_CONTENT_TYPE,
    ) -> ObjectInfo:
        path = self._object_path(key)
        reader = _DigestingStream(key, stream, size)
        self._tmp.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=self._tmp, prefix="put-")
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := reader.read(COPY_CHUNK_BYTES):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
                stored = os.fstat(out.fileno())
            # Sidecar before data: if anything fails, no new object has become visible.
            sidecar = {
                "sha256": reader.sha256,
                "content_type": content_type,
                "size": stored.st_size,
                "inode": stored.st_ino,
            }
            self._write_sidecar(key, sidecar)
            self._place(key, Path(tmp_name), path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return ObjectInfo(
            key=key,
            size=reader.size,
            sha256=reader.sha256,
            etag=None,
            modified=datetime.fromtimestamp(stored.st_mtime, tz=UTC),
            content_type=content_type,
        )

    def put_bytes(
        self, key: str, data: bytes, *, content_type: str = DEFAULT_CONTENT_TYPE
    ) -> ObjectInfo:
        return self.put(key, io.BytesIO(data), size=len(data), content_type=content_type)

    def open(self, key: str) -> BinaryIO:
        return self._open_file(key)

    def open_range(self, key: str, start: int, length: int | None) -> BinaryIO:
        _check_range(start, length)
        handle = self._open_file(key)
        try:
            size = os.fstat(handle.fileno()).st_size
            if start >= size:
                raise InvalidRange(f"range start {start} is past the end of {key!r} ({size} bytes)")
            handle.seek(start)
        except BaseException:
            handle.close()
            raise
        return _buffered(handle, length, handle.close)

    def get_bytes(self, key: str) -> bytes:
        with self.open(key) as handle:
            return handle.read()

    def stat(self, key: str) -> ObjectInfo:
        path = self._object_path(key)
        try:
            stored = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(key) from None
        if not S_ISREG(stored.st_mode):
            raise ObjectNotFound(key)
        sidecar = self._read_sidecar(key)
        current = (
            sidecar is not None
            and sidecar.get("inode") == stored.st_ino
            and sidecar.get("size") == stored.st_size
        )
        return ObjectInfo(
            key=key,
            size=stored.st_size,
            sha256=cast(str, sidecar["sha256"]) if current and sidecar else None,
            etag=None,
            modified=datetime.fromtimestamp(stored.st_mtime, tz=UTC),
            content_type=cast(str, sidecar["content_type"]) if current and sidecar else None,
        )

    def exists(self, key: str) -> bool:
        return self._object_path(key).is_file()

    def delete(self, key: str) -> None:
        path = self._object_path(key)
        # Sidecar first: a crash in between leaves an object without a digest, never a stale one.
        self._meta_path(key).unlink(missing_ok=True)
        try:
            path.unlink()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return
        self._prune_empty_dirs(path.parent, self._objects)
        self._prune_empty_dirs(self._meta_path(key).parent, self._meta)

    def delete_prefix(self, prefix: str) -> int:
        _validate_prefix(prefix, allow_empty=False)
        keys = [info.key for info in self.list(prefix)]
        for key in keys:
            self.delete(key)
        return len(keys)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        _validate_prefix(prefix, allow_empty=True)
        # Walk only the deepest directory the prefix names completely.
        start = self._objects / prefix.rpartition("/")[0]
        keys = [
            key
            for directory, _, files in os.walk(start)
            for name in files
            if (key := (Path(directory) / name).relative_to(self._objects).as_posix()).startswith(
                prefix
            )
        ]
        for key in sorted(keys):
            try:
                stored = (self._objects / key).stat()
            except FileNotFoundError:
                continue  # deleted while we were listing
            yield ObjectInfo(
                key=key,
                size=stored.st_size,
                sha256=None,
                etag=None,
                modified=datetime.fromtimestamp(stored.st_mtime, tz=UTC),
                content_type=None,
            )

    def download_url(
        self, key: str, *, expires: timedelta, filename: str | None = None
    ) -> str | None:
        validate_object_key(key)
        return None

    def ping(self) -> None:
        try:
            self._tmp.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self._tmp, prefix="ping-") as probe:
                probe.write(b"ok")
        except OSError as exc:
            raise StoreUnavailable(
                f"local object store {self.root} is not writable: {exc}"
            ) from exc

    def create_multipart_upload(self, key: str, *, content_type: str = DEFAULT_CONTENT_TYPE) -> str:
        raise self._no_multipart()

    def presigned_part_url(
        self, key: str, upload_id: str, part_number: int, expires: timedelta
    ) -> str:
        raise self._no_multipart()

    def complete_multipart_upload(
        self, key: str, upload_id: str, parts: Sequence[tuple[int, str]]
    ) -> ObjectInfo:
        raise self._no_multipart()

    def abort_multipart_upload(self, key: str, upload_id: str) -> None:
        raise self._no_multipart()

    def _no_multipart(self) -> MultipartUnsupported:
        return MultipartUnsupported(
            "the local object store has no multipart uploads: stream the file through the API, "
            "or configure an s3:// storage_url for direct client uploads"
        )

    def _open_file(self, key: str) -> io.BufferedReader:
        try:
            return self._object_path(key).open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key) from None

    def _object_path(self, key: str) -> Path:
        return self._inside(self._objects, key)

    def _meta_path(self, key: str) -> Path:
        return self._inside(self._meta, key)

    def _inside(self, base: Path, key: str) -> Path:
        validate_object_key(key)
        path = (base / key).resolve()
        # Validation already forbids "..", this also catches symlinks planted inside the root.
        if not path.is_relative_to(base):
            raise InvalidObjectKey(f"key {key!r} resolves outside the object store")
        return path

    def _place(self, key: str, tmp: Path, path: Path) -> None:
        """Atomically rename the finished temp file `tmp` to `path`, creating its directory."""
        # A concurrent delete may prune a parent directory between mkdir and rename: retry.
        for _ in range(3):
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, path)
            except FileNotFoundError:
                continue
            except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
                raise InvalidObjectKey(
                    f"key {key!r} collides with an existing object or prefix: the local store "
                    "cannot hold both 'a' and 'a/b'"
                ) from exc
            _fsync_directory(path.parent)
            return
        raise StoreUnavailable(f"could not create the directory of {key!r}: it keeps disappearing")

    def _write_sidecar(self, key: str, sidecar: dict[str, object]) -> None:
        path = self._meta_path(key)
        fd, tmp_name = tempfile.mkstemp(dir=self._tmp, prefix="meta-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(sidecar, out)
                out.flush()
                os.fsync(out.fileno())
            self._place(key, Path(tmp_name), path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise

    def _read_sidecar(self, key: str) -> dict[str, object] | None:
        try:
            with self._meta_path(key).open(encoding="utf-8") as handle:
                loaded = json.load(handle)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError, json.JSONDecodeError):
            return None
        return loaded if isinstance(loaded, dict) else None

    @staticmethod
    def _prune_empty_dirs(directory: Path, stop: Path) -> None:
        while directory != stop and directory.is_relative_to(stop):
            try:
                directory.rmdir()
            except OSError:
                return  # not empty (or already gone): the parents are not empty either
            directory = directory.parent


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable, not only the file's bytes.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# S3 error codes that mean "the caller got the multipart bookkeeping wrong", not "S3 is down".
_MULTIPART_CLIENT_ERRORS = frozenset(
    {"NoSuchUpload", "InvalidPart", "InvalidPartOrder", "EntityTooSmall", "MalformedXML"}
)


class S3ObjectStore:
    """Objects in an S3 bucket under an optional key prefix, through the `minio` client.

    The bucket is created on first use when missing. Uploads of unknown size stream as multipart
    uploads of `part_size` bytes (a few parts in memory at a time); an upload whose stream fails is
    aborted, so S3 never shows a partial object.
    """

    def __init__(
        self,
        client: Minio,
        bucket: str,
        prefix: str = "",
        *,
        part_size: int = DEFAULT_PART_SIZE,
        presign_client: Minio | None = None,
    ) -> None:
        if prefix:
            validate_object_key(prefix)
        if part_size < MIN_PART_SIZE:
            raise StorageConfigError(f"S3 part size must be >= {MIN_PART_SIZE} bytes")
        self.bucket = bucket
        self.prefix = prefix
        self._client = client
        # Presigned URLs are handed to browsers, which may reach S3 under another host name.
        self._presign_client = presign_client or client
        self._part_size = part_size
        self._bucket_ready = False
        self._bucket_lock = threading.Lock()

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist yet; checked once per store instance."""
        if self._bucket_ready:
            return
        with self._bucket_lock:
            if not self._bucket_ready:
                self._create_bucket_if_missing()
                self._bucket_ready = True

    def put(
        self,
        key: str,
        stream: BinaryIO,
        *,
        size: int | None = None,
        content_type: str = DEFAULT_CONTENT_TYPE,
    ) -> ObjectInfo:
        reader = _DigestingStream(key, stream, size)
        return self._upload(key, reader, size, content_type, metadata=None)

    def put_bytes(
        self, key: str, data: bytes, *, content_type: str = DEFAULT_CONTENT_TYPE
    ) -> ObjectInfo:
        reader = _DigestingStream(key, io.BytesIO(data), len(data))
        digest = hashlib.sha256(data).hexdigest()
        return self._upload(key, reader, len(data), content_type, metadata={"sha256": digest})

    def open(self, key: str) -> BinaryIO:
        return self._get(key, {})

    def open_range(self, key: str, start: int, length: int | None) -> BinaryIO:
        _check_range(start, length)
        end = "" if length is None else str(start + length - 1)
        # Always send the Range header, so "bytes=0-" of an empty object is a 416 as locally.
        return self._get(key, {"Range": f"bytes={start}-{end}"})

    def get_bytes(self, key: str) -> bytes:
        with self.open(key) as handle:
            return handle.read()

    def stat(self, key: str) -> ObjectInfo:
        name = self._name(key)
        self.ensure_bucket()
        with self._translate_errors(key):
            found = self._client.stat_object(self.bucket, name)
        return ObjectInfo(
            key=key,
            size=found.size or 0,
            sha256=(found.metadata or {}).get("x-amz-meta-sha256"),
            etag=found.etag,
            modified=found.last_modified,
            content_type=found.content_type,
        )

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
        except ObjectNotFound:
            return False
        return True

    def delete(self, key: str) -> None:
        name = self._name(key)
        self.ensure_bucket()
        with self._translate_errors(key):
            self._client.remove_object(self.bucket, name)

    def delete_prefix(self, prefix: str) -> int:
        _validate_prefix(prefix, allow_empty=False)
        doomed = [DeleteObject(self._name(info.key)) for info in self.list(prefix)]
        with self._translate_errors(None):
            failures = list(self._client.remove_objects(self.bucket, doomed))
        if failures:
            first = failures[0]
            raise StoreUnavailable(
                f"S3 refused to delete {len(failures)} of {len(doomed)} objects under {prefix!r}, "
                f"first {first.name!r}: {first.code} {first.message}"
            )
        return len(doomed)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        _validate_prefix(prefix, allow_empty=True)
        self.ensure_bucket()
        with self._translate_errors(None):
            listed = [
                ObjectInfo(
                    key=self._key(found.object_name),
                    size=found.size or 0,
                    sha256=None,
                    etag=found.etag,
                    modified=found.last_modified,
                    content_type=None,
                )
                for found in self._client.list_objects(
                    self.bucket, prefix=self._name(prefix, validate=False), recursive=True
                )
                if not found.is_dir and found.object_name is not None
            ]
        # S3 promises key order, but SeaweedFS lists depth-first ("a/b" before "a.txt").
        yield from sorted(listed, key=lambda info: info.key)

    def download_url(
        self, key: str, *, expires: timedelta, filename: str | None = None
    ) -> str | None:
        name = self._name(key)
        headers: DictType = (
            {"response-content-disposition": content_disposition(filename)} if filename else {}
        )
        self.ensure_bucket()
        with self._translate_errors(key):
            return self._presign_client.presigned_get_object(
                self.bucket, name, expires=expires, response_headers=headers
            )

    def ping(self) -> None:
        self._create_bucket_if_missing()
        self._bucket_ready = True

    def create_multipart_upload(self, key: str, *, content_type: str = DEFAULT_CONTENT_TYPE) -> str:
        name = self._name(key)
        self.ensure_bucket()
        with self._translate_errors(key):
            # minio-py offers multipart uploads only through these protected methods.
            return self._client._create_multipart_upload(
                self.bucket, name, {"Content-Type": content_type}
            )

    def presigned_part_url(
        self, key: str, upload_id: str, part_number: int, expires: timedelta
    ) -> str:
        name = self._name(key)
        if not 1 <= part_number <= MAX_PARTS:
            raise MultipartUploadInvalid(f"part number must be 1..{MAX_PARTS}, got {part_number}")
        self.ensure_bucket()
        with self._translate_errors(key):
            return self._presign_client.get_presigned_url(
                "PUT",
                self.bucket,
                name,
                expires=expires,
                extra_query_params={"partNumber": str(part_number), "uploadId": upload_id},
            )

    def complete_multipart_upload(
        self, key: str, upload_id: str, parts: Sequence[tuple[int, str]]
    ) -> ObjectInfo:
        name = self._name(key)
        numbers = [number for number, _ in parts]
        if not parts or len(set(numbers)) != len(numbers):
            raise MultipartUploadInvalid(
                f"completing {key!r} needs at least one part and unique part numbers"
            )
        ordered = [Part(number, etag.strip('"')) for number, etag in sorted(parts)]
        self.ensure_bucket()
        with self._translate_errors(key, upload=upload_id):
            self._client._complete_multipart_upload(self.bucket, name, upload_id, ordered)
        return self.stat(key)

    def abort_multipart_upload(self, key: str, upload_id: str) -> None:
        name = self._name(key)
        self.ensure_bucket()
        try:
            with self._translate_errors(key, upload=upload_id):
                self._client._abort_multipart_upload(self.bucket, name, upload_id)
        except MultipartUploadInvalid:
            return  # already completed, aborted or never started: nothing to drop

    def _upload(
        self,
        key: str,
        reader: _DigestingStream,
        size: int | None,
        content_type: str,
        metadata: DictType | None,
    ) -> ObjectInfo:
        name = self._name(key)
        self.ensure_bucket()
        with self._translate_errors(key):
            written = self._client.put_object(
                self.bucket,
                name,
                # minio only calls read(n) with n > 0, which is all the digesting stream offers.
                cast(BinaryIO, reader),
                length=-1,
                part_size=self._part_size_for(size),
                content_type=content_type,
                metadata=metadata,
                # minio's parallel uploader leaks its threads when the source stream fails.
                num_parallel_uploads=1,
            )
        return ObjectInfo(
            key=key,
            size=reader.size,
            sha256=reader.sha256,
            etag=written.etag,
            modified=None,
            content_type=content_type,
        )

    def _part_size_for(self, size: int | None) -> int:
        if size is None or size <= self._part_size * MAX_PARTS:
            return self._part_size
        mebibyte = 1024 * 1024
        per_part = -(-size // MAX_PARTS)
        return -(-per_part // mebibyte) * mebibyte

    def _get(self, key: str, headers: DictType) -> BinaryIO:
        name = self._name(key)
        self.ensure_bucket()
        with self._translate_errors(key):
            response = self._client.get_object(
                self.bucket,
                name,
                request_headers=headers,
            )

        def release() -> None:
            response.close()
            response.release_conn()

        return _buffered(response, None, release)

    def _create_bucket_if_missing(self) -> None:
        with self._translate_errors(None):
            if self._client.bucket_exists(self.bucket):
                return
            try:
                self._client.make_bucket(self.bucket)
            except S3Error as exc:
                # Another process created it between our check and our request.
                if exc.code != "BucketAlreadyOwnedByYou":
                    raise

    def _name(self, key: str, *, validate: bool = True) -> str:
        if validate:
            validate_object_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _key(self, name: str) -> str:
        return name[len(self.prefix) + 1 :] if self.prefix else name

    @contextmanager
    def _translate_errors(self, key: str | None, *, upload: str | None = None) -> Iterator[None]:
        try:
            yield
        except S3Error as exc:
            if key is not None and exc.code == "NoSuchKey" and upload is None:
                raise ObjectNotFound(key) from exc
            if exc.code == "InvalidRange":
                raise InvalidRange(f"range is past the end of {key!r}") from exc
            if upload is not None and exc.code in _MULTIPART_CLIENT_ERRORS:
                raise MultipartUploadInvalid(
                    f"multipart upload {upload!r} of {key!r}: {exc.code} {exc.message}"
                ) from exc
            raise StoreUnavailable(
                f"S3 bucket {self.bucket!r} answered {exc.code}: {exc.message}"
            ) from exc
        except (MinioException, urllib3.exceptions.HTTPError) as exc:
            raise StoreUnavailable(f"S3 bucket {self.bucket!r} is unreachable: {exc}") from exc


def _s3_http_client() -> urllib3.PoolManager:
    # minio's default pool waits 5 minutes to connect, which would hang /readyz on a dead host.
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=10, read=300),
        maxsize=10,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=urllib3.Retry(total=3, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
    )


def open_object_store(settings: StoreSettings) -> ObjectStore:
    """Build the store `settings.storage_url` names; does no I/O (see `ObjectStore.ping`)."""
    url = urlsplit(settings.storage_url)
    if url.scheme == "file":
        relative = unquote(url.netloc + url.path)
        if not relative:
            raise StorageConfigError("storage_url 'file://' needs a directory: file:///abs/dir")
        # Relative roots live in the data dir, so the embedded deployment stays in one folder.
        return LocalObjectStore(Path(settings.data_dir) / relative)
    if url.scheme == "s3":
        return _open_s3_store(settings, bucket=url.netloc, prefix=url.path.strip("/"))
    raise StorageConfigError(
        f"storage_url {settings.storage_url!r} is not supported: use file:///abs/dir, "
        "file://dir-in-data-dir or s3://bucket[/prefix]"
    )


def _open_s3_store(settings: StoreSettings, *, bucket: str, prefix: str) -> S3ObjectStore:
    endpoint = settings.s3_endpoint
    if not endpoint:
        raise StorageConfigError(
            "storage_url is s3:// but FOPRO_S3_ENDPOINT is not set: give it as host:port"
        )
    if "://" in endpoint or "/" in endpoint:
        raise StorageConfigError(
            f"FOPRO_S3_ENDPOINT must be host:port without scheme or path, got {endpoint!r}; "
            "use FOPRO_S3_SECURE for https"
        )
    try:
        check_bucket_name(bucket, strict=True)
        if prefix:
            validate_object_key(prefix)
    except ValueError as exc:
        raise StorageConfigError(f"storage_url s3://{bucket}/{prefix}: {exc}") from exc
    client = _minio_client(settings, endpoint)
    public = settings.s3_public_endpoint
    presign_client = _minio_client(settings, public) if public and public != endpoint else None
    return S3ObjectStore(client, bucket, prefix, presign_client=presign_client)


def _minio_client(settings: StoreSettings, endpoint: str) -> Minio:
    # The region is always given, so presigning never has to ask the (maybe unreachable) host.
    return Minio(
        endpoint,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key,
        secure=settings.s3_secure,
        region=settings.s3_region,
        http_client=_s3_http_client(),
    )
