"""The audit trail: every change, download and prediction leaves one record naming who, what,
which object, when, from where and under which request id; the record commits with the change
or not at all; only team admins read it, only their team's records, and only retention ends one.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from app.audit import service as audit_service
from app.audit.models import AuditRecord
from app.core.db import utcnow
from app.core.storage import ObjectStore
from app.teams.models import ApiKey
from fopro.cli import cli
from tests.unit.jobs.ready_dataset import put_ready_dataset
from tests.unit.teams.conftest import TeamKeys, auth, make_team, override_settings


def trail(client: TestClient, key: str, **filters: Any) -> list[dict[str, Any]]:
    response = client.get("/v1/audit", headers=auth(key), params=filters)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def key_count(session: Session, team_id: str) -> int:
    session.expire_all()
    return session.scalar(select(func.count(ApiKey.id)).where(ApiKey.team_id == team_id)) or 0


@pytest.fixture
def team(session: Session) -> TeamKeys:
    return make_team(session, "radiology")


def test_a_change_records_who_what_which_object_when_from_where_and_the_request_id(
    client: TestClient, team: TeamKeys
) -> None:
    before = utcnow()
    created = client.post(
        "/v1/keys",
        headers={**auth(team.admin), "X-Request-ID": "rid-audit-1"},
        json={"role": "viewer", "label": "scanner"},
    )
    assert created.status_code == 201
    me = client.get("/v1/me", headers=auth(team.admin)).json()
    (entry,) = trail(client, team.admin, action="key.create")
    assert entry["key_id"] == me["key_id"]
    assert entry["key_prefix"] == me["key_prefix"]
    assert entry["role"] == "admin"
    assert entry["object_type"] == "key"
    assert entry["object_id"] == created.json()["id"]
    assert entry["request_id"] == "rid-audit-1"
    assert entry["client_address"] == "testclient"
    assert entry["details"] == {"role": "viewer"}
    assert entry["created_at"] >= before.isoformat()[:19]


def test_a_refused_change_leaves_no_record(
    client: TestClient, team: TeamKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert client.delete("/v1/keys/key_missing", headers=auth(team.admin)).status_code == 404
    override_settings(monkeypatch, max_active_keys="3")  # the team already has 3
    assert client.post("/v1/keys", headers=auth(team.admin), json={}).status_code == 409
    assert trail(client, team.admin) == []


def test_a_record_that_cannot_be_written_takes_its_change_with_it(
    client: TestClient, session: Session, team: TeamKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys_before = key_count(session, team.id)
    real_row = audit_service._row

    def unwritable(*args: Any) -> AuditRecord:
        row = real_row(*args)
        row.action = None  # type: ignore[assignment]  # NOT NULL: the INSERT fails
        return row

    monkeypatch.setattr(audit_service, "_row", unwritable)
    response = client.post("/v1/keys", headers=auth(team.admin), json={})
    assert response.status_code == 500
    assert key_count(session, team.id) == keys_before


def test_a_created_object_is_named_by_the_id_its_service_gave_it(
    client: TestClient, session: Session, store: ObjectStore, team: TeamKeys
) -> None:
    dataset = put_ready_dataset(session, store, team.id, num_classes=2, per_class=5, size=16)
    body = {
        "dataset_id": dataset.id,
        "teacher": "resnet18",
        "student": "resnet18",
        "params": {"allow_random_weights": True, "epochs": 1, "image_size": 32},
    }
    once = {**auth(team.admin), "Idempotency-Key": "k1"}
    job = client.post("/v1/jobs", headers=once, json=body)
    assert job.status_code == 201, job.text
    # The same request again creates nothing, so it records nothing either.
    again = client.post("/v1/jobs", headers=once, json=body)
    assert again.status_code == 200
    cancel = client.post(f"/v1/jobs/{job.json()['id']}/cancel", headers=auth(team.member))
    assert cancel.status_code == 200
    entries = trail(client, team.admin, object_id=job.json()["id"])
    assert [(e["action"], e["role"]) for e in entries] == [
        ("job.cancel", "member"),
        ("job.create", "admin"),
    ]


def test_reads_that_hand_out_data_are_recorded_and_plain_reads_are_not(
    client: TestClient, session: Session, store: ObjectStore, team: TeamKeys
) -> None:
    dataset = put_ready_dataset(session, store, team.id, num_classes=2, per_class=5, size=16)
    assert client.get("/v1/datasets", headers=auth(team.viewer)).status_code == 200
    manifest = client.get(f"/v1/datasets/{dataset.id}/manifest", headers=auth(team.viewer))
    assert manifest.status_code == 200
    (entry,) = trail(client, team.admin)
    assert (entry["action"], entry["object_id"], entry["role"]) == (
        "dataset.manifest_download",
        dataset.id,
        "viewer",
    )


def test_filters_by_actor_action_object_and_time_and_pages(
    client: TestClient, team: TeamKeys
) -> None:
    made = [client.post("/v1/keys", headers=auth(team.admin), json={}).json() for _ in range(3)]
    client.delete(f"/v1/keys/{made[0]['id']}", headers=auth(team.admin))
    admin_prefix = client.get("/v1/me", headers=auth(team.admin)).json()["key_prefix"]
    assert len(trail(client, team.admin, actor=admin_prefix)) == 4
    assert trail(client, team.admin, actor=made[1]["prefix"]) == []
    (revoked,) = trail(client, team.admin, action="key.revoke")
    assert revoked["object_id"] == made[0]["id"]
    assert len(trail(client, team.admin, object_id=made[0]["id"])) == 2
    assert len(trail(client, team.admin, object_type="key")) == 4
    future = (utcnow() + timedelta(hours=1)).isoformat()
    assert trail(client, team.admin, since=future) == []
    assert len(trail(client, team.admin, until=future)) == 4
    page = client.get("/v1/audit?limit=2&offset=1", headers=auth(team.admin)).json()
    assert (page["total"], page["limit"], page["offset"], len(page["items"])) == (4, 2, 1, 2)
    newest_first = [e["id"] for e in trail(client, team.admin)]
    assert newest_first == sorted(newest_first, reverse=True)
    bad = client.get("/v1/audit?action=key.destroy", headers=auth(team.admin))
    assert bad.status_code == 422


def test_only_admins_read_the_trail_and_no_route_deletes_it(
    client: TestClient, team: TeamKeys
) -> None:
    for key in (team.member, team.viewer):
        response = client.get("/v1/audit", headers=auth(key))
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "forbidden"
    refused = client.delete("/v1/audit", headers=auth(team.admin))
    assert refused.status_code == 405
    assert refused.headers["allow"] == "GET"
    assert refused.json()["error"]["code"] == "method_not_allowed"


def test_another_teams_trail_is_never_shown(
    client: TestClient, session: Session, team: TeamKeys
) -> None:
    other = make_team(session, "cardiology")
    created = client.post("/v1/keys", headers=auth(team.admin), json={}).json()
    theirs = client.get("/v1/audit", headers=auth(other.admin))
    assert theirs.json()["total"] == 0
    assert created["id"] not in theirs.text
    assert trail(client, other.admin, object_id=created["id"]) == []


def test_retention_purges_old_records_only(
    client: TestClient, session: Session, team: TeamKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    for _ in range(2):
        client.post("/v1/keys", headers=auth(team.admin), json={})
    old = session.scalars(select(AuditRecord).order_by(AuditRecord.id)).first()
    assert old is not None
    old.created_at = utcnow() - timedelta(days=31)
    session.commit()
    override_settings(monkeypatch, audit_retention_days="30")
    result = CliRunner().invoke(cli, ["admin", "purge-audit"])
    assert result.exit_code == 0, result.output
    assert "purged 1 audit records older than 30 days" in result.output
    session.expire_all()
    assert session.scalar(select(func.count(AuditRecord.id))) == 1
    assert audit_service.purge_expired(session, 30) == 0


def test_a_record_goes_with_the_next_commit_even_past_a_rollback_and_never_without_one(
    session: Session, team: TeamKeys
) -> None:
    from app.core.db import get_sessionmaker

    actor = audit_service.Actor(team.id, "key_x", "fpk_x", "member", "10.0.0.1", "rid-1")
    # A service that rolls back a lost race and retries (cancel_job does) still commits it.
    audit_service.record(session, actor, audit_service.AuditAction.job_cancel, "job_retried")
    session.rollback()
    session.commit()
    with get_sessionmaker()() as refused:
        audit_service.record(refused, actor, audit_service.AuditAction.job_cancel, "job_refused")
        refused.rollback()
    written = session.scalars(select(AuditRecord.object_id)).all()
    assert written == ["job_retried"]
