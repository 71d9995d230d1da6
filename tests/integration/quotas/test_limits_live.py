"""Quotas, rate limits and key revocation against two real API processes on one database, on
both deployments: revocation and rotation bite on every process at once; the Redis bucket is
shared between processes (the in-memory one is per process); concurrent submits through both
processes never pass the active-jobs quota; uploads past the storage quota leave nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from app.core.storage import open_object_store
from app.core.tenancy import team_object_key
from app.teams.models import Role, Team
from app.teams.service import create_api_key, find_team
from tests.integration.quotas.conftest import RATE, Deployment

pytestmark = pytest.mark.integration


def call(
    url: str,
    key: str,
    method: str = "GET",
    path: str = "/v1/me",
    headers: dict[str, str] | None = None,
    **kw: Any,
) -> httpx.Response:
    with httpx.Client(base_url=url, timeout=60) as client:
        sent = {"Authorization": f"Bearer {key}", **(headers or {})}
        return client.request(method, path, headers=sent, **kw)


def admin_cli(deployment: Deployment, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "fopro", "admin", *args],
        env={**os.environ, **deployment.env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_a_revoke_through_one_process_refuses_the_key_on_the_other_at_once(
    deployment: Deployment,
) -> None:
    first, second = deployment.urls
    _, admin, _ = deployment.new_team()
    created = call(first, admin, "POST", "/v1/keys", json={"role": "member"}).json()
    key, key_id = created["key"], created["id"]
    assert call(first, key).status_code == 200
    assert call(second, key).status_code == 200  # both processes have seen the key work
    assert call(first, admin, "DELETE", f"/v1/keys/{key_id}").status_code == 200
    refused = call(second, key)
    assert refused.status_code == 401, refused.text
    assert "revoked" in refused.json()["error"]["message"]


def test_a_rotation_without_grace_ends_the_old_key_on_every_process(
    deployment: Deployment,
) -> None:
    first, second = deployment.urls
    _, admin, _ = deployment.new_team()
    old = call(first, admin, "POST", "/v1/keys", json={}).json()
    assert call(second, old["key"]).status_code == 200
    rotated = call(
        first, admin, "POST", f"/v1/keys/{old['id']}/rotate", json={"old_key_grace_s": 0}
    )
    assert rotated.status_code == 201, rotated.text
    refused = call(second, old["key"])
    assert refused.status_code == 401
    assert "expired" in refused.json()["error"]["message"]
    assert call(second, rotated.json()["key"]).status_code == 200


def test_the_rate_limit_bucket_is_shared_by_processes_only_on_redis(
    deployment: Deployment,
) -> None:
    first, second = deployment.urls
    _, key, _ = deployment.new_team()
    left = [call(url, key).headers["RateLimit-Remaining"] for url in [first, second] * (RATE // 2)]
    if deployment.name == "production":
        # One bucket: the two processes count down together.
        assert left == [str(n) for n in range(RATE - 1, -1, -1)]
        for url in (first, second):
            limited = call(url, key)
            assert limited.status_code == 429, limited.text
            assert 1 <= int(limited.headers["Retry-After"]) <= 60
            assert limited.headers["RateLimit-Limit"] == str(RATE)
            assert limited.json()["error"]["code"] == "rate_limited"
    else:
        # The embedded default keeps counts in each process's memory (it runs one API).
        assert left == [str(n) for n in range(RATE - 1, RATE // 2 - 1, -1) for _ in range(2)]
        for _ in range(RATE // 2):
            assert call(first, key).status_code == 200
        assert call(first, key).status_code == 429
        assert call(second, key).status_code == 200


def test_concurrent_submits_through_both_processes_never_pass_the_active_jobs_quota(
    deployment: Deployment,
) -> None:
    team_name, admin, dataset_id = deployment.new_team()
    assert "max_active_jobs\t0 of 3\t(team)" in admin_cli(
        deployment, "set-quota", team_name, "--max-active-jobs", "3"
    )
    session = deployment.session
    team = find_team(session, team_name)
    # Two keys, so the rate limit never speaks before the quota.
    keys = [admin, create_api_key(session, team, Role.admin, deployment.settings.secret_key)[1]]
    session.commit()
    body = {
        "dataset_id": dataset_id,
        "teacher": "resnet18",
        "student": "resnet18",
        "params": {"allow_random_weights": True, "epochs": 1, "image_size": 32},
    }

    def submit(number: int) -> httpx.Response:
        url = deployment.urls[number % 2]
        return call(url, keys[number // 5], "POST", "/v1/jobs", json=body)

    with ThreadPoolExecutor(10) as pool:
        responses = list(pool.map(submit, range(10)))
    codes = sorted(r.status_code for r in responses)
    assert codes == [201] * 3 + [429] * 7, [r.text for r in responses]
    for refused in (r for r in responses if r.status_code == 429):
        assert refused.json()["error"]["code"] == "quota_exceeded", refused.text
        assert f"Team {team_name} has 3 of 3 active jobs" in refused.json()["error"]["message"]
        assert refused.headers["Retry-After"] == "60"
    me = call(deployment.urls[0], admin).json()
    assert me["quotas"]["active_jobs"] == {"used": 3, "limit": 3}


def test_uploads_past_the_storage_or_dataset_quota_leave_nothing(
    deployment: Deployment,
) -> None:
    team_name, key, _ = deployment.new_team()
    team_id = find_team(deployment.session, team_name).id
    admin_cli(deployment, "set-quota", team_name, "--max-stored-bytes", "10000")
    store = open_object_store(deployment.settings)

    def chunks() -> Any:
        yield b"PK\x03\x04"
        for _ in range(50):
            yield b"\0" * 1024

    refused = call(
        deployment.urls[1],
        key,
        "POST",
        "/v1/datasets?name=big&filename=big.zip",
        content=chunks(),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert refused.status_code == 413, refused.text
    assert refused.json()["error"]["code"] == "storage_quota_exceeded"
    assert "stores 0 of 10000 bytes" in refused.json()["error"]["message"]
    assert list(store.list(team_object_key(team_id, ""))) == []

    admin_cli(deployment, "set-quota", team_name, "--max-datasets", "1")  # it has one already
    counted = call(
        deployment.urls[0],
        key,
        "POST",
        "/v1/datasets",
        data={"name": "small"},
        files={"file": ("d.zip", b"PK\x03\x04" + b"\0" * 100, "application/zip")},
    )
    assert counted.status_code == 429, counted.text
    assert f"Team {team_name} has 1 of 1 datasets" in counted.json()["error"]["message"]
    assert list(store.list(team_object_key(team_id, ""))) == []
    deployment.session.expire_all()
    assert deployment.session.get_one(Team, team_id).max_datasets == 1
