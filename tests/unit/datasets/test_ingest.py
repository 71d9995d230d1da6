"""The validation task's bookkeeping, run in-process on the embedded service: what a ready or
invalid dataset records and keeps in the store, progress, deletion mid-run, crashes."""

from __future__ import annotations

import csv
import hashlib
import io

import pytest
from fastapi.testclient import TestClient

from app.core.db import session_scope
from app.core.storage import ObjectStore, StoreUnavailable
from app.datasets.ingest.images import CheckedImage
from app.datasets.models import Dataset
from foprokd.synthetic import Member, archive_bytes, sample_dataset
from tests.conftest import Service
from tests.support.service import configure_service
from tests.unit.datasets.conftest import Team, make_team
from workers import ingest
from workers.ingest import _ConcurrentSink, ingest_dataset, validate_dataset


def post(
    client: TestClient, team: Team, data: bytes, name: str = "skin", filename: str = "skin.tar.gz"
) -> str:
    response = client.post(
        "/v1/datasets",
        headers=team.auth(),
        data={"name": name, "split_seed": "5"},
        files={"file": (filename, data, "application/octet-stream")},
    )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def row(dataset_id: str) -> Dataset:
    with session_scope() as session:
        return session.get_one(Dataset, dataset_id)


def keys(store: ObjectStore, team: Team, dataset_id: str, *under: str) -> list[str]:
    prefix = "/".join(("teams", team.id, "datasets", dataset_id, *under)) + "/"
    return [info.key for info in store.list(prefix)]


def test_ready_dataset_records_the_contract_and_keeps_images_and_manifest(
    client: TestClient, team: Team, store: ObjectStore
) -> None:
    sample = sample_dataset(head=20, imbalance=5)
    dataset_id = post(client, team, archive_bytes(sample.members, "tar.gz"))
    assert ingest_dataset(dataset_id) == "ready"
    dataset = row(dataset_id)
    assert dataset.classes == sample.classes
    assert dataset.num_images == sample.num_images
    assert dataset.split_seed == 5
    assert dataset.stats["class_totals"] == sample.class_counts
    assert set(dataset.stats) >= {
        "class_counts",
        "imbalance_ratio",
        "groups",
        "image_size_histogram",
    }
    assert dataset.stats["progress"]["fraction"] == 1.0
    assert dataset.archive_key is None  # the archive is gone; images + manifest are the dataset
    assert dataset.manifest_key == f"teams/{team.id}/datasets/{dataset_id}/manifest.csv"
    rows = list(csv.DictReader(io.StringIO(store.get_bytes(dataset.manifest_key).decode())))
    assert len(rows) == sample.num_images
    for entry in rows:
        assert hashlib.sha256(store.get_bytes(entry["object_key"])).hexdigest() == entry["sha256"]
        assert entry["object_key"].startswith(f"teams/{team.id}/datasets/{dataset_id}/images/")
    assert len(keys(store, team, dataset_id)) == len({r["object_key"] for r in rows}) + 1
    assert dataset.image_bytes == sum(len(store.get_bytes(r["object_key"])) for r in rows)


def test_invalid_dataset_keeps_no_objects_and_names_the_entries(
    client: TestClient, team: Team, store: ObjectStore
) -> None:
    sample = sample_dataset(corrupt=2)
    dataset_id = post(client, team, archive_bytes(sample.members, "tar.gz"))
    assert ingest_dataset(dataset_id) == "invalid"
    dataset = row(dataset_id)
    assert {p["entry"] for p in dataset.problems} == set(sample.corrupt)
    assert dataset.stats["problem_counts"] == {"truncated_image": 1, "not_decodable": 1}
    assert dataset.classes == []
    assert dataset.manifest_key is None
    assert keys(store, team, dataset_id) == []


def test_archive_that_is_no_archive_at_all_ends_invalid(
    client: TestClient, team: Team, store: ObjectStore
) -> None:
    data = archive_bytes([Member("a.png", b"x")], "tar.gz")
    dataset_id = post(client, team, data[:40])  # a gzip header and nothing usable
    assert ingest_dataset(dataset_id) == "invalid"
    problem = row(dataset_id).problems[0]
    assert problem["code"] == "corrupt_archive"
    assert problem["entry"] == "skin.tar.gz"
    assert keys(store, team, dataset_id) == []


def test_a_second_delivery_of_the_task_does_nothing(client: TestClient, team: Team) -> None:
    dataset_id = post(client, team, archive_bytes(sample_dataset().members, "zip"))
    assert ingest_dataset(dataset_id) == "ready"
    assert ingest_dataset(dataset_id) == "skipped"


def test_deleting_the_dataset_mid_validation_stops_it_and_cleans_up(
    client: TestClient, team: Team, store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    sample = sample_dataset(head=30)
    dataset_id = post(client, team, archive_bytes(sample.members, "tar.gz"))
    monkeypatch.setattr(ingest, "PROGRESS_INTERVAL_S", 0.0)
    put_bytes = store.__class__.put_bytes
    stored: list[str] = []
    deleted: list[int] = []

    def put_then_delete(self: ObjectStore, key: str, data: bytes, **kwargs: object) -> object:
        info = put_bytes(self, key, data, **kwargs)  # type: ignore[arg-type]
        stored.append(key)
        if len(stored) == 3:  # runs in an upload thread: the user deletes meanwhile
            deleted.append(
                client.delete(f"/v1/datasets/{dataset_id}", headers=team.auth()).status_code
            )
        return info

    monkeypatch.setattr(store.__class__, "put_bytes", put_then_delete)
    assert ingest_dataset(dataset_id) == "deleted"
    assert deleted == [204]
    assert len(stored) < sample.num_images / 2  # stopped at the next progress check
    assert keys(store, team, dataset_id) == []


def test_progress_is_written_while_validating(
    client: TestClient, team: Team, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset_id = post(client, team, archive_bytes(sample_dataset(head=10).members, "zip"))
    monkeypatch.setattr(ingest, "PROGRESS_INTERVAL_S", 0.0)
    seen: list[dict[str, object]] = []
    write = ingest._ProgressWriter.__call__

    def spy(self: ingest._ProgressWriter, progress: ingest.IngestProgress) -> None:
        write(self, progress)
        seen.append(row(dataset_id).stats["progress"])

    monkeypatch.setattr(ingest._ProgressWriter, "__call__", spy)
    ingest_dataset(dataset_id)
    assert [p["entries_done"] for p in seen] == list(range(1, len(seen) + 1))
    assert seen[0]["entries_total"] == len(seen)


def test_a_crash_marks_the_dataset_invalid_without_images(
    client: TestClient, team: Team, store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset_id = post(client, team, archive_bytes(sample_dataset().members, "zip"))

    def crash(dataset_id: str) -> str:
        store.put_bytes(f"teams/{team.id}/datasets/{dataset_id}/images/aa/x.png", b"x")
        raise RuntimeError("bug")

    monkeypatch.setattr(ingest, "ingest_dataset", crash)
    outcome = validate_dataset.apply(args=[dataset_id])
    assert outcome.failed()
    dataset = row(dataset_id)
    assert dataset.status == "invalid"
    assert dataset.problems[0]["code"] == "internal_error"
    assert keys(store, team, dataset_id, "images") == []


def test_direct_upload_digest_is_recorded_by_the_task(
    client: TestClient, team: Team, store: ObjectStore
) -> None:
    data = archive_bytes(sample_dataset().members, "zip")
    first = post(client, team, data, "first")
    second = post(client, team, data, "second")
    with session_scope() as session:  # a direct S3 upload: the API never saw the bytes
        dataset = session.get_one(Dataset, second)
        dataset.content_sha256 = None
        dataset.warnings = []
    assert ingest_dataset(second) == "ready"
    dataset = row(second)
    assert dataset.content_sha256 == hashlib.sha256(data).hexdigest()
    assert dataset.warnings[0]["code"] == "duplicate_upload"
    assert first in dataset.warnings[0]["message"]


def test_zip_over_the_entry_limit_is_refused_as_a_whole(
    embedded_service: Service, monkeypatch: pytest.MonkeyPatch, store: ObjectStore
) -> None:
    configure_service(monkeypatch, embedded_service.data_dir, max_images="5")
    from app.main import app

    team = make_team()
    with TestClient(app) as client:
        data = archive_bytes(sample_dataset().members, "zip")
        dataset_id = post(client, team, data, filename="skin.zip")
    assert ingest_dataset(dataset_id) == "invalid"
    problem = row(dataset_id).problems[0]
    assert (problem["entry"], problem["code"]) == ("skin.zip", "too_many_files")
    assert keys(store, team, dataset_id) == []


class FailingStore:
    def __init__(self) -> None:
        self.calls = 0

    def put_bytes(self, key: str, data: bytes, **_: object) -> None:
        self.calls += 1
        raise StoreUnavailable("bucket gone")


def test_an_image_upload_failure_surfaces_after_all_uploads_finished() -> None:
    store = FailingStore()
    image = CheckedImage(b"x", "png", "image/png", 1, 1, None, False)
    sink = _ConcurrentSink(store, "p")  # type: ignore[arg-type]
    stored = sink(image, "ab" * 32)  # accepted at once; the upload runs in a thread
    assert stored.object_key == f"p/ab/{'ab' * 32}.png"
    with pytest.raises(StoreUnavailable, match="bucket gone"):
        sink.__exit__(None)
    assert store.calls == 1
