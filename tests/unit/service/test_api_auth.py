"""Every /v1 route is born scoped: keys, roles, team isolation and the error envelope."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.core.config import get_settings
from app.core.db import session_scope
from app.datasets.models import Dataset, DatasetStatus
from app.teams.models import ApiKey, Role
from app.teams.service import create_api_key, create_team
from tests.conftest import Service, free_port


@pytest.fixture
def client(embedded_service: Service) -> Iterator[TestClient]:
    from app.main import app

    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def make_team_key(name: str, role: Role = Role.member) -> tuple[str, str]:
    """Create team ``name`` with one key; returns (team_id, plaintext key)."""
    with session_scope() as session:
        team = create_team(session, name)
        _, key = create_api_key(session, team, role, get_settings().secret_key)
        return team.id, key


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_api_process_never_imports_torch() -> None:
    code = (
        "import sys, app.main; "
        "assert not [m for m in sys.modules if m.split('.')[0] == 'torch'], 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_healthz_needs_no_key(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers["X-Request-ID"]


def test_readyz_reports_each_dependency(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json()["checks"] == {"database": "ok", "broker": "ok", "store": "ok"}


def test_readyz_answers_503_naming_the_dependency_that_fails(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import app.health as health
    from app.core.queue import make_celery

    dead = get_settings().model_copy(update={"broker_url": f"redis://127.0.0.1:{free_port()}/0"})
    monkeypatch.setattr(health, "get_celery", lambda: make_celery(dead))
    response = client.get("/readyz")
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["checks"] == {"database": "ok", "broker": "failed", "store": "ok"}
    assert body["error"]["code"] == "unavailable"
    assert body["error"]["message"].startswith("Not ready: broker (")


def test_every_v1_route_answers_401_without_a_key(client: TestClient) -> None:
    checked = []
    for template, operations in client.get("/openapi.json").json()["paths"].items():
        if not template.startswith("/v1/"):
            continue
        path = re.sub(r"\{[^}]+\}", "x1", template)
        for method in operations:
            response = client.request(method.upper(), path)
            assert response.status_code == 401, (method, template, response.text)
            checked.append((method, template))
    assert len(checked) >= 20  # the whole API, not a renamed prefix that matched nothing


def test_missing_malformed_and_unknown_keys_answer_401_in_the_error_envelope(
    client: TestClient,
) -> None:
    for headers in ({}, {"Authorization": "Basic abc"}, auth("not-a-key"), auth("fpk_0123abcd_x")):
        response = client.get("/v1/datasets", headers=headers)
        assert response.status_code == 401, headers
        body = response.json()
        assert body["error"]["code"] == "unauthenticated"
        assert body["error"]["message"]
        assert response.headers["X-Request-ID"]


def test_request_id_is_echoed(client: TestClient) -> None:
    response = client.get("/v1/me", headers={"X-Request-ID": "req-123"})
    assert response.headers["X-Request-ID"] == "req-123"


def test_key_identifies_team_and_role(client: TestClient) -> None:
    team_id, key = make_team_key("radiology", Role.admin)
    me = client.get("/v1/me", headers=auth(key)).json()
    assert me["team_id"] == team_id
    assert me["team_name"] == "radiology"
    assert me["role"] == "admin"
    assert key.startswith(me["key_prefix"])


def test_revoked_key_fails_at_once(client: TestClient) -> None:
    _, admin_key = make_team_key("derm", Role.admin)
    created = client.post("/v1/keys", headers=auth(admin_key), json={"role": "member"})
    assert created.status_code == 201, created.text
    member_key, member_id = created.json()["key"], created.json()["id"]
    assert client.get("/v1/me", headers=auth(member_key)).status_code == 200
    assert client.delete(f"/v1/keys/{member_id}", headers=auth(admin_key)).status_code == 200
    response = client.get("/v1/me", headers=auth(member_key))
    assert response.status_code == 401
    assert "revoked" in response.json()["error"]["message"]


def test_only_digests_are_stored(client: TestClient) -> None:
    _, key = make_team_key("pathology")
    with session_scope() as session:
        rows = session.query(ApiKey).all()
        assert rows
        assert all(key not in (row.digest, row.prefix) for row in rows)


def test_non_admin_keys_cannot_manage_keys(client: TestClient) -> None:
    _, viewer = make_team_key("eyes", Role.viewer)
    response = client.post("/v1/keys", headers=auth(viewer), json={"role": "admin"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"


def test_another_teams_objects_answer_404_and_never_list(client: TestClient) -> None:
    team_a, key_a = make_team_key("team-a")
    _, key_b = make_team_key("team-b")
    with session_scope() as session:
        dataset = Dataset(team_id=team_a, name="skin-lt", status=DatasetStatus.ready.value)
        session.add(dataset)
        session.flush()
        dataset_id = dataset.id

    own = client.get(f"/v1/datasets/{dataset_id}", headers=auth(key_a))
    assert own.status_code == 200
    assert own.json()["name"] == "skin-lt"

    foreign = client.get(f"/v1/datasets/{dataset_id}", headers=auth(key_b))
    missing = client.get("/v1/datasets/ds_doesnotexist", headers=auth(key_b))
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json()["error"]["code"] == "not_found"

    assert [d["id"] for d in client.get("/v1/datasets", headers=auth(key_a)).json()["items"]] == [
        dataset_id
    ]
    assert client.get("/v1/datasets", headers=auth(key_b)).json() == {
        "items": [],
        "total": 0,
        "limit": 50,
        "offset": 0,
    }


def test_validation_errors_and_unknown_routes_use_the_envelope(client: TestClient) -> None:
    _, key = make_team_key("icu")
    bad = client.get("/v1/datasets?limit=0", headers=auth(key))
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "invalid_input"
    assert "limit" in bad.json()["error"]["message"]
    assert client.get("/v1/nothing-here", headers=auth(key)).json()["error"]["code"] == "not_found"


def test_a_database_that_does_not_answer_is_a_503_to_retry(embedded_service: Service) -> None:
    """Out of connections (PostgreSQL's "too many clients", seen under bench.api_load), a
    restart or a lock timeout is nothing the client did: 503 with Retry-After, not a 500."""
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    from app.main import create_app

    app = create_app()

    @app.get("/busy")
    def busy() -> None:
        raise OperationalError("SELECT 1", {}, Exception("sorry, too many clients already"))

    @app.get("/pool-empty")
    def pool_empty() -> None:
        raise PoolTimeout("QueuePool limit of size 5 overflow 10 reached, connection timed out")

    with TestClient(app, raise_server_exceptions=False) as test_client:
        response = test_client.get("/busy")
        emptied = test_client.get("/pool-empty")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.json()["error"]["code"] == "unavailable"
    assert "too many clients" not in response.text
    # Every connection of the process busy for the pool's timeout: also a 503, not a 500.
    assert emptied.status_code == 503
    assert emptied.headers["Retry-After"] == "1"
    assert emptied.json()["error"]["code"] == "unavailable"
    assert "QueuePool" not in emptied.text


def test_unexpected_errors_answer_500_without_internals(embedded_service: Service) -> None:
    from app.main import create_app

    app = create_app()

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("password=hunter2 in a stack frame")

    with TestClient(app, raise_server_exceptions=False) as test_client:
        response = test_client.get("/boom", headers={"X-Request-ID": "rid-42"})
    assert response.status_code == 500
    body = response.json()
    assert body["error"]["code"] == "internal_error"
    assert "rid-42" in body["error"]["message"]
    assert "hunter2" not in response.text
    assert "Traceback" not in response.text
