"""docker-compose.yml and the Dockerfile cannot run here (no Docker engine): cross-check them
against the code instead, so a renamed setting or command breaks a test, not a deployment."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.main import get_command

from app.core.config import Settings
from fopro.cli import cli

ROOT = Path(__file__).resolve().parents[3]
EXPECTED_SERVICES = {
    "postgres",
    "redis",
    "minio",
    "minio-init",
    "migrate",
    "api",
    "worker-cpu",
    "worker-gpu",
    "flower",
    "prometheus",
    "grafana",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def _fopro_commands() -> set[str]:
    group = get_command(cli)
    names = set(group.commands)  # type: ignore[attr-defined]
    return names


def test_compose_has_every_service_with_healthchecks_and_named_volumes(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert set(services) == EXPECTED_SERVICES
    for name in ("postgres", "redis", "minio", "api"):
        assert "healthcheck" in services[name], name
    declared = set(compose["volumes"])
    for service in services.values():
        for mount in service.get("volumes", []):
            source = mount.split(":", 1)[0]
            if source.startswith("./"):  # a bind mount of a file or folder of this repository
                assert (ROOT / source).exists(), f"{source} is not in the repository"
            else:
                assert source in declared, f"volume {source} is not declared"


def test_every_fopro_variable_in_compose_is_a_setting(compose: dict[str, Any]) -> None:
    fields = {f"FOPRO_{name.upper()}" for name in Settings.model_fields}
    seen: set[str] = set()
    for service in compose["services"].values():
        env = service.get("environment") or {}
        seen |= {k for k in env if k.startswith("FOPRO_")}
    assert seen, "compose sets no FOPRO_ variables"
    assert seen <= fields, f"unknown settings in compose: {sorted(seen - fields)}"
    # Production must not run on the embedded defaults.
    for required in (
        "FOPRO_DATABASE_URL",
        "FOPRO_BROKER_URL",
        "FOPRO_STORAGE_URL",
        "FOPRO_SECRET_KEY",
    ):
        assert required in seen


def test_compose_commands_exist_in_the_cli(compose: dict[str, Any]) -> None:
    commands = _fopro_commands()
    used = set()
    for service in compose["services"].values():
        command = service.get("command")
        if isinstance(command, list) and command and command[0] == "fopro":
            used.add(command[1])
            assert command[1] in commands, command
    assert {"migrate", "serve", "worker"} <= used


def test_gpu_worker_reserves_an_nvidia_device_and_listens_only_to_gpu(
    compose: dict[str, Any],
) -> None:
    gpu = compose["services"]["worker-gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia"
    assert "gpu" in devices[0]["capabilities"]
    assert gpu["command"][gpu["command"].index("--queues") + 1] == "gpu"
    cpu = compose["services"]["worker-cpu"]
    assert cpu["command"][cpu["command"].index("--queues") + 1] == "cpu"


def test_dockerfile_targets_match_compose_and_the_api_image_has_no_torch(
    compose: dict[str, Any], dockerfile: str
) -> None:
    stages = dict(re.findall(r"^FROM\s+(\S+)\s+AS\s+(\S+)", dockerfile, flags=re.M | re.I))
    targets = set(stages.values())
    for service in compose["services"].values():
        build = service.get("build")
        if build:
            assert build["target"] in targets
    assert {"api", "worker"} <= targets
    assert "cuda" in next(base for base, name in stages.items() if name == "worker")
    # The API stages are everything between the first FROM and the worker's FROM.
    body = dockerfile[dockerfile.index("\nFROM ") :]
    api_part = body[: body.index(" AS worker")]
    assert "[api]" in api_part
    assert "[worker]" not in api_part
    assert "torch" not in api_part.lower()
    for cmd in re.findall(r'^CMD \["fopro", "(\w+)"', dockerfile, flags=re.M):
        assert cmd in _fopro_commands()


def test_api_healthcheck_probes_a_real_route(compose: dict[str, Any]) -> None:
    from app.main import app

    paths = set(app.openapi()["paths"])
    probe = " ".join(compose["services"]["api"]["healthcheck"]["test"])
    assert any(p in probe for p in ("/readyz", "/healthz"))
    assert {"/readyz", "/healthz"} <= paths
