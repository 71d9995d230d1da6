"""Per-team quotas on the embedded service: active jobs, stored bytes and datasets, refused before
anything is queued or stored, with the quota and its use named; `GET /v1/me` shows the use."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from app.audit.models import AuditRecord
from app.audit.service import AuditAction
from app.core.storage import ObjectStore
from app.core.tenancy import team_object_key
from app.datasets.models import Dataset
from app.jobs.models import Job, JobEvent, JobStatus
from app.students.models import Artifact
from app.teachers.models import Teacher
from fopro.cli import cli
from tests.unit.jobs.ready_dataset import put_ready_dataset
from tests.unit.teams.conftest import TeamKeys, auth

JOB_PARAMS = {"epochs": 1, "image_size": 32, "allow_random_weights": True}
ZIP_HEAD = b"PK\x03\x04"
runner = CliRunner()


@pytest.fixture
def dataset(session: Session, store: ObjectStore, team: TeamKeys) -> Dataset:
    return put_ready_dataset(session, store, team.id, num_classes=2, per_class=5, size=16)


def set_quota(team: TeamKeys, *args: str) -> str:
    result = runner.invoke(cli, ["admin", "set-quota", team.name, *args])
    assert result.exit_code == 0, result.output
    return result.output


def submit(client: TestClient, team: TeamKeys, dataset: Dataset) -> Any:
    payload = {
        "dataset_id": dataset.id,
        "teacher": "resnet18",
        "student": "resnet18",
        "params": JOB_PARAMS,
    }
    return client.post("/v1/jobs", headers=auth(team.admin), json=payload)


def stored_objects(store: ObjectStore, team: TeamKeys) -> set[str]:
    return {info.key for info in store.list(team_object_key(team.id, ""))}


def test_the_active_jobs_quota_answers_429_with_retry_after_and_frees_when_a_job_ends(
    client: TestClient, session: Session, team: TeamKeys, dataset: Dataset
) -> None:
    assert "max_active_jobs\t0 of 2\t(team)" in set_quota(team, "--max-active-jobs", "2")
    first = submit(client, team, dataset)
    assert first.status_code == 201, first.text
    assert submit(client, team, dataset).status_code == 201

    refused = submit(client, team, dataset)
    assert refused.status_code == 429, refused.text
    assert refused.headers["Retry-After"] == "60"
    error = refused.json()["error"]
    assert error["code"] == "quota_exceeded"
    assert f"Team {team.name} has 2 of 2 active jobs" in error["message"]
    assert error["details"] == {"quota": "max_active_jobs", "used": 2, "limit": 2}
    assert session.scalar(select(func.count(Job.id)).where(Job.team_id == team.id)) == 2
    # The refused job's rows went in before the quota count: the refusal rolled all of them back.
    assert (
        session.scalar(select(func.count(JobEvent.id)).join(Job).where(Job.team_id == team.id)) == 2
    )
    creates = select(func.count(AuditRecord.id)).where(
        AuditRecord.team_id == team.id, AuditRecord.action == AuditAction.job_create.value
    )
    assert session.scalar(creates) == 2

    job_id = first.json()["id"]
    cancel = client.post(f"/v1/jobs/{job_id}/cancel", headers=auth(team.admin))
    assert cancel.json()["status"] == JobStatus.cancelled.value
    # A retry queues a job too, so it counts against the same quota.
    assert submit(client, team, dataset).status_code == 201
    retry = client.post(f"/v1/jobs/{job_id}/retry", headers=auth(team.admin))
    assert retry.status_code == 429
    assert "2 of 2 active jobs" in retry.json()["error"]["message"]


def test_a_full_store_refuses_new_jobs_without_retry_after(
    client: TestClient, team: TeamKeys, dataset: Dataset
) -> None:
    set_quota(team, "--max-stored-bytes", str(dataset.image_bytes))
    refused = submit(client, team, dataset)
    assert refused.status_code == 429
    assert "Retry-After" not in refused.headers
    assert refused.json()["error"]["details"]["quota"] == "max_stored_bytes"


def test_stored_bytes_count_datasets_artifacts_and_teachers_and_me_shows_them(
    client: TestClient, session: Session, team: TeamKeys, dataset: Dataset
) -> None:
    job = Job(
        team_id=team.id,
        dataset_id=dataset.id,
        teacher="resnet18",
        student="resnet18",
        method="ekd",
        status=JobStatus.succeeded.value,
    )
    session.add(job)
    session.flush()
    session.add(
        Artifact(
            team_id=team.id,
            job_id=job.id,
            name="student.onnx",
            media_type="application/octet-stream",
            bytes=1000,
            sha256="0" * 64,
            object_key="k",
        )
    )
    session.add(
        Teacher(
            team_id=team.id,
            name="mine",
            arch="resnet18",
            feature_dim=512,
            input_size=224,
            weights_key="w",
            weights_sha256="0" * 64,
            weights_bytes=250,
        )
    )
    session.commit()
    set_quota(team, "--max-datasets", "7")
    quotas = client.get("/v1/me", headers=auth(team.viewer)).json()["quotas"]
    assert quotas["stored_bytes"]["used"] == dataset.image_bytes + 1000 + 250
    assert quotas["datasets"] == {"used": 1, "limit": 7}
    assert quotas["active_jobs"]["used"] == 0
    output = set_quota(team, "--reset")
    assert "max_datasets\t1 of 100\t(default)" in output


def test_the_datasets_quota_refuses_an_upload_before_reading_it(
    client: TestClient, store: ObjectStore, team: TeamKeys, dataset: Dataset
) -> None:
    set_quota(team, "--max-datasets", "1")
    before = stored_objects(store, team)
    refused = client.post(
        "/v1/datasets",
        headers=auth(team.member),
        data={"name": "second"},
        files={"file": ("d.zip", ZIP_HEAD + b"\0" * 1000, "application/zip")},
    )
    assert refused.status_code == 429, refused.text
    error = refused.json()["error"]
    assert error["code"] == "quota_exceeded"
    assert f"Team {team.name} has 1 of 1 datasets" in error["message"]
    assert stored_objects(store, team) == before


def test_an_upload_declaring_more_than_the_storage_left_is_refused_413(
    client: TestClient, session: Session, store: ObjectStore, team: TeamKeys, dataset: Dataset
) -> None:
    set_quota(team, "--max-stored-bytes", str(dataset.image_bytes + 5000))
    before = stored_objects(store, team)
    refused = client.post(
        "/v1/datasets",
        headers=auth(team.member),
        data={"name": "big"},
        files={"file": ("d.zip", ZIP_HEAD + b"\0" * 20_000, "application/zip")},
    )
    assert refused.status_code == 413, refused.text
    error = refused.json()["error"]
    assert error["code"] == "storage_quota_exceeded"
    assert (
        f"stores {dataset.image_bytes} of {dataset.image_bytes + 5000} bytes" in (error["message"])
    )
    assert stored_objects(store, team) == before
    assert session.scalar(select(func.count(Dataset.id)).where(Dataset.team_id == team.id)) == 1


def test_a_streamed_upload_without_length_stops_at_the_storage_left_leaving_nothing(
    client: TestClient, session: Session, store: ObjectStore, team: TeamKeys, dataset: Dataset
) -> None:
    set_quota(team, "--max-stored-bytes", str(dataset.image_bytes + 50_000))
    before = stored_objects(store, team)
    sent: list[int] = []

    def body() -> Iterator[bytes]:
        yield ZIP_HEAD + b"\0" * 4092
        for _ in range(100):  # 400 KiB in all, eight times what is left
            sent.append(1)
            yield b"\0" * 4096

    refused = client.post(
        "/v1/datasets?name=streamed&filename=d.zip",
        headers={**auth(team.member), "Content-Type": "application/octet-stream"},
        content=body(),
    )
    assert refused.status_code == 413, refused.text
    assert refused.json()["error"]["code"] == "storage_quota_exceeded"
    assert stored_objects(store, team) == before
    assert session.scalar(select(func.count(Dataset.id)).where(Dataset.team_id == team.id)) == 1


def test_an_upload_within_the_quota_is_accepted(
    client: TestClient, team: TeamKeys, dataset: Dataset
) -> None:
    set_quota(team, "--max-stored-bytes", str(dataset.image_bytes + 50_000), "--max-datasets", "2")
    accepted = client.post(
        "/v1/datasets",
        headers=auth(team.member),
        data={"name": "small"},
        files={"file": ("d.zip", ZIP_HEAD + b"\0" * 2000, "application/zip")},
    )
    assert accepted.status_code == 202, accepted.text
    me = client.get("/v1/me", headers=auth(team.member)).json()["quotas"]
    assert me["datasets"] == {"used": 2, "limit": 2}
    assert me["stored_bytes"]["used"] == dataset.image_bytes + accepted.json()["archive_bytes"]


def test_a_teacher_upload_past_the_storage_quota_is_refused_before_it_is_stored(
    client: TestClient, store: ObjectStore, team: TeamKeys, dataset: Dataset
) -> None:
    set_quota(team, "--max-stored-bytes", str(dataset.image_bytes + 100))
    before = stored_objects(store, team)
    refused = client.post(
        "/v1/teachers",
        headers=auth(team.member),
        data={"name": "big", "arch": "resnet18"},
        files={"file": ("w.safetensors", b"\0" * 5000, "application/octet-stream")},
    )
    assert refused.status_code == 413, refused.text
    assert refused.json()["error"]["code"] == "storage_quota_exceeded"
    assert stored_objects(store, team) == before


def test_set_quota_names_an_unknown_team(embedded_service: object) -> None:
    result = runner.invoke(cli, ["admin", "set-quota", "nobody", "--max-datasets", "3"])
    assert result.exit_code == 1
    assert "No team named" in result.output
