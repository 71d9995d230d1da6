"""The root ``fopro`` command: run the service (serve, worker, up), migrate the schema, and mount
``fopro admin`` from ``fopro.admin`` and the remote commands (datasets, jobs, teachers, predict,
login) from ``fopro_client.cli``."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path
from typing import Annotated

import typer

from app.core.config import get_settings
from fopro.admin import admin
from fopro.demo import demo
from fopro.local_service import LocalService

cli = typer.Typer(no_args_is_help=True, help="FoPro-KD Service: distillation as a service.")
cli.add_typer(admin, name="admin")
cli.command()(demo)
try:
    from fopro_client.cli import app as client_commands
except ModuleNotFoundError as exc:  # the API and worker images ship without `pip install ./client`
    if exc.name != "fopro_client":
        raise
else:
    cli.add_typer(client_commands)

HostOpt = Annotated[str | None, typer.Option(help="Interface to bind (default FOPRO_API_HOST).")]
PortOpt = Annotated[int | None, typer.Option(help="Port to bind (default FOPRO_API_PORT).")]


@cli.command()
def migrate(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply database migrations up to REVISION (default: head)."""
    from app.core.migrate import upgrade

    settings = get_settings()
    upgrade(settings.database_url, revision)
    typer.echo(f"database at {revision}: {_redact(settings.database_url)}")


@cli.command()
def serve(host: HostOpt = None, port: PortOpt = None, workers: int = 1) -> None:
    """Run the HTTP API (uvicorn)."""
    import uvicorn

    from app.core.logging_config import api_log_config

    settings = get_settings()
    uvicorn.run(
        "app.main:app",
        host=host or settings.api_host,
        port=port or settings.api_port,
        workers=workers,
        proxy_headers=True,
        log_level="info",
        log_config=api_log_config(),
    )


@cli.command()
def worker(
    queues: Annotated[str, typer.Option(help="Comma-separated queues: cpu, gpu.")] = "cpu,gpu",
    name: Annotated[str | None, typer.Option(help="Worker node name.")] = None,
    loglevel: str = "info",
    beat: Annotated[
        bool, typer.Option(help="Also run Celery beat here (schedules the job reaper).")
    ] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="Serve this worker's /metrics on PORT (default FOPRO_WORKER_METRICS_PORT)."
        ),
    ] = None,
) -> None:
    """Run a Celery worker (solo pool: one process, one task at a time).

    Every worker reaps jobs of dead workers in a background thread, so no beat is needed;
    ``--beat`` (on exactly one cpu worker) adds a scheduled ``reap_jobs`` task as well.

    Run one worker per GPU and pin it with CUDA_VISIBLE_DEVICES, e.g.
    ``CUDA_VISIBLE_DEVICES=1 fopro worker --queues gpu --name gpu1``. CUDA is only initialised
    in the training child (forked from the worker's forkserver, which never touches CUDA).
    CPU-only hosts run the same command.
    """
    if metrics_port is not None:
        os.environ["FOPRO_WORKER_METRICS_PORT"] = str(metrics_port)
        get_settings.cache_clear()
    from workers.celery_app import celery_app

    unknown = {q.strip() for q in queues.split(",")} - {"cpu", "gpu"}
    if unknown:
        raise typer.BadParameter(f"unknown queue(s) {sorted(unknown)}; use cpu and/or gpu")
    node = name or f"{queues.replace(',', '-')}-{os.getpid()}@{socket.gethostname()}"
    celery_app.worker_main(
        [
            "--quiet",  # no banner: every line the worker writes is a JSON log record
            "worker",
            "--pool=solo",
            "--concurrency=1",
            f"--queues={queues}",
            f"--hostname={node}",
            f"--loglevel={loglevel}",
            "--without-gossip",
            "--without-mingle",
            *(
                ["--beat", f"--schedule={get_settings().data_dir / 'celerybeat-schedule'}"]
                if beat
                else []
            ),
        ]
    )


@cli.command()
def up(host: HostOpt = None, port: PortOpt = None) -> None:
    """Migrate, then start the API, a cpu worker and a gpu worker as child processes; Ctrl-C
    stops them all."""
    settings = get_settings()
    settings.ensure_dirs()
    migrate("head")
    host = host or settings.api_host
    port = port or settings.api_port
    service = LocalService.start(host, port)
    stopping = False

    def _stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    url = service.url
    if service.wait_ready(timeout_s=60):
        typer.echo(f"FoPro-KD Service is up at {url}  (readiness: {url}/readyz, docs: {url}/docs)")
        typer.echo(f"data dir: {settings.data_dir}; create a key: fopro admin create-team NAME")
    elif service.alive():
        typer.echo(f"not ready after 60 s; see {url}/readyz", err=True)
    try:
        while not stopping and service.alive():
            time.sleep(0.5)
    finally:
        service.stop()
    failed = service.failed()
    if failed and not stopping:
        typer.echo(f"stopped because a child exited with an error: {failed}", err=True)
        raise typer.Exit(1)


@cli.command("verify-bundle")
def verify_bundle_command(
    folder: Annotated[
        Path, typer.Argument(help="A student folder holding bundle.json and its files.")
    ],
    public_key: Annotated[
        list[Path] | None,
        typer.Option(
            help="Also require bundle.sig.json to be signed by this key: PEM, or the JSON the "
            "service's GET /.well-known/fopro-signing-key answers. Repeat to trust several."
        ),
    ] = None,
) -> None:
    """Prove this machine's onnxruntime gives the bundle's answers: every file's sha256, then
    each model on the golden inputs against the golden outputs; with --public-key, that the
    service signed it. Exit 1 when a check fails."""
    from foprokd.bundle import verify_bundle
    from foprokd.signing import SigningKeyInvalid, read_public_key_file

    try:
        trusted = [read_public_key_file(path) for path in public_key or []] or None
    except SigningKeyInvalid as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    result = verify_bundle(folder, trusted)
    for check in result.checks:
        typer.echo(f"{'ok  ' if check.passed else 'FAIL'} {check.name}: {check.detail}")
    if not result.passed:
        typer.echo(f"{folder}: the bundle does NOT verify.", err=True)
        raise typer.Exit(1)
    typer.echo(f"{folder}: the bundle verifies ({len(result.checks)} checks).")


def _redact(url: str) -> str:
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    return f"{scheme}://***@{rest.split('@', 1)[1]}"


def main() -> None:
    """Run the ``fopro`` command line (the console script and ``python -m fopro``)."""
    cli()
