"""/v1/teachers: the zoo with its weights, uploads verified strictly, and what jobs may name."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import timm
from fastapi.testclient import TestClient

from app.core.config import get_settings
from app.core.db import session_scope
from app.core.storage import open_object_store
from app.teachers.service import (
    TeacherWeightsMissing,
    UnknownTeacher,
    resolve_teacher,
    verify_on_worker,
)
from app.teams.models import Role
from foprokd.catalog import TEACHERS
from tests.conftest import Service
from tests.support.hub_cache import fill_hub_cache
from tests.unit.teachers.conftest import TINY_ARCH, make_team_key


def upload(
    client: TestClient,
    headers: dict[str, str],
    path: Path,
    *,
    name: str = "derm-teacher",
    arch: str = TINY_ARCH,
) -> dict:
    with path.open("rb") as handle:
        response = client.post(
            "/v1/teachers",
            headers=headers,
            data={"name": name, "arch": arch},
            files={"file": (path.name, handle, "application/octet-stream")},
        )
    return {"status": response.status_code, "body": response.json()}


def stored_keys(team_id: str) -> list[str]:
    return [o.key for o in open_object_store(get_settings()).list(f"teams/{team_id}/")]


def test_zoo_lists_the_engine_teachers_and_where_weights_are(client: TestClient) -> None:
    _, headers = make_team_key("radiology", Role.admin)
    zoo = client.get("/v1/teachers", headers=headers).json()["zoo"]
    assert [t["name"] for t in zoo] == list(TEACHERS)
    resnet50 = next(t for t in zoo if t["name"] == "resnet50")
    weights_dir = get_settings().weights_dir
    assert weights_dir is not None
    assert resnet50 == {
        "source": "zoo",
        "name": "resnet50",
        "arch": "resnet50",
        "num_params": 23_508_032,
        "feature_dim": 2048,
        "input_size": 224,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "weights_available": False,
        "weights_path": None,
        "expected_paths": [
            str(weights_dir / "resnet50.safetensors"),
            str(weights_dir / "resnet50.pth"),
        ],
    }
    weights_dir.mkdir(parents=True, exist_ok=True)
    (weights_dir / "resnet50.pth").write_bytes(b"placed by IT")
    zoo = client.get("/v1/teachers", headers=headers).json()["zoo"]
    resnet50 = next(t for t in zoo if t["name"] == "resnet50")
    assert resnet50["weights_available"] is True
    assert resnet50["weights_path"] == str(weights_dir / "resnet50.pth")


def test_only_admins_see_the_servers_file_system_paths(client: TestClient) -> None:
    weights_dir = get_settings().weights_dir
    assert weights_dir is not None
    weights_dir.mkdir(parents=True, exist_ok=True)
    (weights_dir / "resnet50.pth").write_bytes(b"placed by IT")
    for role in (Role.member, Role.viewer):
        _, headers = make_team_key(f"ward-{role.value}", role)
        response = client.get("/v1/teachers", headers=headers)
        assert str(weights_dir) not in response.text
        resnet50 = next(t for t in response.json()["zoo"] if t["name"] == "resnet50")
        assert resnet50["weights_path"] == "resnet50.pth"
        assert resnet50["expected_paths"] == ["resnet50.safetensors", "resnet50.pth"]


def test_zoo_weights_in_the_offline_hub_cache_count_as_installed(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    _, headers = make_team_key("pathology", Role.admin)
    cached = fill_hub_cache(tmp_path / "hub", "timm/efficientnet_b0.ra_in1k")
    zoo = {t["name"]: t for t in client.get("/v1/teachers", headers=headers).json()["zoo"]}
    assert zoo["efficientnet_b0"]["weights_available"] is True
    assert zoo["efficientnet_b0"]["weights_path"] == str(cached)
    assert zoo["resnet50"]["weights_available"] is False


@pytest.mark.parametrize("kind", ["safetensors", "pth"])
def test_upload_verifies_and_records_the_teacher(
    client: TestClient, weights_files: dict[str, Path], kind: str
) -> None:
    team_id, headers = make_team_key("radiology")
    created = upload(client, headers, weights_files[kind])
    assert created["status"] == 201, created
    teacher = created["body"]
    data = weights_files[kind].read_bytes()
    assert teacher["weights_sha256"] == hashlib.sha256(data).hexdigest()
    assert teacher["weights_bytes"] == len(data)
    assert teacher["arch"] == TINY_ARCH
    backbone = timm.create_model(TINY_ARCH, pretrained=False, num_classes=0)
    assert teacher["feature_dim"] == backbone.num_features
    assert teacher["num_params"] == sum(p.numel() for p in backbone.parameters())
    assert stored_keys(team_id) == [
        f"teams/{team_id}/teachers/{teacher['id']}/weights"
        + (".safetensors" if kind == "safetensors" else ".pth")
    ]
    listed = client.get("/v1/teachers", headers=headers).json()["team"]
    assert [t["id"] for t in listed] == [teacher["id"]]
    assert client.get(f"/v1/teachers/{teacher['id']}", headers=headers).json() == teacher


@pytest.mark.parametrize(
    ("kind", "arch", "reason"),
    [
        ("wrong_shapes", TINY_ARCH, "shape 1:"),
        ("other_arch", TINY_ARCH, "does not match"),
        ("safetensors", "not_a_timm_model", "not a timm architecture"),
        ("malicious", TINY_ARCH, "could run code"),
        ("truncated", TINY_ARCH, "truncated"),
    ],
)
def test_bad_uploads_get_422_with_the_reason_and_leave_nothing(
    client: TestClient, weights_files: dict[str, Path], kind: str, arch: str, reason: str
) -> None:
    team_id, headers = make_team_key("radiology")
    rejected = upload(client, headers, weights_files[kind], arch=arch)
    assert rejected["status"] == 422, rejected
    assert rejected["body"]["error"]["code"] == "weights_invalid"
    assert reason in rejected["body"]["error"]["message"]
    assert stored_keys(team_id) == []
    assert client.get("/v1/teachers", headers=headers).json()["team"] == []
    assert not Path("/tmp/fopro-pwned").exists()


def test_names_are_unique_and_cannot_shadow_the_zoo(
    client: TestClient, weights_files: dict[str, Path]
) -> None:
    _, headers = make_team_key("radiology")
    assert upload(client, headers, weights_files["safetensors"])["status"] == 201
    again = upload(client, headers, weights_files["safetensors"])
    assert (again["status"], again["body"]["error"]["code"]) == (409, "teacher_exists")
    zoo_name = upload(client, headers, weights_files["safetensors"], name="resnet50")
    assert zoo_name["status"] == 409
    bad_name = upload(client, headers, weights_files["safetensors"], name="../x")
    assert bad_name["status"] == 422
    _, other_headers = make_team_key("pathology")
    assert upload(client, other_headers, weights_files["safetensors"])["status"] == 201


def test_viewers_cannot_upload_and_other_teams_see_404(
    client: TestClient, weights_files: dict[str, Path]
) -> None:
    _, viewer = make_team_key("radiology-viewers", Role.viewer)
    assert upload(client, viewer, weights_files["safetensors"])["status"] == 403
    _, owner = make_team_key("radiology")
    teacher = upload(client, owner, weights_files["safetensors"])["body"]
    _, stranger = make_team_key("pathology")
    assert client.get(f"/v1/teachers/{teacher['id']}", headers=stranger).status_code == 404
    assert client.delete(f"/v1/teachers/{teacher['id']}", headers=stranger).status_code == 404
    assert client.get("/v1/teachers", headers=stranger).json()["team"] == []


def test_delete_removes_row_and_weights(client: TestClient, weights_files: dict[str, Path]) -> None:
    team_id, headers = make_team_key("radiology")
    teacher = upload(client, headers, weights_files["safetensors"])["body"]
    assert client.delete(f"/v1/teachers/{teacher['id']}", headers=headers).status_code == 204
    assert client.get(f"/v1/teachers/{teacher['id']}", headers=headers).status_code == 404
    assert stored_keys(team_id) == []


def test_resolve_teacher_names_the_file_to_fill(
    client: TestClient, weights_files: dict[str, Path]
) -> None:
    team_id, headers = make_team_key("radiology")
    weights_dir = get_settings().weights_dir
    assert weights_dir is not None
    with session_scope() as session:
        with pytest.raises(TeacherWeightsMissing) as missing:
            resolve_teacher(session, team_id, "convnext_tiny")
        assert missing.value.status_code == 422
        assert str(weights_dir / "convnext_tiny.safetensors") in missing.value.message
        assert "fopro admin weights add convnext_tiny" in missing.value.message
        assert missing.value.details["expected_paths"] == [
            str(weights_dir / "convnext_tiny.safetensors"),
            str(weights_dir / "convnext_tiny.pth"),
        ]
        with pytest.raises(UnknownTeacher):
            resolve_teacher(session, team_id, "derm-teacher")
        unweighted = resolve_teacher(session, team_id, "convnext_tiny", require_weights=False)
        assert (unweighted.source, unweighted.weights_path) == ("zoo", None)

    weights_dir.mkdir(parents=True, exist_ok=True)
    (weights_dir / "convnext_tiny.safetensors").write_bytes(b"x")
    teacher = upload(client, headers, weights_files["safetensors"])["body"]
    with session_scope() as session:
        zoo_choice = resolve_teacher(session, team_id, "convnext_tiny")
        assert (zoo_choice.source, zoo_choice.feature_dim) == ("zoo", 768)
        assert zoo_choice.weights_path == weights_dir / "convnext_tiny.safetensors"
        own = resolve_teacher(session, team_id, "derm-teacher")
        assert (own.source, own.arch, own.weights_sha256) == (
            "team",
            TINY_ARCH,
            teacher["weights_sha256"],
        )
        other_team, _ = make_team_key("pathology")
        with pytest.raises(UnknownTeacher):
            resolve_teacher(session, other_team, "derm-teacher")


def test_without_a_worker_the_upload_answers_503_and_leaves_nothing(
    embedded_service: Service, weights_files: dict[str, Path]
) -> None:
    from app.main import app
    from app.teachers.router import get_weights_verifier

    app.dependency_overrides[get_weights_verifier] = lambda: (
        lambda key, arch: verify_on_worker(key, arch, timeout_s=1.0)
    )
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            team_id, headers = make_team_key("radiology")
            answer = upload(client, headers, weights_files["safetensors"])
    finally:
        app.dependency_overrides.clear()
    assert answer["status"] == 503
    assert "fopro worker --queues cpu" in answer["body"]["error"]["message"]
    assert stored_keys(team_id) == []
