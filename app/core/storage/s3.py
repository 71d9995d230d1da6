"""`S3ObjectStore`: objects in an S3 bucket (MinIO, SeaweedFS, AWS) through the `minio` client,
for production, and how to build one from the settings."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import BinaryIO, cast

import certifi
import urllib3
from minio import Minio
from minio.datatypes import Part
from minio.deleteobjects import DeleteObject
from minio.error import MinioException, S3Error
from minio.helpers import DictType, check_bucket_name

from app.core.storage.base import (
    DEFAULT_CONTENT_TYPE,
    ObjectInfo,
    StoreSettings,
    content_disposition,
)
from app.core.storage.errors import (
    InvalidRange,
    MultipartUploadInvalid,
    ObjectNotFound,
    StorageConfigError,
    StoreUnavailable,
)
from app.core.storage.keys import check_range, validate_object_key, validate_prefix
from app.core.storage.streams import DigestingStream, buffered_view

# minio holds about three parts in memory during a streamed upload (~25 MiB); 8 MiB x 10,000 parts
# caps unknown-size streams at 78 GiB, ample for dataset archives and checkpoints.
DEFAULT_PART_SIZE = 8 * 1024 * 1024
MIN_PART_SIZE = 5 * 1024 * 1024
MAX_PARTS = 10_000

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
        reader = DigestingStream(key, stream, size)
        return self._upload(key, reader, size, content_type, metadata=None)

    def put_bytes(
        self, key: str, data: bytes, *, content_type: str = DEFAULT_CONTENT_TYPE
    ) -> ObjectInfo:
        reader = DigestingStream(key, io.BytesIO(data), len(data))
        digest = hashlib.sha256(data).hexdigest()
        return self._upload(key, reader, len(data), content_type, metadata={"sha256": digest})

    def open(self, key: str) -> BinaryIO:
        return self._get(key, {})

    def open_range(self, key: str, start: int, length: int | None) -> BinaryIO:
        check_range(start, length)
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
        validate_prefix(prefix, allow_empty=False)
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
        validate_prefix(prefix, allow_empty=True)
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
        reader: DigestingStream,
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

        return buffered_view(response, None, release)

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


def open_s3_store(settings: StoreSettings, *, bucket: str, prefix: str) -> S3ObjectStore:
    """An `S3ObjectStore` on `bucket` under `prefix` ("" for none) with the settings' endpoint and
    credentials; raises `StorageConfigError` when they cannot describe one. Does no I/O."""
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
