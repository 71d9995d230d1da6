"""DELETE /v1/jobs/{id}: a finished job goes with its files; active or depended-on jobs stay."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core.storage import ObjectStore, StoreUnavailable
from app.core.tenancy import team_object_key
from app.jobs.models import Job, JobEvent
from app.jobs.state import EventKind, add_event
from app.students.models import Artifact
from app.teams.models import Role
from tests.unit.jobs.conftest import Team, add_job
from tests.unit.jobs.ready_dataset import auth, make_team_key


def finished_job_with_files(
    session: Session, store: ObjectStore, team: Team, status: str = "succeeded"
) -> Job:
    """A finished job with two artifacts, its checkpoint and an event, as a worker leaves it."""
    job = add_job(session, team, status=status)
    prefix = team_object_key(team.id, "jobs", job.id)
    for name in ("student.onnx", "model_card.md"):
        key = f"{prefix}/artifacts/{name}"
        info = store.put_bytes(key, name.encode() * 10)
        session.add(
            Artifact(
                team_id=team.id,
                job_id=job.id,
                name=name,
                media_type="application/octet-stream",
                bytes=info.size,
                sha256=info.sha256 or "",
                object_key=key,
            )
        )
    job.checkpoint_key = f"{prefix}/checkpoints/epoch_0003.pt"
    job.checkpoint_epoch = 3
    store.put_bytes(job.checkpoint_key, b"state")
    add_event(session, job.id, EventKind.state, "Succeeded.", {"to": status})
    session.commit()
    return job


def objects_of(store: ObjectStore, team: Team, job_id: str) -> list[str]:
    return [o.key for o in store.list(team_object_key(team.id, "jobs", job_id, ""))]


def count(session: Session, model: type[Artifact] | type[JobEvent], job_id: str) -> int:
    return int(session.scalar(select(func.count()).where(model.job_id == job_id)) or 0)


@pytest.mark.parametrize("status", ["succeeded", "failed", "cancelled"])
def test_a_finished_job_goes_with_its_artifacts_checkpoints_and_events(
    client: TestClient, team: Team, session: Session, store: ObjectStore, status: str
) -> None:
    doomed = finished_job_with_files(session, store, team, status)
    kept = finished_job_with_files(session, store, team)
    assert len(objects_of(store, team, doomed.id)) == 3

    response = client.delete(f"/v1/jobs/{doomed.id}", headers=auth(team.member))

    assert response.status_code == 204, response.text
    assert client.get(f"/v1/jobs/{doomed.id}", headers=auth(team.member)).status_code == 404
    assert objects_of(store, team, doomed.id) == []
    assert (count(session, Artifact, doomed.id), count(session, JobEvent, doomed.id)) == (0, 0)
    # The team's other job is untouched.
    assert len(objects_of(store, team, kept.id)) == 3
    assert count(session, Artifact, kept.id) == 2
    listed = client.get(f"/v1/jobs/{kept.id}/artifacts", headers=auth(team.member))
    assert len(listed.json()) == 2
    assert client.delete(f"/v1/jobs/{doomed.id}", headers=auth(team.member)).status_code == 404


@pytest.mark.parametrize("status", ["queued", "running"])
def test_an_active_job_is_refused_until_it_has_ended(
    client: TestClient, team: Team, session: Session, status: str
) -> None:
    job = add_job(session, team, status=status)
    response = client.delete(f"/v1/jobs/{job.id}", headers=auth(team.admin))
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "illegal_transition"
    assert "cancel it" in response.json()["error"]["message"]
    assert client.get(f"/v1/jobs/{job.id}", headers=auth(team.admin)).status_code == 200


def test_viewers_and_other_teams_cannot_delete(
    client: TestClient, team: Team, session: Session, store: ObjectStore
) -> None:
    job = finished_job_with_files(session, store, team)
    _, other_team_key = make_team_key(session, Role.admin)
    assert client.delete(f"/v1/jobs/{job.id}", headers=auth(team.viewer)).status_code == 403
    assert client.delete(f"/v1/jobs/{job.id}", headers=auth(other_team_key)).status_code == 404
    assert len(objects_of(store, team, job.id)) == 3


def test_a_checkpoint_a_retry_resumes_from_keeps_its_job_until_the_retry_is_gone(
    client: TestClient, team: Team, session: Session, store: ObjectStore
) -> None:
    parent = finished_job_with_files(session, store, team, "cancelled")
    retry = add_job(
        session,
        team,
        status="cancelled",  # cancelled before it saved a checkpoint of its own
        retry_of=parent.id,
        checkpoint_key=parent.checkpoint_key,
        checkpoint_epoch=3,
    )

    refused = client.delete(f"/v1/jobs/{parent.id}", headers=auth(team.member))

    assert refused.status_code == 409
    error = refused.json()["error"]
    assert (error["code"], error["details"]["jobs"]) == ("job_in_use", [retry.id])
    assert len(objects_of(store, team, parent.id)) == 3
    assert client.delete(f"/v1/jobs/{retry.id}", headers=auth(team.member)).status_code == 204
    assert client.delete(f"/v1/jobs/{parent.id}", headers=auth(team.member)).status_code == 204
    assert objects_of(store, team, parent.id) == []


def test_a_store_outage_leaves_the_job_without_files_and_a_repeat_finishes(
    client: TestClient,
    team: Team,
    session: Session,
    store: ObjectStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job = finished_job_with_files(session, store, team)
    real_delete_prefix = type(store).delete_prefix

    def outage(self: ObjectStore, prefix: str) -> int:
        raise StoreUnavailable("disk offline")

    monkeypatch.setattr(type(store), "delete_prefix", outage)
    failed = client.delete(f"/v1/jobs/{job.id}", headers=auth(team.member))

    assert failed.status_code == 503
    assert "Retry the DELETE" in failed.json()["error"]["message"]
    left = client.get(f"/v1/jobs/{job.id}", headers=auth(team.member)).json()
    assert (left["status"], left["checkpoint_epoch"]) == ("succeeded", None)
    # Nothing lists a file that may already be gone.
    assert client.get(f"/v1/jobs/{job.id}/artifacts", headers=auth(team.member)).json() == []

    monkeypatch.setattr(type(store), "delete_prefix", real_delete_prefix)
    assert client.delete(f"/v1/jobs/{job.id}", headers=auth(team.member)).status_code == 204
    assert objects_of(store, team, job.id) == []
    assert client.get(f"/v1/jobs/{job.id}", headers=auth(team.member)).status_code == 404
