"""The cpu-queue task verifies the stored object itself, and says so when it is gone."""

from __future__ import annotations

from pathlib import Path

from app.core.config import get_settings
from app.core.storage import open_object_store
from tests.conftest import Service
from tests.unit.teachers.conftest import TINY_ARCH
from workers.teacher_checks import verify_teacher_weights


def test_task_verifies_the_stored_object(
    embedded_service: Service, weights_files: dict[str, Path]
) -> None:
    store = open_object_store(get_settings())
    good = "teams/t/teachers/a/weights.safetensors"
    bad = "teams/t/teachers/b/weights.safetensors"
    store.put_bytes(good, weights_files["safetensors"].read_bytes())
    store.put_bytes(bad, weights_files["wrong_shapes"].read_bytes())
    assert verify_teacher_weights(good, TINY_ARCH)["ok"] is True
    verdict = verify_teacher_weights(bad, TINY_ARCH)
    assert verdict["ok"] is False
    assert "shape" in verdict["reason"]


def test_task_reports_a_withdrawn_upload(embedded_service: Service) -> None:
    verdict = verify_teacher_weights("teams/t/teachers/gone/weights.pth", TINY_ARCH)
    assert verdict == {**verdict, "ok": False, "reason": "the upload was withdrawn"}
