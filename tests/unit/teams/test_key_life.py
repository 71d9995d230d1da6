"""API keys with a life: expiry at creation, last use noted once a minute, rotation with a grace
period, and a cap on a team's working keys."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from app.core.db import utcnow
from app.teams.models import ApiKey, Role
from fopro.cli import cli
from tests.unit.teams.conftest import TeamKeys, add_key, auth, make_team, override_settings


def _row(session: Session, key_id: str) -> ApiKey:
    session.expire_all()
    return session.get_one(ApiKey, key_id)


def test_a_key_created_with_expires_in_days_carries_its_expiry(
    client: TestClient, team: TeamKeys
) -> None:
    before = utcnow()
    created = client.post(
        "/v1/keys", headers=auth(team.admin), json={"role": "viewer", "expires_in_days": 7}
    )
    assert created.status_code == 201, created.text
    body = created.json()
    me = client.get("/v1/me", headers=auth(body["key"])).json()
    assert me["role"] == "viewer"
    expires = me["key_expires_at"]
    assert expires == body["expires_at"]

    delta = datetime.fromisoformat(expires) - before
    assert timedelta(days=7) - timedelta(minutes=1) < delta <= timedelta(days=7, minutes=1)


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        ({"expires_at": "2001-01-01T00:00:00Z"}, "in the future"),
        ({"expires_at": "2999-01-01T00:00:00"}, "timezone"),
        ({"expires_at": "2999-01-01T00:00:00Z", "expires_in_days": 3}, "not both"),
        ({"expires_in_days": 0}, "expires_in_days"),
    ],
)
def test_bad_expiries_answer_422_saying_why(
    client: TestClient, team: TeamKeys, payload: dict[str, object], needle: str
) -> None:
    response = client.post("/v1/keys", headers=auth(team.admin), json=payload)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_input"
    assert needle in response.json()["error"]["message"]


def test_an_expired_key_answers_401_saying_it_expired(
    client: TestClient, session: Session, team: TeamKeys
) -> None:
    _, key = add_key(session, team.id, expires_at=utcnow() + timedelta(seconds=30))
    assert client.get("/v1/me", headers=auth(key)).status_code == 200
    _, expired = add_key(session, team.id, expires_at=utcnow() - timedelta(seconds=1))
    response = client.get("/v1/datasets", headers=auth(expired))
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "unauthenticated"
    assert "expired at" in error["message"]


def test_last_used_at_is_written_at_most_once_a_minute(
    client: TestClient, session: Session, team: TeamKeys
) -> None:
    key, plaintext = add_key(session, team.id)
    assert key.last_used_at is None
    assert client.get("/v1/me", headers=auth(plaintext)).status_code == 200
    first = _row(session, key.id).last_used_at
    assert first is not None
    assert client.get("/v1/me", headers=auth(plaintext)).status_code == 200
    assert _row(session, key.id).last_used_at == first  # within the minute: no write

    row = _row(session, key.id)
    row.last_used_at = utcnow() - timedelta(minutes=2)
    session.commit()
    assert client.get("/v1/me", headers=auth(plaintext)).status_code == 200
    assert _row(session, key.id).last_used_at > first  # type: ignore[operator]


def test_rotation_issues_a_successor_and_the_old_key_works_until_its_grace_ends(
    client: TestClient, session: Session, team: TeamKeys
) -> None:
    old, old_plain = add_key(session, team.id, Role.viewer)
    old.label = "ci runner"
    session.commit()
    rotated = client.post(
        f"/v1/keys/{old.id}/rotate", headers=auth(team.admin), json={"old_key_grace_s": 3600}
    )
    assert rotated.status_code == 201, rotated.text
    body = rotated.json()
    assert body["role"] == "viewer"
    assert body["label"] == "ci runner"
    assert body["id"] != old.id
    assert body["replaced"]["id"] == old.id
    assert body["replaced"]["replaced_by"] == body["id"]
    assert client.get("/v1/me", headers=auth(body["key"])).json()["key_id"] == body["id"]
    # The old key still works during its grace period, and says when it ends.
    me_old = client.get("/v1/me", headers=auth(old_plain)).json()
    assert me_old["key_expires_at"] == body["replaced"]["expires_at"]

    row = _row(session, old.id)
    row.expires_at = utcnow() - timedelta(seconds=1)  # the grace period is over
    session.commit()
    response = client.get("/v1/me", headers=auth(old_plain))
    assert response.status_code == 401
    assert "rotated" in response.json()["error"]["message"]
    assert client.get("/v1/me", headers=auth(body["key"])).status_code == 200


def test_rotation_with_no_grace_ends_the_old_key_at_once_and_cannot_be_repeated(
    client: TestClient, session: Session, team: TeamKeys
) -> None:
    old, old_plain = add_key(session, team.id)
    rotated = client.post(
        f"/v1/keys/{old.id}/rotate", headers=auth(team.admin), json={"old_key_grace_s": 0}
    )
    assert rotated.status_code == 201, rotated.text
    assert client.get("/v1/me", headers=auth(old_plain)).status_code == 401
    again = client.post(f"/v1/keys/{old.id}/rotate", headers=auth(team.admin), json={})
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "key_not_rotatable"


def test_rotation_uses_the_default_grace_and_keeps_a_lifetime_policy(
    client: TestClient, session: Session, team: TeamKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    override_settings(monkeypatch, key_rotation_grace_s="7200")
    created = client.post("/v1/keys", headers=auth(team.admin), json={"expires_in_days": 30})
    old_id = created.json()["id"]
    start = utcnow()
    body = client.post(f"/v1/keys/{old_id}/rotate", headers=auth(team.admin), json={}).json()

    old_end = datetime.fromisoformat(body["replaced"]["expires_at"])
    new_end = datetime.fromisoformat(body["expires_at"])
    assert (
        timedelta(hours=2) - timedelta(minutes=1) < old_end - start <= timedelta(hours=2, minutes=1)
    )
    assert (
        timedelta(days=30) - timedelta(minutes=1) < new_end - start <= timedelta(days=30, minutes=1)
    )


def test_revoked_and_other_teams_keys_cannot_be_rotated(
    client: TestClient, session: Session, team: TeamKeys
) -> None:
    revoked, _ = add_key(session, team.id, revoked_at=utcnow())
    response = client.post(f"/v1/keys/{revoked.id}/rotate", headers=auth(team.admin), json={})
    assert response.status_code == 409
    other = make_team(session)
    response = client.post(f"/v1/keys/{revoked.id}/rotate", headers=auth(other.admin), json={})
    assert response.status_code == 404


def test_a_team_at_its_cap_of_active_keys_gets_409_until_one_stops_working(
    client: TestClient, session: Session, team: TeamKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    override_settings(monkeypatch, max_active_keys="4")  # the team already has 3
    assert client.post("/v1/keys", headers=auth(team.admin), json={}).status_code == 201
    refused = client.post("/v1/keys", headers=auth(team.admin), json={})
    assert refused.status_code == 409
    error = refused.json()["error"]
    assert error["code"] == "key_limit_reached"
    assert f"Team {team.name} has 4 of 4 active API keys" in error["message"]
    assert client.get("/v1/me", headers=auth(team.admin)).json()["quotas"]["active_keys"] == {
        "used": 4,
        "limit": 4,
    }
    # Expired and revoked keys do not count.
    keys = client.get("/v1/keys", headers=auth(team.admin)).json()
    viewer_id = next(k["id"] for k in keys if k["role"] == "viewer")
    assert client.delete(f"/v1/keys/{viewer_id}", headers=auth(team.admin)).status_code == 200
    assert client.post("/v1/keys", headers=auth(team.admin), json={}).status_code == 201


def test_admin_cli_creates_expiring_keys_and_lists_their_state(
    client: TestClient, session: Session, team: TeamKeys
) -> None:
    runner = CliRunner()
    issued = runner.invoke(cli, ["admin", "create-key", team.name, "--expires-in-days", "3"])
    assert issued.exit_code == 0, issued.output
    plaintext = issued.stdout.strip().splitlines()[-1]
    me = client.get("/v1/me", headers=auth(plaintext)).json()
    assert me["key_expires_at"] is not None
    _, _ = add_key(session, team.id, expires_at=utcnow() - timedelta(seconds=1))
    listed = runner.invoke(cli, ["admin", "list-keys", team.name]).output
    assert "active until" in listed
    assert "expired" in listed
    bad = runner.invoke(cli, ["admin", "create-key", team.name, "--expires-in-days", "0"])
    assert bad.exit_code == 2
