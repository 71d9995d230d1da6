"""Contract of the object store, run against both backends.

Every test gets a fresh store: the local one in its own temp dir, the S3 one under its own key
prefix in the session's SeaweedFS bucket (`tests/support/seaweed.py`).
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import tracemalloc
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app.core.storage import (
    InvalidObjectKey,
    InvalidRange,
    LocalObjectStore,
    MultipartUnsupported,
    MultipartUploadInvalid,
    ObjectNotFound,
    ObjectSizeMismatch,
    ObjectStore,
    S3ObjectStore,
    StorageConfigError,
    StoreUnavailable,
    open_object_store,
)
from tests.support.seaweed import S3Server

pytestmark = pytest.mark.integration

MIB = 1024 * 1024


@dataclass(frozen=True)
class StoreSettingsForTest:
    """The settings fields `open_object_store` reads."""

    storage_url: str
    data_dir: Path
    s3_endpoint: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_region: str = "us-east-1"
    s3_secure: bool = False
    s3_public_endpoint: str | None = None
    local_store_min_free_bytes: int = 0


class StreamBroke(Exception):
    """What a client disconnect looks like to the store: the source stream raises."""


class ChunkedBody(io.RawIOBase):
    """A request-body-like stream: `chunks` pseudo-random chunks, no length, not seekable.

    Raises `StreamBroke` once `fail_after` chunks have been read.
    """

    def __init__(self, chunks: int, chunk_size: int = MIB, *, fail_after: int | None = None):
        super().__init__()
        self._rng = random.Random(chunks * 7919 + chunk_size)
        self._chunks_left = chunks
        self._chunk_size = chunk_size
        self._fail_after = fail_after
        self._served = 0
        self._pending = b""

    @staticmethod
    def expected(chunks: int, chunk_size: int = MIB) -> bytes:
        """The exact bytes a complete body with these parameters yields."""
        return ChunkedBody(chunks, chunk_size).read_all_chunks()

    def read_all_chunks(self) -> bytes:
        return b"".join(iter(lambda: self.read(self._chunk_size), b""))

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if not self._pending:
            if self._fail_after is not None and self._served >= self._fail_after:
                raise StreamBroke(f"client went away after {self._served} chunks")
            if self._chunks_left == 0:
                return 0
            self._pending = self._rng.randbytes(self._chunk_size)
            self._chunks_left -= 1
            self._served += 1
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def settings_for(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> StoreSettingsForTest:
    if backend == "local":
        return StoreSettingsForTest(storage_url=f"file://{tmp_path}/store", data_dir=tmp_path)
    server: S3Server = request.getfixturevalue("s3_server")
    return StoreSettingsForTest(
        storage_url=f"s3://{server.bucket}/test-{uuid.uuid4().hex[:12]}",
        data_dir=tmp_path,
        s3_endpoint=server.endpoint,
        s3_access_key=server.access_key,
        s3_secret_key=server.secret_key,
        s3_region=server.region,
    )


@pytest.fixture
def store(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    return open_object_store(settings_for(backend, request, tmp_path))


def test_put_bytes_round_trips_with_digest_and_content_type(store: ObjectStore) -> None:
    data = b'{"classes": ["benign", "malignant"]}'
    before = datetime.now(UTC) - timedelta(minutes=1)

    written = store.put_bytes("team-a/cards/card.json", data, content_type="application/json")

    assert (written.key, written.size, written.sha256) == (
        "team-a/cards/card.json",
        36,
        sha256(data),
    )
    assert store.get_bytes("team-a/cards/card.json") == data
    info = store.stat("team-a/cards/card.json")
    assert (info.size, info.sha256, info.content_type) == (
        len(data),
        sha256(data),
        "application/json",
    )
    assert info.modified is not None
    assert info.modified >= before


def test_streamed_put_of_unknown_size_spans_several_parts(store: ObjectStore, backend: str) -> None:
    expected = ChunkedBody.expected(12)

    written = store.put("team-a/datasets/ds/archive.zip", ChunkedBody(12))

    assert (written.size, written.sha256) == (12 * MIB, sha256(expected))
    with store.open("team-a/datasets/ds/archive.zip") as body:
        read_back = hashlib.sha256()
        while chunk := body.read(MIB):
            read_back.update(chunk)
    assert read_back.hexdigest() == sha256(expected)
    info = store.stat("team-a/datasets/ds/archive.zip")
    assert info.size == 12 * MIB
    if backend == "s3":
        # Two 8 MiB parts: the stream went up as a multipart upload, not one buffered PUT.
        assert written.etag is not None
        assert written.etag.endswith("-2")
        assert info.sha256 is None  # documented: streamed S3 objects carry no digest metadata
    else:
        assert info.sha256 == sha256(expected)


def test_streamed_put_memory_does_not_grow_with_the_object(store: ObjectStore) -> None:
    tracemalloc.start()
    try:
        store.put("team-a/big.bin", ChunkedBody(64))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert store.stat("team-a/big.bin").size == 64 * MIB
    assert peak < 32 * MIB, f"a 64 MiB upload peaked at {peak / MIB:.1f} MiB of Python memory"


@pytest.mark.parametrize("declared", [5, 7])
def test_put_refuses_a_stream_whose_length_differs_from_the_declared_size(
    store: ObjectStore, declared: int
) -> None:
    with pytest.raises(ObjectSizeMismatch, match="team-a/short"):
        store.put("team-a/short", io.BytesIO(b"sixsix"), size=declared)

    assert not store.exists("team-a/short")


def test_stat_and_exists(store: ObjectStore) -> None:
    store.put_bytes("team-a/x/weights.safetensors", b"\x00" * 1000)

    assert store.exists("team-a/x/weights.safetensors")
    assert not store.exists("team-a/x/weights")
    assert not store.exists("team-a/x")
    assert store.stat("team-a/x/weights.safetensors").size == 1000


@pytest.mark.parametrize(
    "read",
    [
        lambda store, key: store.stat(key),
        lambda store, key: store.open(key),
        lambda store, key: store.open_range(key, 0, 10),
        lambda store, key: store.get_bytes(key),
    ],
    ids=["stat", "open", "open_range", "get_bytes"],
)
def test_missing_objects_raise_object_not_found_naming_the_key(
    store: ObjectStore, read: Callable[[ObjectStore, str], object]
) -> None:
    store.put_bytes("team-a/other", b"present")

    with pytest.raises(ObjectNotFound, match=r"team-a/missing\.bin") as raised:
        read(store, "team-a/missing.bin")

    assert isinstance(raised.value, KeyError)
    assert raised.value.key == "team-a/missing.bin"


def test_open_range_serves_http_byte_ranges(store: ObjectStore) -> None:
    data = bytes(range(256)) * 4
    store.put_bytes("team-a/blob", data)

    def read_range(start: int, length: int | None) -> bytes:
        with store.open_range("team-a/blob", start, length) as body:
            return body.read()

    assert read_range(0, 10) == data[:10]
    assert read_range(100, 50) == data[100:150]
    assert read_range(1000, None) == data[1000:]
    assert read_range(1020, 100) == data[1020:]  # clipped at the end, like HTTP
    for start, length in [(1024, None), (5000, 1), (-1, 5), (0, 0)]:
        with pytest.raises(InvalidRange):
            store.open_range("team-a/blob", start, length)


def test_open_range_of_an_empty_object_is_unsatisfiable(store: ObjectStore) -> None:
    store.put_bytes("team-a/empty", b"")

    assert store.get_bytes("team-a/empty") == b""
    with pytest.raises(InvalidRange):
        store.open_range("team-a/empty", 0, None)


def test_list_is_recursive_sorted_and_filtered_by_prefix(store: ObjectStore) -> None:
    keys = ["a/b", "a.txt", "a-b", "a/c/d", "ab", "b/x", "a0"]
    for key in keys:
        store.put_bytes(key, key.encode() * 3)

    listed = list(store.list("a"))

    assert [info.key for info in listed] == ["a-b", "a.txt", "a/b", "a/c/d", "a0", "ab"]
    assert [info.size for info in listed] == [len(info.key) * 3 for info in listed]
    assert [info.key for info in store.list("a/")] == ["a/b", "a/c/d"]
    assert [info.key for info in store.list("")] == sorted(keys)
    assert list(store.list("zzz")) == []


def test_delete_is_idempotent(store: ObjectStore) -> None:
    store.put_bytes("team-a/jobs/j1/ckpt.pt", b"state")
    store.put_bytes("team-a/jobs/j1/ckpt.pt.bak", b"state")

    store.delete("team-a/jobs/j1/ckpt.pt")
    store.delete("team-a/jobs/j1/ckpt.pt")
    store.delete("team-a/never-written")

    assert not store.exists("team-a/jobs/j1/ckpt.pt")
    assert [info.key for info in store.list("")] == ["team-a/jobs/j1/ckpt.pt.bak"]


def test_delete_prefix_removes_exactly_the_prefix(store: ObjectStore) -> None:
    for key in [
        "t1/jobs/j1/a",
        "t1/jobs/j1/sub/b",
        "t1/jobs/j10/c",
        "t1/jobs/j2/d",
        "t2/jobs/j1/e",
    ]:
        store.put_bytes(key, b"x")

    assert store.delete_prefix("t1/jobs/j1/") == 2
    assert [info.key for info in store.list("")] == [
        "t1/jobs/j10/c",
        "t1/jobs/j2/d",
        "t2/jobs/j1/e",
    ]
    assert store.delete_prefix("t1/jobs/j1/") == 0
    with pytest.raises(InvalidObjectKey):
        store.delete_prefix("")  # one typo must not wipe every team's data


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/etc/passwd",
        "a/../../b",
        "..",
        "a/..",
        "./a",
        "a/./b",
        "a//b",
        "a\\b",
        "a/",
        "a\x00b",
        "a\nb",
        "k" * 1025,
        "a/" + "s" * 256,
    ],
)
def test_invalid_keys_are_refused_everywhere(store: ObjectStore, key: str) -> None:
    calls = [
        lambda: store.put_bytes(key, b"x"),
        lambda: store.put(key, io.BytesIO(b"x")),
        lambda: store.stat(key),
        lambda: store.exists(key),
        lambda: store.open(key),
        lambda: store.delete(key),
        lambda: store.download_url(key, expires=timedelta(minutes=1)),
    ]
    for call in calls:
        with pytest.raises(InvalidObjectKey):
            call()
    assert list(store.list("")) == []


def test_failed_put_leaves_no_object_and_keeps_the_old_one(
    store: ObjectStore, request: pytest.FixtureRequest
) -> None:
    store.put_bytes("team-a/ckpt.pt", b"epoch 1")

    # 10 MiB: past the first S3 part, so a multipart upload was under way when the stream broke.
    with pytest.raises(StreamBroke):
        store.put("team-a/ckpt.pt", ChunkedBody(12, fail_after=10))
    with pytest.raises(StreamBroke):
        store.put("team-a/new.pt", ChunkedBody(12, fail_after=10))

    assert store.get_bytes("team-a/ckpt.pt") == b"epoch 1"
    assert not store.exists("team-a/new.pt")
    assert [info.key for info in store.list("")] == ["team-a/ckpt.pt"]
    if isinstance(store, LocalObjectStore):
        assert list((store.root / ".tmp").iterdir()) == []
    else:
        assert isinstance(store, S3ObjectStore)
        server: S3Server = request.getfixturevalue("s3_server")
        # minio-py lists multipart uploads only through this protected method.
        pending = server.client()._list_multipart_uploads(server.bucket, prefix=store.prefix + "/")
        assert pending.uploads == [], "the aborted multipart upload was left on the server"


def test_download_url(store: ObjectStore, backend: str) -> None:
    store.put_bytes("team-a/students/s1/model.onnx", b"onnx bytes")

    url = store.download_url("team-a/students/s1/model.onnx", expires=timedelta(minutes=5))
    named = store.download_url(
        "team-a/students/s1/model.onnx", expires=timedelta(minutes=5), filename="élève s1.onnx"
    )

    if backend == "local":
        assert url is None
        assert named is None
        return
    assert url is not None
    assert named is not None
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == b"onnx bytes"
    with urllib.request.urlopen(named, timeout=10) as response:
        disposition = response.headers["Content-Disposition"]
    assert disposition.startswith("attachment;")
    assert "filename*=UTF-8''%C3%A9l%C3%A8ve%20s1.onnx" in disposition


def test_presigned_urls_use_the_public_endpoint_when_set(
    s3_server: S3Server, tmp_path: Path
) -> None:
    settings = StoreSettingsForTest(
        storage_url=f"s3://{s3_server.bucket}/public-{uuid.uuid4().hex[:8]}",
        data_dir=tmp_path,
        s3_endpoint=s3_server.endpoint,
        s3_access_key=s3_server.access_key,
        s3_secret_key=s3_server.secret_key,
        s3_region=s3_server.region,
        s3_public_endpoint="files.hospital.example:9443",
    )
    store = open_object_store(settings)
    store.put_bytes("students/s1/model.onnx", b"onnx bytes")
    url = store.download_url("students/s1/model.onnx", expires=timedelta(minutes=5))
    assert url is not None
    assert url.startswith("http://files.hospital.example:9443/")
    assert store.get_bytes("students/s1/model.onnx") == b"onnx bytes"


def put_part(url: str, data: bytes) -> str:
    request = urllib.request.Request(url, data=data, method="PUT")
    with urllib.request.urlopen(request, timeout=30) as response:
        return str(response.headers["ETag"])


def test_client_multipart_upload_through_presigned_part_urls(
    store: ObjectStore, backend: str
) -> None:
    key = "team-a/datasets/big/archive.tar.gz"
    if backend == "local":
        for call in [
            lambda: store.create_multipart_upload(key),
            lambda: store.presigned_part_url(key, "id", 1, timedelta(minutes=5)),
            lambda: store.complete_multipart_upload(key, "id", [(1, "etag")]),
            lambda: store.abort_multipart_upload(key, "id"),
        ]:
            with pytest.raises(MultipartUnsupported, match="stream the file through the API"):
                call()
        return
    first, second = b"\x01" * (5 * MIB), b"the rest"

    upload_id = store.create_multipart_upload(key, content_type="application/gzip")
    etags = [
        (
            number,
            put_part(store.presigned_part_url(key, upload_id, number, timedelta(minutes=5)), data),
        )
        for number, data in [(1, first), (2, second)]
    ]
    with pytest.raises(MultipartUploadInvalid):
        store.complete_multipart_upload(
            key, upload_id, [(1, etags[0][1]), (2, '"' + "0" * 32 + '"')]
        )
    info = store.complete_multipart_upload(key, upload_id, list(reversed(etags)))

    assert (info.size, info.content_type) == (len(first) + len(second), "application/gzip")
    assert store.get_bytes(key) == first + second
    store.abort_multipart_upload(key, upload_id)  # finished uploads abort as a no-op
    assert store.exists(key)


@pytest.mark.parametrize("backend", ["s3"])  # the local store refuses multipart (see above)
def test_aborted_multipart_upload_leaves_no_object(store: ObjectStore) -> None:
    upload_id = store.create_multipart_upload("team-a/abandoned")
    put_part(store.presigned_part_url("team-a/abandoned", upload_id, 1, timedelta(minutes=5)), b"x")

    store.abort_multipart_upload("team-a/abandoned", upload_id)
    store.abort_multipart_upload("team-a/abandoned", upload_id)

    assert not store.exists("team-a/abandoned")
    with pytest.raises(MultipartUploadInvalid):
        store.complete_multipart_upload("team-a/abandoned", upload_id, [(1, "etag")])


def test_ping_passes_on_a_working_store(store: ObjectStore) -> None:
    store.ping()


def test_ping_reports_a_broken_store(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    settings = settings_for(backend, request, tmp_path)
    if backend == "local":
        (tmp_path / "store").write_text("a file where the store directory should be")
        reason = "not writable"
    else:
        settings = StoreSettingsForTest(**{**settings.__dict__, "s3_secret_key": "wrong-secret"})
        reason = "SignatureDoesNotMatch|AccessDenied"
    broken = open_object_store(settings)

    with pytest.raises(StoreUnavailable, match=reason):
        broken.ping()


def test_relative_file_url_lives_in_the_data_dir(tmp_path: Path) -> None:
    store = open_object_store(
        StoreSettingsForTest(storage_url="file://objects/v1", data_dir=tmp_path)
    )
    store.put_bytes("k", b"v")

    assert isinstance(store, LocalObjectStore)
    assert store.root == tmp_path / "objects" / "v1"
    assert (tmp_path / "objects" / "v1" / "objects" / "k").read_bytes() == b"v"


@pytest.mark.parametrize(
    ("url", "endpoint", "message"),
    [
        ("ftp://host/dir", None, "not supported"),
        ("file://", None, "needs a directory"),
        ("s3://bucket", None, "FOPRO_S3_ENDPOINT is not set"),
        ("s3://bucket", "http://minio:9000", "host:port"),
        ("s3://Bad_Bucket", "minio:9000", "Bad_Bucket"),
        ("s3://bucket/a/../b", "minio:9000", "'..'"),
    ],
)
def test_bad_storage_settings_fail_with_a_clear_message(
    tmp_path: Path, url: str, endpoint: str | None, message: str
) -> None:
    settings = StoreSettingsForTest(storage_url=url, data_dir=tmp_path, s3_endpoint=endpoint)

    with pytest.raises(StorageConfigError, match=message):
        open_object_store(settings)


def test_local_store_cannot_hold_a_key_and_keys_below_it(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    store.put_bytes("a", b"file")

    store.put_bytes("c/d", b"below")

    with pytest.raises(InvalidObjectKey, match="collides"):
        store.put_bytes("a/b", b"below")
    with pytest.raises(InvalidObjectKey, match="collides"):
        store.put("c", io.BytesIO(b"above"))
    assert store.get_bytes("a") == b"file"
    assert [info.key for info in store.list("")] == ["a", "c/d"]
    assert list((tmp_path / ".tmp").iterdir()) == []


def test_local_store_refuses_keys_that_escape_through_a_symlink(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"not yours")
    store = LocalObjectStore(tmp_path / "root")
    store.put_bytes("team/placeholder", b"x")
    os.symlink(outside, tmp_path / "root" / "objects" / "team" / "link")

    with pytest.raises(InvalidObjectKey, match="outside"):
        store.get_bytes("team/link/secret")


def test_local_store_never_reports_a_stale_digest(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    store.put_bytes("k", b"original")
    # Someone rewrites the file behind the store's back (restore from backup, manual edit).
    replacement = tmp_path / "replacement"
    replacement.write_bytes(b"tampered")
    os.replace(replacement, tmp_path / "objects" / "k")

    info = store.stat("k")

    assert (info.size, info.sha256) == (8, None)
