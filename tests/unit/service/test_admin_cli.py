"""`fopro admin`: keys are printed once and only their digests are stored."""

from __future__ import annotations

from sqlalchemy import select
from typer.testing import CliRunner

from app.core.config import get_settings
from app.core.db import session_scope
from app.core.security import key_digest
from app.teams.models import ApiKey
from fopro.cli import cli
from tests.conftest import Service

runner = CliRunner()


def test_create_team_and_key_then_revoke(embedded_service: Service) -> None:
    created = runner.invoke(cli, ["admin", "create-team", "oncology"])
    assert created.exit_code == 0, created.output
    assert "created team oncology" in created.output

    issued = runner.invoke(cli, ["admin", "create-key", "oncology", "--role", "viewer"])
    assert issued.exit_code == 0, issued.output
    plaintext = issued.stdout.strip().splitlines()[-1]
    assert plaintext.startswith("fpk_")
    with session_scope() as session:
        key = session.scalars(select(ApiKey)).one()
        assert key.role == "viewer"
        assert key.digest == key_digest(plaintext, get_settings().secret_key)
        prefix = key.prefix

    listed = runner.invoke(cli, ["admin", "list-keys", "oncology"])
    assert prefix in listed.output
    assert plaintext not in listed.output
    assert "active" in listed.output

    revoked = runner.invoke(cli, ["admin", "revoke-key", prefix])
    assert revoked.exit_code == 0
    assert "revoked" in runner.invoke(cli, ["admin", "list-keys", "oncology"]).output


def test_errors_are_one_line_not_tracebacks(embedded_service: Service) -> None:
    runner.invoke(cli, ["admin", "create-team", "dup"])
    again = runner.invoke(cli, ["admin", "create-team", "dup"])
    assert again.exit_code == 1
    assert "already exists" in again.output
    missing = runner.invoke(cli, ["admin", "create-key", "nobody"])
    assert missing.exit_code == 1
    assert "create-team" in missing.output
    assert "Traceback" not in missing.output


def test_the_signing_key_is_public_and_the_same_in_the_api_and_the_cli(
    embedded_service: Service,
) -> None:
    from fastapi.testclient import TestClient

    from app.main import create_app
    from foprokd.signing import load_public_key

    with TestClient(create_app()) as client:
        answer = client.get("/.well-known/fopro-signing-key")  # no API key: a public key is public
        assert answer.status_code == 200, answer.text
        assert client.get("/.well-known/fopro-signing-key").json() == answer.json()
    printed = runner.invoke(cli, ["admin", "signing-key"])
    assert printed.exit_code == 0, printed.output
    assert printed.stdout == answer.json()["public_key_pem"]
    assert answer.json()["key_id"] in printed.stderr
    load_public_key(printed.stdout)
    path = get_settings().bundle_signing_key
    assert path is not None
    assert path.parent.parent == get_settings().data_dir
