"""Every remote ``fopro`` command against a live service on both deployments, through the root
command (so the mount is tested too): what it prints with ``--json``, and the exit code a script
would branch on."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from click.testing import Result
from safetensors.torch import save_file
from typer.testing import CliRunner

import fopro_client
from fopro.cli import cli
from fopro_client import Event
from fopro_client.cli import ExitCode
from foprokd.synthetic import Member, sample_dataset, write_archive
from tests.integration.client.conftest import JOB, Journey, Live, sample_archive

pytestmark = [pytest.mark.integration, pytest.mark.slow]

Fopro = Callable[..., Result]


@pytest.fixture
def fopro(live: Live, tmp_path: Path) -> Fopro:
    """``fopro(*args, key=..., url=..., input=...)``: run the command with FOPRO_URL and
    FOPRO_API_KEY set (``None`` leaves one unset) and a private config folder."""

    def run(
        *args: str, key: str | None = live.key, url: str | None = live.url, **kw: Any
    ) -> Result:
        env = {"FOPRO_URL": url, "FOPRO_API_KEY": key, "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
        return CliRunner().invoke(cli, list(args), env=env, **kw)

    return run


def json_of(result: Result) -> Any:
    assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr)
    return json.loads(result.stdout)


def test_login_saves_a_checked_key_the_other_commands_use(
    fopro: Fopro, live: Live, tmp_path: Path
) -> None:
    wrong = fopro("login", "--url", live.url, "--api-key", "fpk_wrong", key=None, url=None)
    assert wrong.exit_code == ExitCode.AUTH
    saved = tmp_path / "xdg" / "fopro" / "config.json"
    assert not saved.exists()
    result = fopro("login", "--url", live.url, key=None, url=None, input=f"{live.key}\n")
    assert result.exit_code == 0, result.output
    assert json.loads(saved.read_text()) == {"url": live.url, "api_key": live.key}
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    # No FOPRO_URL / FOPRO_API_KEY: the saved ones answer.
    assert json_of(fopro("datasets", "list", "--json", key=None, url=None))["total"] >= 0


def test_dataset_commands(fopro: Fopro, tmp_path: Path) -> None:
    archive, sample = sample_archive(tmp_path / "cli.zip", seed=2)
    dataset = json_of(fopro("datasets", "upload", str(archive), "--name", "cli-set", "--json"))
    assert dataset["status"] == "ready"
    assert dataset["classes"] == sample.classes
    listed = json_of(fopro("datasets", "list", "--json", "--status", "ready"))
    assert dataset["id"] in [d["id"] for d in listed["items"]]
    shown = fopro("datasets", "show", dataset["id"])
    assert shown.exit_code == 0
    assert "cli-set" in shown.stdout
    assert "class counts" in shown.stdout

    taken = fopro("datasets", "upload", str(archive), "--name", "cli-set", "--json")
    assert taken.exit_code == ExitCode.CONFLICT
    assert json.loads(taken.stderr)["error"]["code"] == "dataset_name_taken"

    hostile = [*sample_dataset(classes=2, head=4, seed=6).members, Member("/etc/evil.png", b"x")]
    bad = fopro("datasets", "upload", str(write_archive(tmp_path / "bad.zip", hostile, "zip")))
    assert bad.exit_code == ExitCode.FAILED
    assert "/etc/evil.png" in bad.stderr

    assert json_of(fopro("datasets", "delete", dataset["id"], "--json")) == {
        "deleted": dataset["id"]
    }
    assert fopro("datasets", "show", dataset["id"]).exit_code == ExitCode.NOT_FOUND


def test_job_commands_on_a_finished_job(fopro: Fopro, journey: Journey, tmp_path: Path) -> None:
    job_id = journey.job.id
    listed = json_of(fopro("jobs", "list", "--json", "--dataset", journey.dataset.id))
    assert [j["id"] for j in listed["items"]] == [job_id]
    assert json_of(fopro("jobs", "show", job_id, "--json"))["status"] == "succeeded"
    assert "report: " in fopro("jobs", "show", job_id).stdout

    watched = fopro("jobs", "watch", job_id)
    assert watched.exit_code == ExitCode.OK, watched.output
    assert f"{job_id} [succeeded]" in watched.stdout
    lines = [
        json.loads(line) for line in fopro("jobs", "watch", job_id, "--json").stdout.splitlines()
    ]
    assert lines[-1] == {"type": "end", "status": "succeeded", "reason": None}
    assert [line["id"] for line in lines if line["type"] == "event"] == [
        u.id for u in journey.updates if isinstance(u, Event)
    ]

    folder = tmp_path / "onnx"
    paths = json_of(
        fopro("jobs", "download", job_id, "--dir", str(folder), "--name", "student.onnx", "--json")
    )
    assert paths == [str(folder / "student.onnx")]
    onnx = next(p for p in journey.downloads if p.name == "student.onnx")
    assert (folder / "student.onnx").read_bytes() == onnx.read_bytes()

    answer = json_of(fopro("predict", job_id, *map(str, journey.images), "--top-k", "2", "--json"))
    assert [len(p["top_k"]) for p in answer["predictions"]] == [2, 2]
    assert "query-0.png: " in fopro("predict", job_id, str(journey.images[0])).stdout
    assert fopro("predict", "job_nope", str(journey.images[0])).exit_code == ExitCode.NOT_FOUND


def test_cancel_retry_and_delete(fopro: Fopro, journey: Journey) -> None:
    params = [f"--param={k}={json.dumps(v)}" for k, v in {**JOB["params"], "epochs": 50}.items()]
    submit = ["jobs", "submit", "--dataset", journey.dataset.id, "--teacher", "resnet18"]
    first = json_of(fopro(*submit, "--student", "resnet18", "--method", "ce", *params, "--json"))
    assert first["params"]["epochs"] == 50
    cancelled = json_of(fopro("jobs", "cancel", first["id"], "--json"))
    assert cancelled["status"] == "cancelled" or cancelled["cancel_requested"]
    assert fopro("jobs", "watch", first["id"]).exit_code == ExitCode.FAILED

    retry = json_of(fopro("jobs", "retry", first["id"], "--json"))
    assert retry["retry_of"] == first["id"]
    json_of(fopro("jobs", "cancel", retry["id"], "--json"))
    assert fopro("jobs", "watch", retry["id"], "--json").exit_code == ExitCode.FAILED
    assert fopro("jobs", "retry", journey.job.id).exit_code == ExitCode.CONFLICT  # succeeded

    for job_id in (retry["id"], first["id"]):
        assert json_of(fopro("jobs", "delete", job_id, "--json")) == {"deleted": job_id}
    assert fopro("jobs", "show", first["id"]).exit_code == ExitCode.NOT_FOUND


def test_teacher_commands(fopro: Fopro, live: Live, tmp_path: Path) -> None:
    torch.manual_seed(0)
    weights = tmp_path / "derm-teacher.safetensors"
    save_file(timm.create_model("test_resnet", num_classes=3).state_dict(), weights)
    args = ["teachers", "upload", str(weights), "--name", "derm-teacher", "--arch", "test_resnet"]
    teacher = json_of(fopro(*args, "--json"))
    assert teacher["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert fopro(*args).exit_code == ExitCode.CONFLICT  # the name is taken now
    catalog = json_of(fopro("teachers", "list", "--json"))
    assert [t["name"] for t in catalog["team"]] == ["derm-teacher"]
    assert "resnet18" in [t["name"] for t in catalog["zoo"]]
    assert "derm-teacher" in fopro("teachers", "list").stdout
    viewer = fopro(
        "teachers",
        "upload",
        str(weights),
        "--name",
        "x",
        "--arch",
        "test_resnet",
        key=live.viewer_key,
    )
    assert viewer.exit_code == ExitCode.AUTH


def test_the_fopro_process_runs_the_client_commands(live: Live, journey: Journey) -> None:
    client_dir = Path(fopro_client.__file__).resolve().parents[1]
    env = {
        **os.environ,
        "FOPRO_URL": live.url,
        "FOPRO_API_KEY": live.key,
        "PYTHONPATH": os.pathsep.join([str(client_dir), os.environ.get("PYTHONPATH", "")]),
    }

    def fopro(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "fopro", *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, check=False)

    shown = fopro("jobs", "show", journey.job.id, "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["id"] == journey.job.id
    missing = fopro("jobs", "show", "job_nope", "--json")
    assert missing.returncode == ExitCode.NOT_FOUND
    assert json.loads(missing.stderr)["error"]["code"] == "not_found"
