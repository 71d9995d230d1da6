"""Object store: where datasets, checkpoints and student artifacts live.

One small interface (`ObjectStore`, in `base`) with two backends chosen by `settings.storage_url`:

* `file:///abs/dir` or `file://relative/dir` (relative to the data dir): `LocalObjectStore`, a
  directory on this machine, for the embedded single-machine deployment.
* `s3://bucket[/prefix]`: `S3ObjectStore`, any S3 server (MinIO, SeaweedFS, AWS) through the
  `minio` client, for production.

Keys are `/`-separated relative paths (`team/datasets/ds_1/archive.zip`), validated the same way on
both backends (`keys`). Writes are atomic: a reader sees the old object or the complete new one,
and a failed upload leaves nothing behind.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from app.core.storage.base import (
    COPY_CHUNK_BYTES,
    DEFAULT_CONTENT_TYPE,
    ObjectInfo,
    ObjectStore,
    StoreSettings,
    content_disposition,
)
from app.core.storage.errors import (
    InvalidObjectKey,
    InvalidRange,
    MultipartUnsupported,
    MultipartUploadInvalid,
    ObjectNotFound,
    ObjectSizeMismatch,
    ObjectStoreError,
    StorageConfigError,
    StorageFull,
    StoreUnavailable,
)
from app.core.storage.keys import validate_object_key
from app.core.storage.local import LocalObjectStore
from app.core.storage.s3 import S3ObjectStore, open_s3_store

__all__ = [
    "COPY_CHUNK_BYTES",
    "DEFAULT_CONTENT_TYPE",
    "InvalidObjectKey",
    "InvalidRange",
    "LocalObjectStore",
    "MultipartUnsupported",
    "MultipartUploadInvalid",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectSizeMismatch",
    "ObjectStore",
    "ObjectStoreError",
    "S3ObjectStore",
    "StorageConfigError",
    "StorageFull",
    "StoreSettings",
    "StoreUnavailable",
    "content_disposition",
    "open_object_store",
    "validate_object_key",
]


def open_object_store(settings: StoreSettings) -> ObjectStore:
    """Build the store `settings.storage_url` names; does no I/O (see `ObjectStore.ping`)."""
    url = urlsplit(settings.storage_url)
    if url.scheme == "file":
        relative = unquote(url.netloc + url.path)
        if not relative:
            raise StorageConfigError("storage_url 'file://' needs a directory: file:///abs/dir")
        # Relative roots live in the data dir, so the embedded deployment stays in one folder.
        return LocalObjectStore(
            Path(settings.data_dir) / relative,
            min_free_bytes=settings.local_store_min_free_bytes,
        )
    if url.scheme == "s3":
        return open_s3_store(settings, bucket=url.netloc, prefix=url.path.strip("/"))
    raise StorageConfigError(
        f"storage_url {settings.storage_url!r} is not supported: use file:///abs/dir, "
        "file://dir-in-data-dir or s3://bucket[/prefix]"
    )
