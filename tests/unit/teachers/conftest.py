"""An in-process API whose torch weights check runs the worker task's body in-process."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import timm
import torch
from fastapi.testclient import TestClient
from safetensors.torch import save_file

from app.core.config import get_settings
from app.core.db import session_scope
from app.teachers.router import get_weights_verifier
from app.teachers.schemas import WeightsCheck
from app.teams.models import Role
from app.teams.service import create_api_key, create_team
from tests.conftest import Service
from workers.teacher_checks import verify_teacher_weights

TINY_ARCH = "test_resnet"  # ~0.4 M parameters: a custom teacher that uploads in milliseconds
OTHER_ARCH = "test_efficientnet"


class Malicious:
    """Unpickling this runs ``os.system``: what a booby-trapped checkpoint does."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned > /tmp/fopro-pwned",))


def verify_in_process(object_key: str, arch: str) -> WeightsCheck:
    """The cpu worker's task body, run in this process against the configured store."""
    return WeightsCheck.model_validate(verify_teacher_weights(object_key, arch))


@pytest.fixture
def client(embedded_service: Service) -> Iterator[TestClient]:
    from app.main import app

    app.dependency_overrides[get_weights_verifier] = lambda: verify_in_process
    try:
        with TestClient(app, raise_server_exceptions=False) as test_client:
            yield test_client
    finally:
        app.dependency_overrides.clear()


def make_team_key(name: str, role: Role = Role.member) -> tuple[str, dict[str, str]]:
    """Create team ``name`` with one key; returns (team_id, Authorization headers)."""
    with session_scope() as session:
        team = create_team(session, name)
        _, key = create_api_key(session, team, role, get_settings().secret_key)
        return team.id, {"Authorization": f"Bearer {key}"}


def state_dict_of(arch: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random-weight timm ``arch`` with its ImageNet-style classifier, as a state dict."""
    torch.manual_seed(seed)
    return timm.create_model(arch, pretrained=False, num_classes=10).state_dict()


@pytest.fixture
def weights_files(tmp_path: Path) -> dict[str, Path]:
    """Good and bad weights files for ``TINY_ARCH``, by what they are."""
    good = state_dict_of(TINY_ARCH)
    files = {
        "safetensors": tmp_path / "good.safetensors",
        "pth": tmp_path / "good.pth",
        "wrong_shapes": tmp_path / "wrong_shapes.safetensors",
        "other_arch": tmp_path / "other_arch.safetensors",
        "malicious": tmp_path / "malicious.pth",
        "truncated": tmp_path / "truncated.safetensors",
    }
    save_file(good, files["safetensors"])
    torch.save(good, files["pth"])
    first_conv = next(k for k, v in good.items() if v.ndim == 4)
    save_file({**good, first_conv: torch.zeros(3, 3, 3, 3)}, files["wrong_shapes"])
    save_file(state_dict_of(OTHER_ARCH), files["other_arch"])
    torch.save({**good, "payload": Malicious()}, files["malicious"])
    files["truncated"].write_bytes(files["safetensors"].read_bytes()[:-100])
    return files
