"""``fopro_client`` installs and imports on a laptop without the server: its distribution needs
httpx and pydantic only, and no module of it loads torch, FastAPI or the service's packages."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import fopro_client

CLIENT_DIR = Path(fopro_client.__file__).resolve().parents[1]
FORBIDDEN = [
    "torch",
    "torchvision",
    "timm",
    "fastapi",
    "starlette",
    "sqlalchemy",
    "celery",
    "app",
    "workers",
    "foprokd",
    "fopro",
]

# Run in a fresh interpreter: a finder first on sys.meta_path refuses the server's packages.
PROBE = """
import importlib, pkgutil, sys
FORBIDDEN = {forbidden!r}
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in FORBIDDEN:
            raise ImportError(f"fopro_client imported {{name}}")
        return None
sys.meta_path.insert(0, Refuse())
import fopro_client
names = sorted(m.name for m in pkgutil.iter_modules(fopro_client.__path__, "fopro_client."))
for name in names:
    importlib.import_module(name)
print(" ".join(names))
"""


def run_probe(extra: str = "") -> subprocess.CompletedProcess[str]:
    """The probe in a fresh interpreter that sees only the client folder (and site-packages)."""
    return subprocess.run(
        [sys.executable, "-c", PROBE.format(forbidden=FORBIDDEN) + extra],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(CLIENT_DIR)},
        check=False,
    )


def test_every_client_module_imports_with_the_server_s_packages_blocked() -> None:
    result = run_probe()
    assert result.returncode == 0, result.stderr
    assert {"fopro_client.client", "fopro_client.cli", "fopro_client.models"} <= set(
        result.stdout.split()
    )


def test_the_blocking_finder_does_catch_a_forbidden_import() -> None:
    result = run_probe("\nimport fastapi\n")
    assert result.returncode != 0
    assert "fopro_client imported fastapi" in result.stderr


def requirement_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert match is not None, requirement
    return match.group(0).lower()


def test_the_distribution_depends_on_httpx_and_pydantic_only() -> None:
    project = tomllib.loads((CLIENT_DIR / "pyproject.toml").read_text())["project"]
    assert project["name"] == "fopro-client"
    assert sorted(requirement_name(r) for r in project["dependencies"]) == ["httpx", "pydantic"]
    assert sorted(requirement_name(r) for r in project["optional-dependencies"]["cli"]) == [
        "rich",
        "typer",
    ]
    assert project["scripts"]["fopro-client"] == "fopro_client.cli:main"
