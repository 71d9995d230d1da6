"""The datasets HTTP API on the embedded service: uploads (multipart and raw), refusals that leave
nothing behind, listing, manifest download and deletion rules."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.core.config import get_settings
from app.core.db import session_scope, utcnow
from app.core.storage import ObjectStore
from app.datasets.models import Dataset, DatasetStatus
from app.datasets.service import expire_direct_uploads
from app.jobs.models import Job, JobStatus
from foprokd.synthetic import archive_bytes, sample_dataset
from tests.conftest import Service
from tests.support.service import configure_service
from tests.unit.datasets.conftest import Team, make_team
from workers.ingest import ingest_dataset

GOOD = archive_bytes(sample_dataset(head=6, imbalance=2, classes=3).members, "zip")


def upload(
    client: TestClient, team: Team, name: str = "skin", data: bytes = GOOD, **fields: str
) -> dict:
    response = client.post(
        "/v1/datasets",
        headers=team.auth(),
        data={"name": name, **fields},
        files={"file": ("skin.zip", data, "application/zip")},
    )
    return {**response.json(), "http": response.status_code}


def stored_keys(store: ObjectStore, team: Team) -> list[str]:
    return [info.key for info in store.list(f"teams/{team.id}/")]


def dataset_rows(team: Team) -> list[Dataset]:
    with session_scope() as session:
        return list(session.scalars(select(Dataset).where(Dataset.team_id == team.id)))


def test_multipart_upload_streams_the_archive_and_answers_202(
    client: TestClient, team: Team, store: ObjectStore
) -> None:
    response = client.post(
        "/v1/datasets",
        headers=team.auth(),
        data={"name": "skin-lt", "split_seed": "11", "val_fraction": "0.15"},
        files={"file": ("skin.zip", GOOD, "application/zip")},
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert response.headers["Location"] == f"/v1/datasets/{body['id']}"
    assert body["status"] == "validating"
    assert body["archive_format"] == "zip"
    assert body["archive_bytes"] == len(GOOD)
    assert body["content_sha256"] == hashlib.sha256(GOOD).hexdigest()
    key = f"teams/{team.id}/datasets/{body['id']}/archive"
    assert store.get_bytes(key) == GOOD
    with session_scope() as session:
        options = session.get_one(Dataset, body["id"]).options
    assert options["filename"] == "skin.zip"
    assert options["ingest"]["split_seed"] == 11
    assert options["ingest"]["val_fraction"] == 0.15


def test_raw_body_upload_takes_fields_from_the_query(
    client: TestClient, team: Team, store: ObjectStore
) -> None:
    data = archive_bytes(sample_dataset(classes=2, head=4).members, "tar.gz")
    response = client.post(
        "/v1/datasets?name=endo&layout=folders",
        headers={
            **team.auth(),
            "Content-Type": "application/gzip",
            "Content-Disposition": 'attachment; filename="endo.tar.gz"',
        },
        content=data,
    )
    assert response.status_code == 202, response.text
    assert response.json()["archive_format"] == "tar.gz"
    with session_scope() as session:
        assert session.get_one(Dataset, response.json()["id"]).options["filename"] == "endo.tar.gz"


def test_reupload_of_identical_content_is_reported(client: TestClient, team: Team) -> None:
    first = upload(client, team, "first")
    second = upload(client, team, "second")
    assert second["http"] == 202
    assert second["warnings"][0]["code"] == "duplicate_upload"
    assert first["id"] in second["warnings"][0]["message"]


def test_bad_fields_are_refused_before_anything_is_stored(
    client: TestClient, team: Team, store: ObjectStore
) -> None:
    body = upload(client, team, "x", layout="pyramid", colour="red")
    assert body["http"] == 422
    assert {d["field"] for d in body["error"]["details"]} == {"layout", "colour"}
    no_train = upload(client, team, "x", val_fraction="0.8")
    assert no_train["http"] == 422
    assert "training" in no_train["error"]["message"]
    assert stored_keys(store, team) == []
    assert dataset_rows(team) == []


def test_taken_name_is_refused_with_409_and_nothing_stored(
    client: TestClient, team: Team, store: ObjectStore
) -> None:
    first = upload(client, team, "skin")
    before = stored_keys(store, team)
    again = upload(client, team, "skin")
    assert again["http"] == 409
    assert again["error"]["code"] == "dataset_name_taken"
    assert again["error"]["details"]["dataset_id"] == first["id"]
    assert stored_keys(store, team) == before


def test_declared_oversize_upload_is_refused_before_reading(
    embedded_service: Service, monkeypatch: pytest.MonkeyPatch, store: ObjectStore
) -> None:
    configure_service(monkeypatch, embedded_service.data_dir, max_upload_bytes=str(len(GOOD) - 1))
    from app.main import app

    team = make_team()
    with TestClient(app) as client:
        body = upload(client, team)
    assert body["http"] == 413
    assert body["error"]["code"] == "upload_too_large"
    assert stored_keys(store, team) == []
    assert dataset_rows(team) == []


def test_streamed_oversize_upload_is_cut_off_and_leaves_nothing(
    embedded_service: Service, monkeypatch: pytest.MonkeyPatch, store: ObjectStore
) -> None:
    configure_service(monkeypatch, embedded_service.data_dir, max_upload_bytes="300000")
    from app.main import app

    team = make_team()

    def chunked() -> Iterator[bytes]:  # no Content-Length: the limit must hold while streaming
        yield GOOD
        for _ in range(10):
            yield b"\0" * 64_000

    with TestClient(app) as client:
        response = client.post(
            "/v1/datasets?name=big",
            headers={**team.auth(), "Content-Type": "application/zip"},
            content=chunked(),
        )
    assert response.status_code == 413, response.text
    assert stored_keys(store, team) == []
    assert list((embedded_service.data_dir / "objects" / ".tmp").glob("put-*")) == []
    assert dataset_rows(team) == []


def test_content_that_is_not_an_archive_is_refused_with_415(
    client: TestClient, team: Team, store: ObjectStore
) -> None:
    body = upload(client, team, data=b"%PDF-1.7\n" + b"x" * 2000)
    assert body["http"] == 415
    assert body["error"]["code"] == "unsupported_archive"
    assert stored_keys(store, team) == []


def test_fields_after_the_file_are_refused_and_nothing_is_stored(
    client: TestClient, team: Team, store: ObjectStore
) -> None:
    boundary = "xyz"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\nlate\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.zip"\r\n'
            "Content-Type: application/zip\r\n\r\n"
        ).encode()
        + GOOD
        + (
            f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="split_seed"\r\n\r\n3\r\n'
            f"--{boundary}--\r\n"
        ).encode()
    )
    response = client.post(
        "/v1/datasets",
        headers={**team.auth(), "Content-Type": f"multipart/form-data; boundary={boundary}"},
        content=body,
    )
    assert response.status_code == 422
    assert "split_seed" in response.json()["error"]["message"]
    assert stored_keys(store, team) == []
    assert dataset_rows(team) == []


def test_form_without_a_file_is_refused(client: TestClient, team: Team) -> None:
    response = client.post("/v1/datasets", headers=team.auth(), files={"name": (None, "x")})
    assert response.status_code == 422
    assert "no file part" in response.json()["error"]["message"]


def test_viewer_keys_cannot_upload_or_delete(client: TestClient, team: Team) -> None:
    assert upload(client, team.__class__(team.id, team.viewer, team.viewer))["http"] == 403
    created = upload(client, team)
    assert (
        client.delete(f"/v1/datasets/{created['id']}", headers=team.auth("viewer")).status_code
        == 403
    )


def test_direct_uploads_need_an_s3_store(client: TestClient, team: Team) -> None:
    response = client.post(
        "/v1/datasets/uploads", headers=team.auth(), json={"name": "big", "size": 10**9}
    )
    assert response.status_code == 501
    assert response.json()["error"]["code"] == "direct_upload_unavailable"
    assert dataset_rows(team) == []


def test_direct_upload_over_the_limit_is_refused(client: TestClient, team: Team) -> None:
    size = get_settings().max_upload_bytes + 1
    response = client.post(
        "/v1/datasets/uploads", headers=team.auth(), json={"name": "x", "size": size}
    )
    assert response.status_code == 413


def test_ready_dataset_lists_filters_and_serves_its_manifest(
    client: TestClient, team: Team
) -> None:
    created = upload(client, team)
    pending = client.get(f"/v1/datasets/{created['id']}/manifest", headers=team.auth())
    assert pending.status_code == 409
    assert ingest_dataset(created["id"]) == "ready"
    listed = client.get("/v1/datasets?status=ready", headers=team.auth()).json()
    assert [d["id"] for d in listed["items"]] == [created["id"]]
    assert client.get("/v1/datasets?status=invalid", headers=team.auth()).json()["total"] == 0
    detail = client.get(f"/v1/datasets/{created['id']}", headers=team.auth()).json()
    assert detail["classes"] == ["class_00", "class_01", "class_02"]
    manifest = client.get(f"/v1/datasets/{created['id']}/manifest", headers=team.auth())
    assert manifest.status_code == 200
    lines = manifest.text.splitlines()
    assert lines[0] == "path,object_key,label,split,sha256,width,height,group"
    assert len(lines) == 1 + detail["num_images"]


def test_listing_pages_newest_first_without_gaps_or_repeats(client: TestClient, team: Team) -> None:
    ids = [upload(client, team, name=f"set-{n}")["id"] for n in range(5)]
    pages = [
        client.get(f"/v1/datasets?limit=2&offset={offset}", headers=team.auth()).json()
        for offset in (0, 2, 4)
    ]
    assert [p["total"] for p in pages] == [5, 5, 5]
    assert [(p["limit"], p["offset"]) for p in pages] == [(2, 0), (2, 2), (2, 4)]
    listed = [d["id"] for p in pages for d in p["items"]]
    assert [len(p["items"]) for p in pages] == [2, 2, 1]
    assert sorted(listed) == sorted(ids)
    created = [d["created_at"] for p in pages for d in p["items"]]
    assert created == sorted(created, reverse=True)
    past_the_end = client.get("/v1/datasets?limit=2&offset=5", headers=team.auth()).json()
    assert (past_the_end["items"], past_the_end["total"]) == ([], 5)


def test_other_teams_get_404(client: TestClient, team: Team) -> None:
    created = upload(client, team)
    other = make_team()
    for method, path in [
        ("GET", f"/v1/datasets/{created['id']}"),
        ("GET", f"/v1/datasets/{created['id']}/manifest"),
        ("DELETE", f"/v1/datasets/{created['id']}"),
    ]:
        assert client.request(method, path, headers=other.auth()).status_code == 404


def test_delete_removes_every_object_and_the_row(
    client: TestClient, team: Team, store: ObjectStore
) -> None:
    created = upload(client, team)
    ingest_dataset(created["id"])
    assert stored_keys(store, team)
    assert client.delete(f"/v1/datasets/{created['id']}", headers=team.auth()).status_code == 204
    assert stored_keys(store, team) == []
    assert dataset_rows(team) == []
    assert upload(client, team)["http"] == 202  # the name is free again


def add_job(team: Team, dataset_id: str, status: JobStatus) -> str:
    with session_scope() as session:
        job = Job(
            team_id=team.id,
            dataset_id=dataset_id,
            teacher="resnet18",
            student="resnet18",
            method="fopro_akd",
            status=status.value,
        )
        session.add(job)
        session.flush()
        return job.id


@pytest.mark.parametrize("status", [JobStatus.queued, JobStatus.running])
def test_delete_is_refused_while_a_job_uses_the_dataset(
    client: TestClient, team: Team, store: ObjectStore, status: JobStatus
) -> None:
    created = upload(client, team)
    ingest_dataset(created["id"])
    job_id = add_job(team, created["id"], status)
    before = stored_keys(store, team)
    response = client.delete(f"/v1/datasets/{created['id']}", headers=team.auth())
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "dataset_in_use"
    assert response.json()["error"]["details"]["jobs"] == [job_id]
    assert stored_keys(store, team) == before
    assert dataset_rows(team)[0].status == DatasetStatus.ready.value


def test_dataset_of_finished_jobs_keeps_a_deleted_record(
    client: TestClient, team: Team, store: ObjectStore
) -> None:
    created = upload(client, team)
    ingest_dataset(created["id"])
    add_job(team, created["id"], JobStatus.succeeded)
    assert client.delete(f"/v1/datasets/{created['id']}", headers=team.auth()).status_code == 204
    assert stored_keys(store, team) == []
    record = client.get(f"/v1/datasets/{created['id']}", headers=team.auth()).json()
    assert record["status"] == "deleted"
    assert client.get("/v1/datasets", headers=team.auth()).json()["total"] == 0
    assert client.get("/v1/datasets?status=deleted", headers=team.auth()).json()["total"] == 1
    assert upload(client, team)["http"] == 202  # the name is free again


def test_a_delete_stuck_by_a_store_outage_is_finished_by_the_sweep(
    client: TestClient, team: Team, store: ObjectStore
) -> None:
    other = archive_bytes(sample_dataset(head=6, imbalance=2, classes=3, seed=1).members, "zip")
    stuck = upload(client, team, name="stuck")
    recent = upload(client, team, name="recent", data=other)
    for created in (stuck, recent):
        ingest_dataset(created["id"])
    now = utcnow()
    with session_scope() as session:
        # As a DELETE leaves them when the store fails after the row was marked: one an hour
        # and a half ago, one that may still be in progress.
        for created, age in ((stuck, timedelta(minutes=90)), (recent, timedelta(minutes=5))):
            row = session.get(Dataset, created["id"])
            assert row is not None
            row.status, row.updated_at = DatasetStatus.deleting.value, now - age
    recent_keys = [key for key in stored_keys(store, team) if recent["id"] in key]

    with session_scope() as session:
        assert expire_direct_uploads(session, store, now=now) == [stuck["id"]]

    assert stored_keys(store, team) == recent_keys
    assert [row.id for row in dataset_rows(team)] == [recent["id"]]
