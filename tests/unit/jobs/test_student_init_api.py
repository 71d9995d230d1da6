"""``params.student_init``: ``scratch`` needs no student weights; ``imagenet`` still does."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.core.config import get_settings
from app.jobs.models import Job
from tests.unit.jobs.conftest import Team
from tests.unit.jobs.ready_dataset import auth


def _submit(client: TestClient, team: Team, **params: Any) -> Any:
    # bsm never loads the teacher, so only the student's weights are in question here.
    body = {
        "dataset_id": team.dataset_id,
        "teacher": "resnet18",
        "student": "mobilenetv3_large_100",
        "method": "bsm",
        "params": {"epochs": 1, "image_size": 32, **params},
    }
    return client.post("/v1/jobs", json=body, headers=auth(team.member))


def test_scratch_is_accepted_without_student_weights(
    client: TestClient, team: Team, session: Session
) -> None:
    response = _submit(client, team, student_init="scratch")
    assert response.status_code == 201, response.text
    job = session.get_one(Job, response.json()["id"])
    assert job.params["student_init"] == "scratch"
    assert job.params["allow_random_weights"] is False


def test_imagenet_without_student_weights_is_refused_naming_the_file(
    client: TestClient, team: Team
) -> None:
    weights_dir = get_settings().weights_dir
    assert weights_dir is not None
    response = _submit(client, team, student_init="imagenet")
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "student_weights_missing"
    assert str(weights_dir / "mobilenetv3_large_100.safetensors") in error["message"]
    assert "student_init" in error["message"]


def test_an_unknown_init_is_a_validation_error(client: TestClient, team: Team) -> None:
    response = _submit(client, team, student_init="random")
    assert response.status_code == 422
    assert "student_init" in response.text
