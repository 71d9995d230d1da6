"""Custom teachers verified by a real `fopro worker` on the cpu queue, on both deployments."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from tests.integration.jobs.conftest import Deployment
from tests.unit.jobs.ready_dataset import auth

pytestmark = pytest.mark.integration

ARCH = "test_resnet"


class Malicious:
    """Unpickling this would run a shell command."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("touch /tmp/fopro-integration-pwned",))


def upload(deployment: Deployment, path: Path, name: str) -> tuple[int, dict]:
    with path.open("rb") as handle:
        response = deployment.client.post(
            "/v1/teachers",
            headers=auth(deployment.key),
            data={"name": name, "arch": ARCH},
            files={"file": (path.name, handle, "application/octet-stream")},
        )
    return response.status_code, response.json()


def teacher_objects(deployment: Deployment) -> list[str]:
    return [o.key for o in deployment.store.list("teams/") if "/teachers/" in o.key]


def test_worker_verifies_uploads_and_bad_files_leave_nothing(
    deployment: Deployment, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    state = timm.create_model(ARCH, pretrained=False, num_classes=5).state_dict()
    good = tmp_path / "derm.safetensors"
    save_file(state, good)
    conv = next(k for k, v in state.items() if v.ndim == 4)
    wrong = tmp_path / "wrong.safetensors"
    save_file({**state, conv: torch.zeros(2, 3, 3, 3)}, wrong)
    trap = tmp_path / "trap.pth"
    torch.save({**state, "x": Malicious()}, trap)

    deployment.start_worker()
    status, teacher = upload(deployment, good, "derm-teacher")
    assert status == 201, (teacher, deployment.worker_logs())
    assert teacher["weights_sha256"] == hashlib.sha256(good.read_bytes()).hexdigest()
    assert teacher["feature_dim"] == timm.create_model(ARCH, num_classes=0).num_features

    status, body = upload(deployment, wrong, "wrong-shapes")
    assert status == 422
    assert f"{conv}: file (2, 3, 3, 3)" in body["error"]["message"]

    status, body = upload(deployment, trap, "booby-trapped")
    assert status == 422
    assert "posix.system" in body["error"]["message"]
    assert not Path("/tmp/fopro-integration-pwned").exists()

    assert len(teacher_objects(deployment)) == 1
    listed = deployment.client.get("/v1/teachers", headers=auth(deployment.key)).json()
    assert [t["name"] for t in listed["team"]] == ["derm-teacher"]
