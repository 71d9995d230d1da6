"""`LocalObjectStore`: objects as files in a directory, for the embedded deployment."""

from __future__ import annotations

import errno
import io
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from stat import S_ISREG
from typing import BinaryIO, cast

from app.core.storage.base import COPY_CHUNK_BYTES, DEFAULT_CONTENT_TYPE, ObjectInfo
from app.core.storage.errors import (
    InvalidObjectKey,
    InvalidRange,
    MultipartUnsupported,
    ObjectNotFound,
    StorageFull,
    StoreUnavailable,
)
from app.core.storage.keys import check_range, validate_object_key, validate_prefix
from app.core.storage.streams import DigestingStream, buffered_view


class LocalObjectStore:
    """Objects as files under `root`, for the embedded deployment.

    Layout: `root/objects/<key>` holds the bytes, `root/meta/<key>` a JSON sidecar (sha256, content
    type, and the data file's inode and size, so a sidecar left stale by a crash or a concurrent
    writer is ignored rather than trusted), and `root/.tmp/` the uploads in progress. The local
    store cannot hold both `a` and `a/b` (a file cannot be a directory): such a put raises
    `InvalidObjectKey`.

    A put that would leave less than `min_free_bytes` free on the store's filesystem, or that
    runs out of space (ENOSPC), raises `StorageFull` and keeps nothing of the object: the floor
    leaves room for the database and logs that share the disk.
    """

    def __init__(self, root: Path, *, min_free_bytes: int = 0) -> None:
        self.root = root.resolve()
        self.min_free_bytes = min_free_bytes
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
        reader = DigestingStream(key, stream, size)
        self._tmp.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=self._tmp, prefix="put-")
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := reader.read(COPY_CHUNK_BYTES):
                    self._check_room(key, len(chunk))
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
        except OSError as exc:
            Path(tmp_name).unlink(missing_ok=True)
            if exc.errno == errno.ENOSPC:
                raise StorageFull(f"no space left on the store's disk for {key!r}") from exc
            raise
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
        check_range(start, length)
        handle = self._open_file(key)
        try:
            size = os.fstat(handle.fileno()).st_size
            if start >= size:
                raise InvalidRange(f"range start {start} is past the end of {key!r} ({size} bytes)")
            handle.seek(start)
        except BaseException:
            handle.close()
            raise
        return buffered_view(handle, length, handle.close)

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
        validate_prefix(prefix, allow_empty=False)
        keys = [info.key for info in self.list(prefix)]
        for key in keys:
            self.delete(key)
        return len(keys)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        validate_prefix(prefix, allow_empty=True)
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

    def _check_room(self, key: str, incoming: int) -> None:
        """Refuse ``incoming`` more bytes when they would leave less than ``min_free_bytes``."""
        if not self.min_free_bytes:
            return
        stats = os.statvfs(self._tmp)
        free = stats.f_bavail * stats.f_frsize
        if free - incoming < self.min_free_bytes:
            raise StorageFull(
                f"storing {key!r} would leave {max(free - incoming, 0)} bytes free on the store's "
                f"disk, below FOPRO_LOCAL_STORE_MIN_FREE_BYTES={self.min_free_bytes}; free space "
                "or delete old jobs and datasets"
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
