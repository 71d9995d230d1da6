"""`fopro admin weights add`: only verified files land in the weights dir, atomically."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from app.core.config import get_settings
from fopro.cli import cli
from foprokd.zoo import find_weights, load_state_dict_file
from tests.conftest import Service
from tests.unit.teachers.conftest import Malicious, state_dict_of

runner = CliRunner()
ZOO_NAME = "mobilenetv3_small_100"  # the smallest built-in model: 1.5 M parameters


@pytest.fixture
def weights_dir(embedded_service: Service) -> Path:
    path = get_settings().weights_dir
    assert path is not None
    return path


def test_installs_a_verified_file_where_the_engine_looks(weights_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "download.safetensors"
    save_file(state_dict_of(ZOO_NAME), source)
    result = runner.invoke(cli, ["admin", "weights", "add", ZOO_NAME, str(source)])
    assert result.exit_code == 0, result.output
    installed = weights_dir / f"{ZOO_NAME}.safetensors"
    assert find_weights(ZOO_NAME, weights_dir) == installed
    assert installed.read_bytes() == source.read_bytes()
    assert hashlib.sha256(source.read_bytes()).hexdigest() in result.output
    assert [p.name for p in weights_dir.iterdir()] == [installed.name]

    # A newer .pth replaces it, and the old .safetensors no longer shadows it.
    newer = tmp_path / "newer.pth"
    torch.save(state_dict_of(ZOO_NAME, seed=1), newer)
    assert runner.invoke(cli, ["admin", "weights", "add", ZOO_NAME, str(newer)]).exit_code == 0
    assert find_weights(ZOO_NAME, weights_dir) == weights_dir / f"{ZOO_NAME}.pth"
    assert not installed.exists()
    loaded = load_state_dict_file(weights_dir / f"{ZOO_NAME}.pth")
    expected = state_dict_of(ZOO_NAME, seed=1)
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)


@pytest.mark.parametrize(
    ("name", "filename", "content", "reason"),
    [
        (ZOO_NAME, "b0.safetensors", lambda: state_dict_of("efficientnet_b0"), "does not match"),
        (ZOO_NAME, "trap.pth", lambda: {"x": Malicious()}, "could run code"),
        ("resnet1000", "r.safetensors", lambda: state_dict_of(ZOO_NAME), "not a built-in model"),
    ],
    ids=["wrong-architecture", "malicious-pickle", "unknown-name"],
)
def test_refuses_bad_files_and_installs_nothing(
    weights_dir: Path,
    tmp_path: Path,
    name: str,
    filename: str,
    content: Callable[[], dict[str, object]],
    reason: str,
) -> None:
    source = tmp_path / filename
    if filename.endswith(".safetensors"):
        save_file(content(), source)
    else:
        torch.save(content(), source)
    result = runner.invoke(cli, ["admin", "weights", "add", name, str(source)])
    assert result.exit_code == 1
    assert reason in result.output
    assert not weights_dir.exists() or list(weights_dir.iterdir()) == []
