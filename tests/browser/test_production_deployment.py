"""The dashboard on the production deployment (PostgreSQL, Redis broker, S3), in-process:
the same session cookie, pages and streamed upload as on the embedded default.

The browser tests run against the embedded default; this checks that nothing in the dashboard
depends on it (SQLite, a local object directory).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.core.config import get_settings
from app.core.db import get_sessionmaker
from app.core.migrate import upgrade
from app.core.storage import open_object_store
from app.datasets.models import Dataset
from app.teams.models import Role
from foprokd.synthetic import archive_bytes, sample_dataset
from tests.support.seaweed import S3Server
from tests.support.service import configure_service, reset_service_caches
from tests.unit.jobs.ready_dataset import make_team_key, put_ready_dataset

pytestmark = pytest.mark.integration

TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def production(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    pg_url: str,
    redis_url: str,
    s3_server: S3Server,
) -> Iterator[TestClient]:
    configure_service(
        monkeypatch,
        tmp_path / "fopro",
        database_url=pg_url,
        broker_url=redis_url,
        result_backend=redis_url,
        storage_url=f"s3://{s3_server.bucket}/dashboard-{secrets.token_hex(4)}",
        s3_endpoint=s3_server.endpoint,
        s3_access_key=s3_server.access_key,
        s3_secret_key=s3_server.secret_key,
        s3_region=s3_server.region,
    )
    upgrade(get_settings().database_url)
    from app.main import app

    with TestClient(app) as client:
        yield client
    reset_service_caches()


def test_sign_in_pages_and_a_streamed_upload_on_postgres_and_s3(production: TestClient) -> None:
    settings = get_settings()
    store = open_object_store(settings)
    with get_sessionmaker()() as session:
        team_id, key = make_team_key(session, Role.member)
        dataset = put_ready_dataset(session, store, team_id, per_class=3)
    form = production.get("/sign-in")
    token = TOKEN.search(form.text)
    assert token is not None
    signed_in = production.post("/sign-in", data={"csrf_token": token.group(1), "api_key": key})
    assert signed_in.status_code == 200
    found = TOKEN.search(signed_in.text)
    assert found is not None
    csrf = found.group(1)
    for path in ("/jobs", "/datasets", f"/datasets/{dataset.id}", "/teachers", "/jobs/new"):
        assert production.get(path).status_code == 200, path

    archive = archive_bytes(sample_dataset(classes=3, head=6, imbalance=2.0).members, "zip")
    refused = production.post(
        "/datasets", data={"name": "no-token"}, files={"file": ("d.zip", archive)}
    )
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "csrf_rejected"
    uploaded = production.post(
        "/datasets",
        data={"name": "from-the-dashboard"},
        files={"file": ("d.zip", archive, "application/zip")},
        headers={"X-CSRF-Token": csrf, "Accept": "application/json"},
    )
    assert uploaded.status_code == 202, uploaded.text
    body = uploaded.json()
    assert body["status"] == "validating"
    assert uploaded.headers["location"] == f"/datasets/{body['id']}"
    with get_sessionmaker()() as session:
        row = session.get_one(Dataset, body["id"])
        assert row.team_id == team_id
        assert row.archive_key is not None
        assert store.get_bytes(row.archive_key) == archive  # in the S3 bucket
