"""The dashboard's routes in-process (embedded service, no worker, no browser): sign-in, the
cookie re-checked against the database, CSRF on every state change, roles, pages and forms."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from markupsafe import escape

from app.core.config import get_settings
from app.core.db import get_sessionmaker
from app.core.storage import open_object_store
from app.dashboard.session_cookie import SESSION_COOKIE, SESSION_TTL_S, sign_session
from app.jobs.models import Job, JobStatus
from app.teams.models import ApiKey, Role
from app.teams.service import create_api_key, find_team, revoke_api_key
from foprokd.hyperparams import HyperParams
from tests.conftest import Service
from tests.unit.jobs.ready_dataset import make_team_key, put_ready_dataset

HTML = {"Accept": "text/html"}
JSON = {"Accept": "application/json"}
TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class Team:
    id: str
    admin: str
    viewer: str
    dataset_id: str
    job_id: str


@pytest.fixture
def team(embedded_service: Service) -> Team:
    with get_sessionmaker()() as session:
        team_id, admin = make_team_key(session, Role.admin)
        row = find_team(session, team_id)
        _, viewer = create_api_key(session, row, Role.viewer, get_settings().secret_key)
        dataset = put_ready_dataset(
            session, open_object_store(get_settings()), team_id, per_class=3
        )
        job = Job(
            team_id=team_id,
            dataset_id=dataset.id,
            teacher="resnet18",
            student="resnet18",
            method="ekd",
            params={},
            status=JobStatus.queued.value,
        )
        session.add(job)
        session.commit()
        return Team(team_id, admin, viewer, dataset.id, job.id)


@pytest.fixture
def client(embedded_service: Service) -> Iterator[TestClient]:
    from app.main import app

    with TestClient(app, raise_server_exceptions=True) as test_client:
        yield test_client


def sign_in(client: TestClient, key: str, next_path: str = "/jobs") -> str:
    """Sign in through the form; returns the CSRF token of the landing page."""
    form = client.get(f"/sign-in?next={next_path}")
    token = TOKEN.search(form.text)
    assert token is not None
    answer = client.post(
        "/sign-in",
        data={"csrf_token": token.group(1), "next": next_path, "api_key": key},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    landing = client.get(answer.headers["location"])
    found = TOKEN.search(landing.text)
    assert found is not None
    return found.group(1)


def job_status(job_id: str) -> str:
    with get_sessionmaker()() as session:
        return session.get_one(Job, job_id).status


def test_pages_need_a_session(client: TestClient, team: Team) -> None:
    page = client.get(f"/jobs/{team.job_id}", headers=HTML, follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"] == f"/sign-in?next=/jobs/{team.job_id}"
    script = client.get("/jobs/table", headers=JSON)
    assert script.status_code == 401
    assert script.json()["error"]["code"] == "sign_in_required"
    htmx = client.get("/jobs/table", headers={"HX-Request": "true", "HX-Current-URL": "/jobs"})
    assert htmx.status_code == 200
    assert htmx.headers["HX-Redirect"] == "/sign-in?next=/jobs"


def test_sign_in_sets_a_strict_http_only_cookie_without_the_key(
    client: TestClient, team: Team
) -> None:
    token = TOKEN.search(client.get("/sign-in").text)
    assert token is not None
    answer = client.post(
        "/sign-in",
        data={"csrf_token": token.group(1), "next": "/datasets", "api_key": team.admin},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == "/datasets"
    cookie = next(
        c for c in answer.headers.get_list("set-cookie") if c.startswith(f"{SESSION_COOKIE}=")
    )
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert f"Max-Age={SESSION_TTL_S}" in cookie
    assert team.admin not in cookie
    assert client.get("/datasets", headers=HTML).status_code == 200


def test_sign_in_refuses_a_bad_key_and_a_form_without_its_token(
    client: TestClient, team: Team
) -> None:
    token = TOKEN.search(client.get("/sign-in").text)
    assert token is not None
    wrong = client.post(
        "/sign-in", data={"csrf_token": token.group(1), "api_key": "fpk_00000000_nope"}
    )
    assert wrong.status_code == 401
    assert "Unknown API key" in wrong.text
    assert SESSION_COOKIE not in client.cookies
    # Without the form's token (a cross-site login form): refused before the key is checked.
    forged = client.post("/sign-in", data={"api_key": team.admin}, headers=JSON)
    assert forged.status_code == 403
    assert forged.json()["error"]["code"] == "csrf_rejected"
    assert SESSION_COOKIE not in client.cookies


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example", "jobs", "/\\evil"])
def test_sign_in_only_returns_to_this_site(client: TestClient, team: Team, target: str) -> None:
    token = TOKEN.search(client.get("/sign-in").text)
    assert token is not None
    answer = client.post(
        "/sign-in",
        data={"csrf_token": token.group(1), "next": target, "api_key": team.admin},
        follow_redirects=False,
    )
    assert answer.headers["location"] == "/jobs"


def test_a_revoked_key_ends_the_session_on_the_next_request(client: TestClient, team: Team) -> None:
    sign_in(client, team.admin)
    assert client.get("/jobs", headers=HTML, follow_redirects=False).status_code == 200
    with get_sessionmaker()() as session:
        key = session.query(ApiKey).filter_by(team_id=team.id, role="admin").one()
        revoke_api_key(session, key.id)
        session.commit()
    again = client.get("/jobs", headers=HTML, follow_redirects=False)
    assert again.status_code == 303
    assert again.headers["location"].startswith("/sign-in")


def test_a_cookie_signed_with_another_secret_or_expired_is_refused(
    client: TestClient, team: Team
) -> None:
    with get_sessionmaker()() as session:
        key_id = session.query(ApiKey.id).filter_by(team_id=team.id, role="admin").scalar()
    assert key_id is not None
    for cookie in (
        sign_session(key_id, "another-secret-of-at-least-32-characters"),
        sign_session(key_id, get_settings().secret_key, ttl_s=-1),
    ):
        client.cookies.set(SESSION_COOKIE, cookie)
        assert client.get("/jobs", headers=JSON).status_code == 401
    client.cookies.set(SESSION_COOKIE, sign_session(key_id, get_settings().secret_key))
    assert client.get("/jobs", headers=JSON).status_code == 200


def test_state_changes_need_the_sessions_csrf_token(client: TestClient, team: Team) -> None:
    token = sign_in(client, team.admin)
    for data in ({}, {"csrf_token": "x" * 32}):
        refused = client.post(f"/jobs/{team.job_id}/cancel", data=data, headers=JSON)
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "csrf_rejected"
    page = client.post(f"/jobs/{team.job_id}/cancel", headers=HTML)
    assert page.status_code == 403
    assert "csrf_rejected" in page.text
    assert job_status(team.job_id) == JobStatus.queued.value
    # Another session's token (same key) is not this one's.
    other = TestClient(client.app)
    other_token = sign_in(other, team.admin)
    assert other_token != token
    cross = client.post(f"/jobs/{team.job_id}/cancel", data={"csrf_token": other_token})
    assert cross.status_code == 403
    done = client.post(
        f"/jobs/{team.job_id}/cancel", data={"csrf_token": token}, follow_redirects=False
    )
    assert done.status_code == 303
    assert job_status(team.job_id) == JobStatus.cancelled.value


def test_the_token_may_come_in_a_header(client: TestClient, team: Team) -> None:
    token = sign_in(client, team.admin)
    done = client.post(
        f"/jobs/{team.job_id}/cancel", headers={"X-CSRF-Token": token}, follow_redirects=False
    )
    assert done.status_code == 303
    assert job_status(team.job_id) == JobStatus.cancelled.value


def test_a_viewer_gets_no_write_buttons_and_cannot_write(client: TestClient, team: Team) -> None:
    token = sign_in(client, team.viewer)
    for path in ("/jobs", f"/jobs/{team.job_id}", "/datasets", f"/datasets/{team.dataset_id}"):
        body = client.get(path, headers=HTML).text
        assert "data-write" not in body, path
        assert "/cancel" not in body, path
        assert 'id="upload-form"' not in body, path
    refused = client.post(f"/jobs/{team.job_id}/cancel", data={"csrf_token": token}, headers=JSON)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "forbidden"
    assert job_status(team.job_id) == JobStatus.queued.value
    assert client.get("/jobs/new", headers=HTML).status_code == 403


def test_an_admin_sees_the_buttons_the_jobs_state_allows(client: TestClient, team: Team) -> None:
    sign_in(client, team.admin)
    queued = client.get(f"/jobs/{team.job_id}").text
    assert f'action="/jobs/{team.job_id}/cancel"' in queued
    assert f'action="/jobs/{team.job_id}/delete"' not in queued  # not finished yet
    assert 'href="/jobs/new"' in client.get("/jobs").text


def test_pages_carry_the_security_headers(client: TestClient, team: Team) -> None:
    sign_in(client, team.admin)
    for path in ("/sign-in", "/jobs", "/teachers"):
        headers = client.get(path).headers
        assert "script-src 'self'" in headers["Content-Security-Policy"], path
        assert headers["X-Frame-Options"] == "DENY", path


def test_the_new_job_form_offers_the_engines_defaults_and_help(
    client: TestClient, team: Team
) -> None:
    sign_in(client, team.admin)
    form = client.get(f"/jobs/new?dataset_id={team.dataset_id}").text
    for name, info in HyperParams.model_fields.items():
        assert f'name="{name}"' in form, name
        assert str(escape(info.description)) in form, name
        if isinstance(info.default, str):  # a choice: the default is the selected option
            assert f'<option value="{info.default}" selected>' in form, name
        elif not isinstance(info.default, bool):
            assert f'name="{name}" value="{info.default}"' in form, name
    assert 'name="allow_random_weights"' in form  # admin only


def test_a_refused_job_form_keeps_its_values_and_says_why(client: TestClient, team: Team) -> None:
    token = sign_in(client, team.admin)
    answer = client.post(
        "/jobs/new",
        data={
            "csrf_token": token,
            "dataset_id": team.dataset_id,
            "teacher": "resnet18",
            "student": "resnet18",
            "method": "ekd",
            "epochs": "7",
            "image_size": "30",
        },
    )
    assert answer.status_code == 422
    assert "multiple of 8" in answer.text
    assert 'name="epochs" value="7"' in answer.text
    with get_sessionmaker()() as session:
        assert session.query(Job).filter_by(team_id=team.id).count() == 1  # only the fixture's


def test_the_job_form_submits_with_the_weights_check_of_the_api(
    client: TestClient, team: Team
) -> None:
    token = sign_in(client, team.admin)
    base = {
        "csrf_token": token,
        "dataset_id": team.dataset_id,
        "teacher": "resnet18",
        "student": "resnet18",
        "method": "ekd",
        "epochs": "2",
        "image_size": "32",
        "idempotency_key": "form-1",
    }
    missing = client.post("/jobs/new", data=base)
    assert missing.status_code == 422
    assert "teacher_weights_missing" not in missing.text  # the message, not the code, is shown
    assert "fopro admin weights add resnet18" in missing.text
    created = client.post(
        "/jobs/new", data={**base, "allow_random_weights": "on"}, follow_redirects=False
    )
    assert created.status_code == 303
    job_id = created.headers["location"].rsplit("/", 1)[1]
    again = client.post(
        "/jobs/new", data={**base, "allow_random_weights": "on"}, follow_redirects=False
    )
    assert again.headers["location"] == f"/jobs/{job_id}"  # the same form sent twice: one job
    with get_sessionmaker()() as session:
        job = session.get_one(Job, job_id)
        assert job.params["epochs"] == 2
        assert job.params["lr"] == HyperParams().lr


def test_the_job_stream_route_reuses_the_api_stream(client: TestClient, team: Team) -> None:
    token = sign_in(client, team.admin)
    client.post(f"/jobs/{team.job_id}/cancel", data={"csrf_token": token})

    def stream(after_id: int) -> str:
        with client.stream("GET", f"/jobs/{team.job_id}/stream?after_id={after_id}") as answer:
            return "".join(answer.iter_text())

    everything = stream(0)
    found = re.search(
        r"id: (\d+)\nevent: job_event\ndata: .*Cancelled before it started", everything
    )
    assert found is not None, everything
    assert everything.rstrip().endswith('data: {"status": "cancelled"}')
    # The page was rendered with that event: the stream it opens starts after it.
    rest = stream(int(found.group(1)))
    assert "Cancelled before it started" not in rest
    assert rest.rstrip().endswith('data: {"status": "cancelled"}')


def test_another_teams_job_is_not_found(client: TestClient, team: Team) -> None:
    with get_sessionmaker()() as session:
        _, stranger = make_team_key(session, Role.admin)
    sign_in(client, stranger)
    assert client.get(f"/jobs/{team.job_id}", headers=HTML).status_code == 404
    assert client.get(f"/jobs/{team.job_id}/metrics", headers=JSON).status_code == 404


def test_the_jobs_list_is_paginated_and_filtered_by_status(client: TestClient, team: Team) -> None:
    with get_sessionmaker()() as session:
        for number in range(24):
            status = JobStatus.failed if number % 3 == 0 else JobStatus.succeeded
            session.add(
                Job(
                    team_id=team.id,
                    dataset_id=team.dataset_id,
                    teacher="resnet18",
                    student="resnet18",
                    method="bsm",
                    params={},
                    status=status.value,
                )
            )
        session.commit()
    sign_in(client, team.admin)
    rows = re.compile(r'<tr data-job-id="(job_[0-9a-f]+)" data-status="(\w+)">')
    first, second = client.get("/jobs").text, client.get("/jobs/table?page=2").text
    assert len(rows.findall(first)) == 20
    assert len(rows.findall(second)) == 5
    assert not set(rows.findall(first)) & set(rows.findall(second))
    assert "page 1 of 2 (25 jobs)" in first
    assert 'href="/jobs?page=2"' in first
    failed = rows.findall(client.get("/jobs?status=failed").text)
    assert len(failed) == 8
    assert {status for _, status in failed} == {"failed"}
    assert client.get("/jobs?status=bogus", headers=HTML).status_code == 422


def test_the_dataset_page_shows_images_and_patient_groups_per_class_and_split(
    client: TestClient, team: Team
) -> None:
    from app.datasets.models import Dataset

    with get_sessionmaker()() as session:
        dataset = session.get_one(Dataset, team.dataset_id)
        classes = list(dataset.classes)
        dataset.stats = {
            "class_counts": {
                "train": dict.fromkeys(classes, 7),
                "val": dict.fromkeys(classes, 1),
                "test": dict.fromkeys(classes, 2),
            },
            "split": {"source": "generated", "seed": 3, "unit": "group", "group_by": "dicom"},
            "patient_groups": {
                "per_class": {
                    "train": dict.fromkeys(classes, 4),
                    "val": dict.fromkeys(classes, 1),
                    "test": dict.fromkeys(classes, 1),
                },
                "per_split": {"train": 16, "val": 4, "test": 4},
                "total": 24,
            },
        }
        session.commit()
    sign_in(client, team.viewer)
    body = client.get(f"/datasets/{team.dataset_id}", headers=HTML).text
    assert 'id="split-table"' in body
    assert "Images and patient groups per class and split" in body
    assert '7 <span class="muted">/ 4 groups</span>' in body
    assert '28 <span class="muted">/ 16 groups</span>' in body  # 4 classes x 7 train images
    assert "patient group" in body
    assert "no patient in two splits" in body
