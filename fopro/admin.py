"""``fopro admin``: teams, their quotas and API keys (each key printed once) and the zoo's
pre-trained weights."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer

from app.core.config import get_settings
from app.core.errors import ServiceError
from app.teams.models import Role

admin = typer.Typer(no_args_is_help=True, help="Teams and API keys (prints keys once).")
weights = typer.Typer(no_args_is_help=True, help="Pre-trained weights of the built-in zoo.")
admin.add_typer(weights, name="weights")


@admin.command("create-team")
def create_team_cmd(name: str) -> None:
    """Create a team."""
    from app.core.db import session_scope
    from app.teams.service import create_team

    with _ServiceErrorsToExit(), session_scope() as session:
        team = create_team(session, name)
        typer.echo(f"created team {team.name} ({team.id})")


@admin.command("create-key")
def create_key_cmd(
    team: str,
    role: Annotated[Role, typer.Option(help="admin, member or viewer.")] = Role.member,
    label: Annotated[str | None, typer.Option(help="A note for who holds the key.")] = None,
    expires_in_days: Annotated[
        int | None,
        typer.Option(min=1, max=3650, help="Days until the key stops working (default: never)."),
    ] = None,
) -> None:
    """Issue an API key for TEAM (name or id). The key is printed once and never stored."""
    from app.core.db import session_scope, utcnow
    from app.teams.service import create_api_key, find_team

    settings = get_settings()
    expires_at = None if expires_in_days is None else utcnow() + timedelta(days=expires_in_days)
    with _ServiceErrorsToExit(), session_scope() as session:
        key, plaintext = create_api_key(
            session,
            find_team(session, team),
            role,
            settings.secret_key,
            label,
            expires_at=expires_at,
            max_active=settings.max_active_keys,
        )
        ends = f", expires {expires_at:%Y-%m-%d %H:%M} UTC" if expires_at else ""
        typer.echo(
            f"# {key.role} key {key.prefix} ({key.id}) for team {team}{ends}; shown once:",
            err=True,
        )
        typer.echo(plaintext)


@admin.command("revoke-key")
def revoke_key_cmd(key: Annotated[str, typer.Argument(help="Key id or display prefix.")]) -> None:
    """Revoke an API key at once."""
    from app.core.db import session_scope
    from app.teams.service import revoke_api_key

    with _ServiceErrorsToExit(), session_scope() as session:
        row = revoke_api_key(session, key)
        typer.echo(f"revoked {row.prefix} ({row.id})")


@admin.command("list-keys")
def list_keys_cmd(team: str) -> None:
    """List TEAM's keys (prefixes only; keys themselves are never stored)."""
    from app.core.db import session_scope, utcnow
    from app.teams.service import find_team

    now = utcnow()
    with _ServiceErrorsToExit(), session_scope() as session:
        for key in find_team(session, team).api_keys:
            if key.revoked_at:
                state = "revoked"
            elif key.expires_at and key.expires_at <= now:
                state = "expired"
            elif key.expires_at:
                state = f"active until {key.expires_at:%Y-%m-%dT%H:%M}Z"
            else:
                state = "active"
            typer.echo(f"{key.id}\t{key.prefix}\t{key.role}\t{state}\t{key.label or ''}")


@admin.command("signing-key")
def signing_key() -> None:
    """Print the public key workers sign bundles with (PEM; created on first use), to hand to
    clinic IT for `fopro verify-bundle DIR --public-key FILE`. The API serves it too, at
    GET /.well-known/fopro-signing-key."""
    from foprokd.signing import key_id, load_or_create_private_key, public_key_pem

    path = get_settings().bundle_signing_key
    assert path is not None  # filled by Settings
    public = load_or_create_private_key(path).public_key()
    typer.echo(f"# key id {key_id(public)} (private key: {path})", err=True)
    typer.echo(public_key_pem(public), nl=False)


@admin.command("purge-audit")
def purge_audit_cmd(
    older_than_days: Annotated[
        int | None,
        typer.Option(min=1, help="Default: FOPRO_AUDIT_RETENTION_DAYS."),
    ] = None,
) -> None:
    """Delete audit records older than the retention (every worker's reaper also does, each
    sweep); nothing else ever deletes them."""
    from app.audit.service import purge_expired
    from app.core.db import session_scope

    days = older_than_days or get_settings().audit_retention_days
    with _ServiceErrorsToExit(), session_scope() as session:
        removed = purge_expired(session, days)
    typer.echo(f"purged {removed} audit records older than {days} days")


@admin.command("set-quota")
def set_quota_cmd(
    team: str,
    max_active_jobs: Annotated[
        int | None, typer.Option(min=1, help="Queued + running jobs at once.")
    ] = None,
    max_stored_bytes: Annotated[
        int | None, typer.Option(min=1, help="Bytes of datasets, artifacts and teachers.")
    ] = None,
    max_datasets: Annotated[int | None, typer.Option(min=1, help="Datasets kept.")] = None,
    reset: Annotated[
        bool, typer.Option("--reset", help="Drop TEAM's overrides first: back to the defaults.")
    ] = False,
) -> None:
    """Override TEAM's quotas (the FOPRO_MAX_* settings apply to what is not overridden), then
    print its use against each."""
    from app.core.db import session_scope
    from app.teams.quotas import team_usage
    from app.teams.service import find_team

    settings = get_settings()
    with _ServiceErrorsToExit(), session_scope() as session:
        row = find_team(session, team)
        if reset:
            row.max_active_jobs = row.max_stored_bytes = row.max_datasets = None
        if max_active_jobs is not None:
            row.max_active_jobs = max_active_jobs
        if max_stored_bytes is not None:
            row.max_stored_bytes = max_stored_bytes
        if max_datasets is not None:
            row.max_datasets = max_datasets
        session.flush()
        usage = team_usage(session, row, settings)
        for name, use, override in (
            ("max_active_jobs", usage.active_jobs, row.max_active_jobs),
            ("max_stored_bytes", usage.stored_bytes, row.max_stored_bytes),
            ("max_datasets", usage.datasets, row.max_datasets),
        ):
            source = "team" if override is not None else "default"
            typer.echo(f"{row.name}\t{name}\t{use.used} of {use.limit}\t({source})")


@weights.command("add")
def add_weights_cmd(
    name: Annotated[str, typer.Argument(help="Zoo model name, e.g. resnet50.")],
    file: Annotated[Path, typer.Argument(help="A .safetensors or torch.save state dict.")],
) -> None:
    """Verify FILE strictly for zoo model NAME and install it into the weights dir (atomically).

    Needs the worker extra (torch, timm): this is how an offline cluster is seeded.
    """
    from app.teachers.service import install_zoo_weights
    from workers.teacher_checks import inspect_weights

    weights_dir = get_settings().weights_dir
    assert weights_dir is not None  # Settings derives it from the data dir
    with _ServiceErrorsToExit():
        installed = install_zoo_weights(name, file, weights_dir, verify=inspect_weights)
    typer.echo(
        f"installed {name} ({installed.check.num_params} parameters) at {installed.path} "
        f"sha256 {installed.sha256}"
    )


@weights.command("pull")
def pull_weights_cmd(
    names: Annotated[list[str], typer.Argument(help="Zoo model names, e.g. resnet50 resnet18.")],
) -> None:
    """Download timm's published weights for zoo models NAMES from the Hugging Face hub
    (``HF_ENDPOINT`` for a mirror), verify them strictly and install them (atomically).

    Needs the worker extra and a machine that is online; offline it fails at once with the URL
    it tried: download that file elsewhere and use ``fopro admin weights add NAME FILE``.
    """
    # The weights file is the only thing to fetch: no telemetry from a hospital's machines.
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    from app.teachers.hub_weights import hub_weights_url, pull_zoo_weights
    from workers.teacher_checks import inspect_weights

    weights_dir = get_settings().weights_dir
    assert weights_dir is not None  # Settings derives it from the data dir
    for name in names:
        with _ServiceErrorsToExit():
            typer.echo(f"pulling {name} from {hub_weights_url(name)}", err=True)
            installed = pull_zoo_weights(name, weights_dir, verify=inspect_weights)
        typer.echo(
            f"installed {name} ({installed.check.num_params} parameters) at {installed.path} "
            f"sha256 {installed.sha256}"
        )


class _ServiceErrorsToExit:
    """Turn a ServiceError into a one-line message and exit code 1 instead of a traceback."""

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, _tb: object
    ) -> None:
        if isinstance(exc, ServiceError):
            typer.echo(f"error: {exc.message}", err=True)
            raise typer.Exit(1) from exc
