"""The local object store out of room: a clear ``StorageFull``, nothing of the object kept."""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path

import pytest

from app.core.storage import LocalObjectStore, StorageFull
from workers.failures import describe_failure


def leftovers(store: LocalObjectStore) -> list[Path]:
    return [p for p in store.root.rglob("*") if p.is_file()]


def test_a_put_below_the_free_space_floor_raises_storage_full_and_keeps_nothing(
    tmp_path: Path,
) -> None:
    stats = os.statvfs(tmp_path)
    free = stats.f_bavail * stats.f_frsize
    store = LocalObjectStore(tmp_path / "store", min_free_bytes=free * 2)

    with pytest.raises(StorageFull, match="FOPRO_LOCAL_STORE_MIN_FREE_BYTES"):
        store.put("jobs/j/checkpoint.pt", io.BytesIO(b"x" * 1000), size=1000)

    assert not store.exists("jobs/j/checkpoint.pt")
    assert leftovers(store) == []
    roomy = LocalObjectStore(tmp_path / "store", min_free_bytes=1)
    assert roomy.put_bytes("jobs/j/ok", b"fits").size == 4


def test_a_full_disk_while_writing_is_storage_full_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalObjectStore(tmp_path / "store")

    def disk_full(fd: int) -> None:  # what flushing the written bytes reports on a full disk
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(StorageFull, match="no space left"):
        store.put("big", io.BytesIO(b"y" * (1 << 20)), size=1 << 20)
    monkeypatch.undo()
    assert not store.exists("big")
    assert leftovers(store) == []


def test_a_job_that_hits_a_full_store_fails_as_storage_full_not_retried() -> None:
    failure = describe_failure(StorageFull("no room for 'k'"))
    assert (failure.code, failure.retryable) == ("storage_full", False)
    assert "The object store is full" in failure.reason
