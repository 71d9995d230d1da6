"""``student_init``: a student trained from scratch needs no weights file, and the run says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from foprokd.cli import build_parser, main
from foprokd.export import load_exported
from tests.unit.engine.test_cli import image_folder  # noqa: F401  (the fixture)

TEACHER = "test_efficientnet"
STUDENT = "test_resnet"


@pytest.fixture
def teacher_weights(tmp_path: Path) -> Path:
    """Real (if random) teacher weights on disk, so no run below needs allow_random_weights."""
    torch.manual_seed(0)
    path = tmp_path / "teacher.safetensors"
    save_file(timm.create_model(TEACHER, pretrained=False, num_classes=0).state_dict(), path)
    return path


def _train(data: Path, tmp_path: Path, teacher: Path, *extra: str) -> int:
    return main(
        [
            "train", "--data", str(data), "--out", str(tmp_path / "run"),
            "--cache-dir", str(tmp_path / "cache"), "--weights-dir", str(tmp_path / "weights"),
            "--teacher", TEACHER, "--teacher-weights", str(teacher), "--student", STUDENT,
            "--image-size", "32", "--epochs", "1", "--batch-size", "8", "--device", "cpu",
            "--quiet", *extra,
        ]
    )  # fmt: skip


def test_the_option_comes_from_the_hyper_parameters() -> None:
    parser = build_parser()
    args = parser.parse_args(["train", "--data", "d", "--out", "o"])
    assert args.student_init == "imagenet"
    assert parser.parse_args(["train", "--data", "d", "--out", "o", "--student-init", "scratch"])
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--data", "d", "--out", "o", "--student-init", "random"])


def test_scratch_trains_without_student_weights_and_records_it(
    image_folder: Path,  # noqa: F811
    tmp_path: Path,
    teacher_weights: Path,
) -> None:
    assert _train(image_folder, tmp_path, teacher_weights, "--student-init", "scratch") == 0
    run = tmp_path / "run"
    assert json.loads((run / "run.json").read_text())["student_init"] == "scratch"
    assert json.loads((run / "metrics.json").read_text())["student_init"] == "scratch"
    exported = load_exported(run / "student")
    assert exported.config["student_init"] == "scratch"
    card = json.loads((run / "student" / "model_card.json").read_text())
    assert card["hyper_parameters"]["student_init"] == "scratch"
    assert "| student_init | scratch |" in (run / "student" / "model_card.md").read_text()


def test_imagenet_init_still_refuses_a_missing_student_file_before_decoding(
    image_folder: Path,  # noqa: F811
    tmp_path: Path,
    teacher_weights: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert _train(image_folder, tmp_path, teacher_weights) == 2
    assert str(tmp_path / "weights" / f"{STUDENT}.safetensors") in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()


def test_scratch_with_a_student_weights_file_is_a_contradiction(
    image_folder: Path,  # noqa: F811
    tmp_path: Path,
    teacher_weights: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    extra = ("--student-init", "scratch", "--student-weights", str(teacher_weights))
    assert _train(image_folder, tmp_path, teacher_weights, *extra) == 2
    assert "student_init is scratch" in capsys.readouterr().err
