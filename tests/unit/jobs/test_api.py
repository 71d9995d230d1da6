"""The jobs API: validation, tenancy, roles, idempotency, cancel, retry, events, curves, SSE."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core import queue
from app.core.config import get_settings
from app.core.db import get_sessionmaker
from app.jobs import service, stream
from app.jobs.lease import claim_job
from app.jobs.models import Job, JobEvent, JobStatus
from app.jobs.state import EventKind, add_event, transition
from app.teams.models import Role
from tests.unit.jobs.conftest import Team, add_job
from tests.unit.jobs.ready_dataset import auth, make_team_key

TEST_PARAMS = {"epochs": 2, "batch_size": 8, "image_size": 32, "allow_random_weights": True}


def body(team: Team, **overrides: Any) -> dict[str, Any]:
    return {
        "dataset_id": team.dataset_id,
        "teacher": "resnet18",
        "student": "resnet18",
        "params": dict(TEST_PARAMS),
        **overrides,
    }


def submit(client: TestClient, key: str, payload: dict[str, Any], **headers: str) -> Any:
    return client.post("/v1/jobs", json=payload, headers={**auth(key), **headers})


def test_submit_commits_a_queued_job_with_paper_defaults_and_sends_it(
    client: TestClient, team: Team, session: Session
) -> None:
    response = submit(client, team.admin, body(team, params={"allow_random_weights": True}))
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["status"] == "queued"
    assert job["method"] == "fopro"
    assert job["priority"] == "normal"
    assert job["params"] == {
        "epochs": 30,
        "batch_size": 32,
        "image_size": 224,
        "lr": 3e-4,
        "weight_decay": 0.0,
        "grad_clip_norm": 5.0,
        "distill_weight": 3.0,
        "fpg_lr": 1e-3,
        "fpg_alpha": 0.5,
        "fpg_beta": 1.0,
        "fpg_gamma": 0.1,
        "akd_warmup_epochs": 1,
        "augment": True,
        "seed": 0,
        "student_init": "imagenet",
        "int8": "auto",
        "allow_random_weights": True,
    }
    row = session.get_one(Job, job["id"])
    assert row.enqueued_at is not None  # the embedded broker accepted the message
    assert row.max_attempts == get_settings().max_attempts


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"epochs": 0}, "epochs"),
        ({"epochs": 1001}, "epochs"),
        ({"batch_size": 1}, "batch_size"),
        ({"batch_size": 4097}, "batch_size"),
        ({"lr": 0}, "lr"),
        ({"image_size": 36}, "image_size"),
        ({"image_size": 24}, "image_size"),
        ({"image_size": 1032}, "image_size"),
        ({"fpg_alpha": 1.0}, "fpg_alpha"),
        ({"learning_rate": 0.1}, "learning_rate"),
    ],
)
def test_out_of_range_hyper_parameters_answer_422_naming_the_field(
    client: TestClient, team: Team, params: dict[str, Any], field: str
) -> None:
    response = submit(client, team.admin, body(team, params={**TEST_PARAMS, **params}))
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_input"
    assert field in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"student": "resnet152"}, "unknown student"),
        ({"method": "distill"}, "method"),
        ({"priority": "urgent"}, "priority"),
    ],
)
def test_unknown_choices_answer_422(
    client: TestClient, team: Team, overrides: dict[str, Any], needle: str
) -> None:
    response = submit(client, team.admin, body(team, **overrides))
    assert response.status_code == 422
    assert needle in response.json()["error"]["message"]


def test_unknown_teacher_answers_422(client: TestClient, team: Team) -> None:
    response = submit(client, team.admin, body(team, teacher="no-such-teacher"))
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "unknown_teacher"


def test_missing_teacher_or_student_weights_are_refused_at_submit_with_the_path(
    client: TestClient, team: Team
) -> None:
    weights_dir = get_settings().weights_dir
    assert weights_dir is not None
    real = {"epochs": 2, "image_size": 32}
    response = submit(client, team.admin, body(team, params=real))
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "teacher_weights_missing"
    assert str(weights_dir / "resnet18.safetensors") in response.json()["error"]["message"]

    # A teacher-less baseline never loads the teacher, but the student needs ImageNet weights.
    response = submit(client, team.admin, body(team, method="ce", params=real))
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "student_weights_missing"
    assert str(weights_dir / "resnet18.safetensors") in response.json()["error"]["message"]


def test_dataset_must_be_the_teams_own_and_ready(
    client: TestClient, team: Team, session: Session
) -> None:
    _, other_key = make_team_key(session, Role.admin)
    foreign = submit(client, other_key, body(team))
    assert foreign.status_code == 404
    assert foreign.json()["error"]["code"] == "not_found"

    from app.datasets.models import Dataset

    dataset = session.get_one(Dataset, team.dataset_id)
    dataset.status = "validating"
    session.commit()
    response = submit(client, team.admin, body(team))
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "dataset_not_ready"


def test_roles_viewers_read_members_submit_admins_alone_use_random_weights(
    client: TestClient, team: Team
) -> None:
    assert submit(client, team.viewer, body(team)).status_code == 403
    assert submit(client, team.member, body(team)).status_code == 403  # random weights
    job = submit(client, team.admin, body(team)).json()
    assert client.get(f"/v1/jobs/{job['id']}", headers=auth(team.viewer)).status_code == 200
    assert client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth(team.viewer)).status_code == 403


def test_idempotency_key_returns_the_same_job(client: TestClient, team: Team) -> None:
    first = submit(client, team.admin, body(team), **{"Idempotency-Key": "abc-1"})
    again = submit(client, team.admin, body(team), **{"Idempotency-Key": "abc-1"})
    other = submit(client, team.admin, body(team), **{"Idempotency-Key": "abc-2"})
    assert (first.status_code, again.status_code, other.status_code) == (201, 200, 201)
    assert first.json()["id"] == again.json()["id"] != other.json()["id"]
    listed = client.get("/v1/jobs", headers=auth(team.admin)).json()
    assert listed["total"] == 2

    changed = submit(
        client, team.admin, body(team, priority="high"), **{"Idempotency-Key": "abc-1"}
    )
    assert changed.status_code == 409
    assert changed.json()["error"]["code"] == "idempotency_key_reused"


def test_idempotency_key_race_returns_the_winners_job(
    client: TestClient, team: Team, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A concurrent request commits the same key between our lookup and our commit."""
    winner: list[str] = []
    original = service._check_models

    def racing(session: Session, team_id: str, job_body: Any, settings: Any) -> None:
        original(session, team_id, job_body, settings)
        if not winner:
            with get_sessionmaker()() as other:
                job = Job(
                    team_id=team_id,
                    dataset_id=job_body.dataset_id,
                    teacher=job_body.teacher,
                    student=job_body.student,
                    method=job_body.method,
                    priority=job_body.priority.value,
                    params=job_body.params.model_dump(mode="json"),
                    idempotency_key="race",
                )
                other.add(job)
                other.commit()
                winner.append(job.id)

    monkeypatch.setattr(service, "_check_models", racing)
    response = submit(client, team.admin, body(team), **{"Idempotency-Key": "race"})
    assert response.status_code == 200, response.text
    assert response.json()["id"] == winner[0]


def test_a_broker_failure_leaves_the_job_queued_for_the_reaper(
    client: TestClient, team: Team, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broker_down(*_args: object, **_kwargs: object) -> str:
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr(queue, "send", broker_down)
    response = submit(client, team.admin, body(team))
    assert response.status_code == 201
    row = session.get_one(Job, response.json()["id"])
    assert (row.status, row.enqueued_at) == ("queued", None)


def test_priority_maps_to_celery_priorities(
    client: TestClient, team: Team, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int | None] = []
    monkeypatch.setattr(
        queue, "send", lambda task, *args, priority=None: seen.append(priority) or "id"
    )
    for priority in ("low", "normal", "high"):
        assert submit(client, team.admin, body(team, priority=priority)).status_code == 201
    # Redis serves lower numbers first.
    assert seen == [9, 5, 0]


def test_list_filters_paginates_and_shows_newest_first(
    client: TestClient, team: Team, session: Session
) -> None:
    ids = [submit(client, team.admin, body(team)).json()["id"] for _ in range(3)]
    transition(session, ids[0], source=JobStatus.queued, target=JobStatus.cancelled, message="x")
    page = client.get("/v1/jobs?limit=2", headers=auth(team.viewer)).json()
    assert [j["id"] for j in page["items"]] == [ids[2], ids[1]]
    assert (page["total"], page["limit"], page["offset"]) == (3, 2, 0)
    cancelled = client.get("/v1/jobs?status=cancelled", headers=auth(team.viewer)).json()
    assert [j["id"] for j in cancelled["items"]] == [ids[0]]
    by_dataset = client.get(f"/v1/jobs?dataset_id={team.dataset_id}", headers=auth(team.admin))
    assert by_dataset.json()["total"] == 3
    assert client.get("/v1/jobs?dataset_id=ds_other", headers=auth(team.admin)).json()["total"] == 0

    _, other_key = make_team_key(session, Role.admin)
    assert client.get("/v1/jobs", headers=auth(other_key)).json()["total"] == 0
    for path in ("", "/events", "/metrics", "/stream"):
        response = client.get(f"/v1/jobs/{ids[1]}{path}", headers=auth(other_key))
        assert response.status_code == 404, path
    assert client.post(f"/v1/jobs/{ids[1]}/cancel", headers=auth(other_key)).status_code == 404


def test_cancel_a_queued_job_at_once_and_a_running_one_by_flag(
    client: TestClient, team: Team, session: Session
) -> None:
    queued = submit(client, team.admin, body(team)).json()["id"]
    response = client.post(f"/v1/jobs/{queued}/cancel", headers=auth(team.member))
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"

    running = add_job(session, team)
    from datetime import timedelta

    assert claim_job(session, running.id, "w1", lease=timedelta(seconds=30))
    response = client.post(f"/v1/jobs/{running.id}/cancel", headers=auth(team.member))
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["cancel_requested"]) == ("running", True)


@pytest.mark.parametrize("status", ["succeeded", "failed", "cancelled"])
def test_cancelling_a_finished_job_is_an_illegal_transition(
    client: TestClient, team: Team, session: Session, status: str
) -> None:
    job = add_job(session, team, status=status)
    response = client.post(f"/v1/jobs/{job.id}/cancel", headers=auth(team.admin))
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "illegal_transition"


@pytest.mark.parametrize("status", ["queued", "running", "succeeded"])
def test_only_failed_or_cancelled_jobs_can_be_retried(
    client: TestClient, team: Team, session: Session, status: str
) -> None:
    job = add_job(session, team, status=status)
    response = client.post(f"/v1/jobs/{job.id}/retry", headers=auth(team.admin))
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "illegal_transition"


def test_retry_creates_a_new_job_resuming_from_the_last_checkpoint(
    client: TestClient, team: Team, session: Session
) -> None:
    old = add_job(
        session,
        team,
        status="failed",
        params=dict(TEST_PARAMS),
        checkpoint_key="teams/x/jobs/old/checkpoints/epoch_0004.pt",
        checkpoint_epoch=4,
        failure_code="worker_lost",
    )
    response = client.post(f"/v1/jobs/{old.id}/retry", headers=auth(team.admin))
    assert response.status_code == 201, response.text
    new = response.json()
    assert new["id"] != old.id
    assert (new["status"], new["retry_of"], new["checkpoint_epoch"]) == ("queued", old.id, 4)
    assert new["attempt"] == 1
    events = client.get(f"/v1/jobs/{new['id']}/events", headers=auth(team.admin)).json()
    assert "resumes from the end of epoch 4" in events["items"][0]["message"]
    assert client.get(f"/v1/jobs/{old.id}", headers=auth(team.admin)).json()["status"] == "failed"


def test_events_page_in_order_and_continue_after_an_id(
    client: TestClient, team: Team, session: Session
) -> None:
    job = add_job(session, team)
    for n in range(5):
        add_event(session, job.id, EventKind.info, f"note {n}")
    session.commit()
    page = client.get(f"/v1/jobs/{job.id}/events?limit=2", headers=auth(team.viewer)).json()
    assert [e["message"] for e in page["items"]] == ["note 0", "note 1"]
    assert page["total"] == 5
    after = page["items"][-1]["id"]
    rest = client.get(f"/v1/jobs/{job.id}/events?after_id={after}", headers=auth(team.viewer))
    assert [e["message"] for e in rest.json()["items"]] == ["note 2", "note 3", "note 4"]


def epoch_data(epoch: int, bacc: float, is_best: bool) -> dict[str, Any]:
    return {
        "epoch": epoch,
        "epochs": 3,
        "train_losses": {"loss": 1.0 / epoch},
        "val_loss": 0.5,
        "val_balanced_accuracy": bacc,
        "val_macro_f1": bacc,
        "is_best": is_best,
        "best_epoch": epoch,
        "best_balanced_accuracy": bacc,
        "seconds": 1.0,
        "images_per_s": 10.0,
    }


def test_metrics_are_per_epoch_curves_counting_a_resumed_epoch_once(
    client: TestClient, team: Team, session: Session
) -> None:
    job = add_job(session, team)
    for epoch, bacc, best in [(1, 0.3, True), (2, 0.5, True), (2, 0.4, True), (3, 0.2, False)]:
        add_event(session, job.id, EventKind.epoch, f"epoch {epoch}", epoch_data(epoch, bacc, best))
    session.commit()
    metrics = client.get(f"/v1/jobs/{job.id}/metrics", headers=auth(team.viewer)).json()
    assert [p["epoch"] for p in metrics["epochs"]] == [1, 2, 3]
    assert metrics["epochs"][1]["val_balanced_accuracy"] == 0.4  # the rerun after the resume
    assert metrics["best_epoch"] == 2
    assert metrics["report"] is None


def read_sse(client: TestClient, url: str, key: str) -> list[tuple[str, str]]:
    """(event name, data) pairs of a whole stream."""
    messages: list[tuple[str, str]] = []
    name = ""
    with client.stream("GET", url, headers=auth(key)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                messages.append((name, line.removeprefix("data: ")))
    return messages


def test_stream_sends_events_and_progress_as_they_happen_and_ends_when_done(
    client: TestClient, team: Team, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream, "POLL_SECONDS", 0.05)
    job = add_job(session, team)
    from datetime import timedelta

    assert claim_job(session, job.id, "w1", lease=timedelta(seconds=30))

    def worker() -> None:
        from app.jobs.lease import write_progress

        with get_sessionmaker()() as db:
            time.sleep(0.3)
            write_progress(db, job.id, "w1", phase="training", progress={"epoch": 1})
            time.sleep(0.3)
            transition(
                db,
                job.id,
                source=JobStatus.running,
                target=JobStatus.succeeded,
                lease_owner="w1",
                message="Succeeded.",
            )

    thread = threading.Thread(target=worker)
    thread.start()
    messages = read_sse(client, f"/v1/jobs/{job.id}/stream", team.viewer)
    thread.join()
    names = [name for name, _ in messages]
    assert names[-1] == "end"
    assert '"succeeded"' in messages[-1][1]
    assert names.count("job_event") == 2  # running, succeeded
    progress = [data for name, data in messages if name == "progress"]
    assert any('"training"' in data for data in progress)

    # Reconnecting with Last-Event-ID resumes after the events already seen.
    last = session.scalars(select(JobEvent.id).where(JobEvent.job_id == job.id)).all()[0]
    with client.stream(
        "GET",
        f"/v1/jobs/{job.id}/stream",
        headers={**auth(team.viewer), "Last-Event-ID": str(last)},
    ) as response:
        text = "".join(response.iter_text())
    assert text.count("event: job_event") == 1
