"""The root ``fopro`` command carries the client's commands when the client is installed, and
still runs the service (serve, worker, ...) where it is not, as in the API and worker images."""

from __future__ import annotations

import os
import subprocess
import sys

from typer.testing import CliRunner

from fopro.cli import cli

SERVICE_COMMANDS = {"serve", "worker", "up", "migrate", "admin"}
CLIENT_COMMANDS = {"datasets", "jobs", "teachers", "predict", "login"}

WITHOUT_CLIENT = """
import sys
class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "fopro_client":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Absent())
sys.argv = ["fopro", "--help"]
from fopro.cli import main
main()
"""


def command_names(help_text: str) -> set[str]:
    return {word for word in SERVICE_COMMANDS | CLIENT_COMMANDS if f" {word} " in help_text}


def test_the_root_command_mounts_the_client_commands() -> None:
    result = CliRunner().invoke(cli, ["--help"], terminal_width=200)
    assert result.exit_code == 0
    assert command_names(result.stdout) == SERVICE_COMMANDS | CLIENT_COMMANDS
    jobs = CliRunner().invoke(cli, ["jobs", "--help"], terminal_width=200)
    for command in ("submit", "list", "show", "watch", "cancel", "retry", "download", "delete"):
        assert f" {command} " in jobs.stdout


def test_the_service_commands_work_without_the_client() -> None:
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_CLIENT],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert command_names(result.stdout) == SERVICE_COMMANDS
