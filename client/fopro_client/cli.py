"""The remote commands of ``fopro`` (also the ``fopro-client`` console script): datasets, jobs,
teachers, predict and login, on ``FoproClient``.

The server and key come from ``FOPRO_URL`` / ``FOPRO_API_KEY``, else the file ``fopro login``
writes. ``--json`` prints the API's objects as JSON on stdout (``jobs watch --json``: one JSON
object per line per update) and errors as the API's envelope on stderr; otherwise tables, and
progress bars on stderr when it is a terminal.

Exit codes scripts can branch on (``ExitCode``): 0 done; 1 the job did not succeed (failed or
cancelled) or the dataset is invalid; 2 usage (bad option, missing file, bad config); 3 no key,
a wrong key or a role that may not do this; 4 not found; 5 conflict (name taken, job still
running, not ready, ...); 6 server error, rate limit or connection failure (try again later);
7 the API refused the request as invalid.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from enum import IntEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from fopro_client.client import FoproClient
from fopro_client.config import (
    KEY_ENV,
    URL_ENV,
    ConfigFileInvalid,
    Connection,
    config_path,
    resolve_connection,
    write_config,
)
from fopro_client.errors import (
    AuthError,
    Conflict,
    DatasetInvalid,
    FoproError,
    NotFound,
    ValidationFailed,
)
from fopro_client.models import (
    Dataset,
    DatasetStatus,
    Event,
    Job,
    JobProgress,
    JobStatus,
    JobUpdate,
    StreamEnd,
)
from fopro_client.transfer import TransferProgress


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    AUTH = 3
    NOT_FOUND = 4
    CONFLICT = 5
    UNAVAILABLE = 6
    INVALID = 7


EXIT_CODES_HELP = (
    "Exit codes: 0 ok; 1 job failed/cancelled or dataset invalid; 2 usage; 3 auth; "
    "4 not found; 5 conflict; 6 server/connection; 7 request invalid."
)

app = typer.Typer(
    no_args_is_help=True,
    help=f"FoPro-KD Service client ({URL_ENV}, {KEY_ENV} or `fopro login`). {EXIT_CODES_HELP}",
)
datasets = typer.Typer(
    no_args_is_help=True, help="Upload, list, show and delete datasets.", epilog=EXIT_CODES_HELP
)
jobs = typer.Typer(
    no_args_is_help=True,
    help="Submit, follow and manage distillation jobs.",
    epilog=EXIT_CODES_HELP,
)
teachers = typer.Typer(
    no_args_is_help=True, help="The teacher zoo and your team's teachers.", epilog=EXIT_CODES_HELP
)
app.add_typer(datasets, name="datasets")
app.add_typer(jobs, name="jobs")
app.add_typer(teachers, name="teachers")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts (no tables).")]
LimitOpt = Annotated[int, typer.Option(min=1, max=200, help="Rows per page.")]
OffsetOpt = Annotated[int, typer.Option(min=0, help="Rows to skip.")]


# No markup: ids, names and the API's messages are printed as they are (``[x]`` included).
def _out() -> Console:
    return Console(highlight=False, soft_wrap=True, markup=False)


def _err() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True, markup=False)


def exit_code_for(error: FoproError) -> ExitCode:
    """The exit code a script sees for ``error``."""
    if isinstance(error, DatasetInvalid):
        return ExitCode.FAILED
    if isinstance(error, AuthError):
        return ExitCode.AUTH
    if isinstance(error, NotFound):
        return ExitCode.NOT_FOUND
    if isinstance(error, Conflict):
        return ExitCode.CONFLICT
    if isinstance(error, ValidationFailed):
        return ExitCode.INVALID
    return ExitCode.UNAVAILABLE


def _report_error(error: FoproError, as_json: bool, connection: Connection) -> None:
    if as_json:
        typer.echo(json.dumps(error.envelope()), err=True)
        return
    console = _err()
    console.print(f"error: {error.message} ({error.code})", style="red")
    if isinstance(error, AuthError) and connection.api_key is None:
        console.print(f"No API key for {connection.url}: run `fopro login` or set {KEY_ENV}.")
    if isinstance(error, DatasetInvalid):
        console.print(_problems_table(error.dataset))
    elif isinstance(error, ValidationFailed) and isinstance(error.details, list):
        for detail in error.details[:20]:
            console.print(f"  - {json.dumps(detail)}")
    if error.request_id:
        console.print(f"request id {error.request_id}", style="dim")


@contextmanager
def _client(as_json: bool) -> Iterator[FoproClient]:
    """A client for the configured server; errors end the command with their exit code."""
    try:
        connection = resolve_connection()
    except ConfigFileInvalid as exc:
        _err().print(f"error: {exc}")
        raise typer.Exit(ExitCode.USAGE) from exc
    with FoproClient(connection.url, connection.api_key) as client:
        try:
            yield client
        except FoproError as exc:
            _report_error(exc, as_json, connection)
            raise typer.Exit(exit_code_for(exc)) from exc
        except (FileNotFoundError, IsADirectoryError) as exc:
            _err().print(f"error: {exc}")
            raise typer.Exit(ExitCode.USAGE) from exc


def _print_json(value: Any) -> None:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    elif isinstance(value, list):
        value = [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value]
    typer.echo(json.dumps(value, indent=2))


def _when(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _bars_wanted(as_json: bool) -> bool:
    return not as_json and _err().is_terminal


@contextmanager
def _transfer_bars(enabled: bool) -> Iterator[TransferProgress | None]:
    """A rich bar per file on stderr (None when disabled: scripts, pipes, ``--json``)."""
    if not enabled:
        yield None
        return
    columns = (
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=_err()) as bars:
        tasks: dict[str, TaskID] = {}

        def report(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = bars.add_task(label, total=total)
            bars.update(tasks[label], completed=done)

        yield report


# -- datasets ------------------------------------------------------------------------------------


def _problems_table(dataset: Dataset) -> Table:
    table = Table("entry", "code", "message", title=f"{len(dataset.problems)} problem(s)")
    for problem in dataset.problems[:50]:
        table.add_row(problem.entry, problem.code, problem.message)
    return table


def _show_dataset(dataset: Dataset) -> None:
    console = _out()
    console.print(f"{dataset.id}  {dataset.name}  [{dataset.status.value}]", style="bold")
    console.print(
        f"images: {dataset.num_images}  classes: {len(dataset.classes)}  "
        f"archive: {dataset.archive_format or '-'} {dataset.archive_bytes or 0} bytes  "
        f"split seed: {dataset.split_seed}  created: {_when(dataset.created_at)}"
    )
    counts = dataset.stats.get("class_counts") or dataset.stats.get("class_totals")
    if isinstance(counts, dict) and counts:
        splits = {k: v for k, v in counts.items() if isinstance(v, dict)}
        if splits:
            table = Table("class", *splits, title="class counts")
            for label in dataset.classes:
                table.add_row(str(label), *(str(splits[s].get(label, 0)) for s in splits))
        else:
            table = Table("class", "images", title="class counts")
            for label, count in counts.items():
                table.add_row(str(label), str(count))
        console.print(table)
    if dataset.problems:
        console.print(_problems_table(dataset))
    if dataset.warnings:
        console.print(f"{len(dataset.warnings)} warning(s), e.g. {dataset.warnings[0].message}")


@datasets.command("upload")
def datasets_upload(
    path: Annotated[Path, typer.Argument(help="Archive: .zip, .tar or .tar.gz.")],
    name: Annotated[str | None, typer.Option(help="Dataset name (default: file name).")] = None,
    layout: Annotated[
        str | None, typer.Option(help="auto, folders ([split/]class/image) or csv.")
    ] = None,
    manifest: Annotated[str | None, typer.Option(help="Labels CSV inside the archive.")] = None,
    split_seed: Annotated[int | None, typer.Option(help="Seed of the stratified split.")] = None,
    val_fraction: Annotated[float | None, typer.Option(help="Share for validation.")] = None,
    test_fraction: Annotated[float | None, typer.Option(help="Share for testing.")] = None,
    group_by: Annotated[
        str | None,
        typer.Option(help="Patient groups: auto, none, column, dicom or folder:N."),
    ] = None,
    on_group_leak: Annotated[
        str | None, typer.Option(help="A given split with a patient in two splits: refuse or warn.")
    ] = None,
    wait: Annotated[bool, typer.Option(help="Wait until validation ends.")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Upload an archive (streamed from disk) and wait for its validation.

    Exit 1 with its problems if it ends invalid; --no-wait returns once it is uploaded.
    """
    with _client(as_json) as client:
        with _transfer_bars(_bars_wanted(as_json)) as bars:
            dataset = client.upload_dataset(
                path,
                name,
                layout=layout,
                manifest=manifest,
                split_seed=split_seed,
                val_fraction=val_fraction,
                test_fraction=test_fraction,
                group_by=group_by,
                on_group_leak=on_group_leak,
                progress=bars or False,
            )
        if wait:
            if _bars_wanted(as_json):
                with _err().status(f"validating {dataset.id} ..."):
                    dataset = client.wait_ready(dataset.id)
            else:
                dataset = client.wait_ready(dataset.id)
        if as_json:
            _print_json(dataset)
        else:
            _show_dataset(dataset)


@datasets.command("list")
def datasets_list(
    status: Annotated[DatasetStatus | None, typer.Option(help="Only this status.")] = None,
    limit: LimitOpt = 50,
    offset: OffsetOpt = 0,
    as_json: JsonOpt = False,
) -> None:
    """Your team's datasets, newest first."""
    with _client(as_json) as client:
        page = client.list_datasets(status=status, limit=limit, offset=offset)
    if as_json:
        _print_json(page)
        return
    table = Table("id", "name", "status", "images", "classes", "created")
    for d in page.items:
        row = [d.id, d.name, d.status.value, str(d.num_images), str(len(d.classes))]
        table.add_row(*row, _when(d.created_at))
    _out().print(table)
    _out().print(f"{len(page.items)} of {page.total}")


@datasets.command("show")
def datasets_show(dataset_id: str, as_json: JsonOpt = False) -> None:
    """A dataset: status, class counts per split, problems and warnings."""
    with _client(as_json) as client:
        dataset = client.get_dataset(dataset_id)
    if as_json:
        _print_json(dataset)
    else:
        _show_dataset(dataset)


@datasets.command("delete")
def datasets_delete(dataset_id: str, as_json: JsonOpt = False) -> None:
    """Delete a dataset and its files (refused while a queued or running job uses it)."""
    with _client(as_json) as client:
        client.delete_dataset(dataset_id)
    _done(as_json, {"deleted": dataset_id}, f"deleted {dataset_id}")


def _done(as_json: bool, payload: dict[str, Any], text: str) -> None:
    if as_json:
        _print_json(payload)
    else:
        _out().print(text)


# -- jobs ----------------------------------------------------------------------------------------


def _param(text: str) -> tuple[str, Any]:
    key, equals, raw = text.partition("=")
    if not equals or not key.strip():
        raise typer.BadParameter(f"expected KEY=VALUE, got {text!r}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw  # a bare word is a string
    return key.strip(), value


def _job_line(job: Job) -> str:
    percent = job.progress.get("percent")
    done = f" {percent:.0f}%" if isinstance(percent, int | float) and not job.finished else ""
    return f"{job.id} [{job.status.value}{done}] {job.teacher} -> {job.student} ({job.method})"


def _show_job(job: Job) -> None:
    console = _out()
    console.print(_job_line(job), style="bold")
    console.print(
        f"dataset: {job.dataset_id}  priority: {job.priority.value}  attempt: "
        f"{job.attempt}/{job.max_attempts}  phase: {job.phase or '-'}"
        + (f"  retry of: {job.retry_of}" if job.retry_of else "")
    )
    console.print(
        f"created: {_when(job.created_at)}  started: {_when(job.started_at) or '-'}  "
        f"finished: {_when(job.finished_at) or '-'}"
    )
    if job.progress and not job.finished:
        p = job.progress
        console.print(
            f"epoch {p.get('epoch')}/{p.get('epochs')}  step {p.get('step')}  "
            f"eta {p.get('eta_s')} s  losses {json.dumps(p.get('losses', {}))}"
        )
    report = job.metrics.get("report")
    if isinstance(report, dict):
        shown = {k: v for k, v in report.items() if isinstance(v, int | float)}
        console.print("report: " + "  ".join(f"{k} {v:.4f}" for k, v in shown.items()))
    if job.failure_reason:
        console.print(f"{job.failure_code}: {job.failure_reason}", style="red")


def _outcome(job: Job) -> ExitCode:
    return ExitCode.OK if job.status == JobStatus.succeeded else ExitCode.FAILED


def _follow(client: FoproClient, job_id: str, on_update: Callable[[JobUpdate], None]) -> Job:
    for update in client.watch(job_id):
        on_update(update)
    return client.get_job(job_id)


def _watch_live(client: FoproClient, job_id: str) -> Job:
    """Follow a job with a progress bar and its events printed above it (stderr)."""
    console = _err()
    columns = (TextColumn("{task.description}", markup=False), BarColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, disable=not console.is_terminal) as bar:
        task = bar.add_task(job_id, total=100.0)

        def show(update: JobUpdate) -> None:
            if isinstance(update, Event):
                bar.console.print(f"{_when(update.created_at)}  {update.kind:<8} {update.message}")
            elif isinstance(update, JobProgress):
                p = update.progress
                epoch = f" epoch {p['epoch']}/{p['epochs']}" if "epoch" in p else ""
                bar.update(
                    task,
                    completed=float(p.get("percent", 0.0)),
                    description=f"{job_id} {update.status.value} {update.phase or ''}{epoch}",
                )

        job = _follow(client, job_id, show)
    _out().print(_job_line(job))
    if job.failure_reason:
        _err().print(f"{job.failure_code}: {job.failure_reason}", style="red")
    return job


def _watch_json(client: FoproClient, job_id: str) -> Job:
    """Follow a job printing one JSON object per update (``type``: event, progress, end)."""
    kinds = {Event: "event", JobProgress: "progress", StreamEnd: "end"}

    def show(update: JobUpdate) -> None:
        body = {"type": kinds[type(update)], **update.model_dump(mode="json")}
        typer.echo(json.dumps(body))

    return _follow(client, job_id, show)


@jobs.command("submit")
def jobs_submit(
    dataset: Annotated[str, typer.Option(help="A ready dataset's id.")],
    teacher: Annotated[str, typer.Option(help="A zoo teacher or your team's own.")],
    student: Annotated[str, typer.Option(help="Student architecture, e.g. resnet18.")],
    method: Annotated[str | None, typer.Option(help="ce, bsm, ekd, fopro, fopro_akd.")] = None,
    priority: Annotated[str | None, typer.Option(help="low, normal or high.")] = None,
    param: Annotated[
        list[str] | None,
        typer.Option(help="Hyper-parameter KEY=VALUE (JSON value), repeatable: epochs=30."),
    ] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Repeat safely: the same key names the same job.")
    ] = None,
    watch: Annotated[
        bool, typer.Option("--watch", help="Follow it until it ends (exit 1 if not succeeded).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Queue a distillation job (the paper's method and hyper-parameters unless given).

    With --watch, follow it and exit 0 only if it succeeded; --watch --json prints the finished
    job.
    """
    params = dict(_param(p) for p in param or [])
    with _client(as_json) as client:
        job = client.submit_job(
            dataset,
            teacher,
            student,
            method=method,
            priority=priority,
            params=params or None,
            idempotency_key=idempotency_key,
        )
        if watch:
            if not as_json:
                _out().print(f"submitted {job.id}")
            job = client.wait_finished(job.id) if as_json else _watch_live(client, job.id)
    if as_json:
        _print_json(job)
    elif not watch:
        _out().print(_job_line(job))
    if watch:
        raise typer.Exit(_outcome(job))


@jobs.command("list")
def jobs_list(
    status: Annotated[JobStatus | None, typer.Option(help="Only this status.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Only jobs on this dataset.")] = None,
    limit: LimitOpt = 50,
    offset: OffsetOpt = 0,
    as_json: JsonOpt = False,
) -> None:
    """Your team's jobs, newest first."""
    with _client(as_json) as client:
        page = client.list_jobs(status=status, dataset_id=dataset, limit=limit, offset=offset)
    if as_json:
        _print_json(page)
        return
    table = Table("id", "status", "progress", "dataset", "teacher -> student", "method", "created")
    for j in page.items:
        percent = j.progress.get("percent")
        table.add_row(
            j.id,
            j.status.value,
            f"{percent:.0f}%" if isinstance(percent, int | float) else "",
            j.dataset_id,
            f"{j.teacher} -> {j.student}",
            j.method,
            _when(j.created_at),
        )
    _out().print(table)
    _out().print(f"{len(page.items)} of {page.total}")


@jobs.command("show")
def jobs_show(job_id: str, as_json: JsonOpt = False) -> None:
    """A job: status, progress, report once succeeded, reason once failed."""
    with _client(as_json) as client:
        job = client.get_job(job_id)
    if as_json:
        _print_json(job)
    else:
        _show_job(job)


@jobs.command("watch")
def jobs_watch(job_id: str, as_json: JsonOpt = False) -> None:
    """Follow a job live until it ends.

    Exit 0 if it succeeded, 1 if it failed or was cancelled. --json prints one JSON object per
    update (type: event, progress or end).
    """
    with _client(as_json) as client:
        job = _watch_json(client, job_id) if as_json else _watch_live(client, job_id)
    raise typer.Exit(_outcome(job))


@jobs.command("cancel")
def jobs_cancel(job_id: str, as_json: JsonOpt = False) -> None:
    """Cancel a queued job, or stop a running one at its next step."""
    with _client(as_json) as client:
        job = client.cancel_job(job_id)
    if as_json:
        _print_json(job)
    else:
        _out().print(_job_line(job) + (" (cancel requested)" if not job.finished else ""))


@jobs.command("retry")
def jobs_retry(job_id: str, as_json: JsonOpt = False) -> None:
    """A new job repeating a failed or cancelled one (resumes from its checkpoint)."""
    with _client(as_json) as client:
        job = client.retry_job(job_id)
    if as_json:
        _print_json(job)
    else:
        _out().print(_job_line(job) + f" (retry of {job_id})")


@jobs.command("delete")
def jobs_delete(job_id: str, as_json: JsonOpt = False) -> None:
    """Delete a finished job with its artifacts, checkpoints and events."""
    with _client(as_json) as client:
        client.delete_job(job_id)
    _done(as_json, {"deleted": job_id}, f"deleted {job_id}")


@jobs.command("download")
def jobs_download(
    job_id: str,
    directory: Annotated[Path, typer.Option("--dir", help="Where to put the files.")] = Path(),
    name: Annotated[
        list[str] | None, typer.Option(help="Only this artifact (repeatable), e.g. student.onnx.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Download a finished job's artifacts, each checked against its recorded SHA-256."""
    with _client(as_json) as client, _transfer_bars(_bars_wanted(as_json)) as bars:
        paths = client.download_artifacts(job_id, directory, names=name, progress=bars or False)
    if as_json:
        _print_json([str(p) for p in paths])
    else:
        for path in paths:
            _out().print(str(path))


# -- teachers ------------------------------------------------------------------------------------


@teachers.command("list")
def teachers_list(as_json: JsonOpt = False) -> None:
    """The zoo (and whether its weights are installed) and your team's own teachers."""
    with _client(as_json) as client:
        catalog = client.list_teachers()
    if as_json:
        _print_json(catalog)
        return
    zoo = Table("name", "arch", "params", "features", "input", "weights", title="zoo")
    for t in catalog.zoo:
        where = t.weights_path or f"missing: put them at {(t.expected_paths or ['?'])[0]}"
        zoo.add_row(
            t.name, t.arch, f"{t.num_params:,}", str(t.feature_dim), str(t.input_size), where
        )
    team = Table("id", "name", "arch", "params", "sha256", title="your team")
    for tt in catalog.team:
        team.add_row(tt.id, tt.name, tt.arch, f"{tt.num_params:,}", tt.weights_sha256[:12])
    _out().print(zoo)
    _out().print(team)


@teachers.command("upload")
def teachers_upload(
    path: Annotated[Path, typer.Argument(help="State dict: .safetensors or torch.save file.")],
    name: Annotated[str, typer.Option(help="Name jobs will use for this teacher.")],
    arch: Annotated[str, typer.Option(help="timm architecture, e.g. resnet50.")],
    as_json: JsonOpt = False,
) -> None:
    """Register your own teacher; a worker checks the file loads into ARCH before it counts."""
    with _client(as_json) as client, _transfer_bars(_bars_wanted(as_json)) as bars:
        teacher = client.upload_teacher(path, name, arch, progress=bars or False)
    if as_json:
        _print_json(teacher)
    else:
        _out().print(
            f"{teacher.id} {teacher.name} ({teacher.arch}, {teacher.num_params:,} parameters, "
            f"features {teacher.feature_dim})"
        )


# -- predict and login ---------------------------------------------------------------------------


@app.command("predict", epilog=EXIT_CODES_HELP)
def predict(
    job_id: str,
    images: Annotated[list[Path], typer.Argument(help="Image files.")],
    top_k: Annotated[int, typer.Option(min=1, max=1000, help="Classes per image.")] = 5,
    threshold_profile: Annotated[
        str | None,
        typer.Option(help="Flag findings at an operating point of the student (sens90, sens95)."),
    ] = None,
    heat_maps: Annotated[
        Path | None,
        typer.Option(help="Also compute occlusion heat maps and write them here as PNGs."),
    ] = None,
    precision: Annotated[
        str,
        typer.Option(help="fp32 (the student) or int8 (its INT8 model, where the job has one)."),
    ] = "fp32",
    as_json: JsonOpt = False,
) -> None:
    """Classify images with a finished job's student (run by the API; calibrated
    probabilities)."""
    with _client(as_json) as client:
        answer = client.predict(
            job_id,
            images,
            top_k=top_k,
            threshold_profile=threshold_profile,
            explain=heat_maps is not None,
            precision=precision,
        )
    if heat_maps is not None:
        heat_maps.mkdir(parents=True, exist_ok=True)
        for index, row in enumerate(answer.predictions):
            if row.explanation is not None:
                # The index keeps two uploads with the same file name apart.
                target = heat_maps / f"{index:03d}-{Path(row.filename).stem}.occlusion.png"
                target.write_bytes(base64.b64decode(row.explanation.png_base64))
    if as_json:
        _print_json(answer)
        return
    for row in answer.predictions:
        scores = "  ".join(f"{s.label} {s.probability:.3f}" for s in row.top_k)
        found = (
            f"  findings ({answer.threshold_profile}): "
            + (", ".join(f.label for f in row.findings) or "none")
            if row.findings is not None
            else ""
        )
        _out().print(f"{row.filename}: {scores}{found}")


@app.command("login", epilog=EXIT_CODES_HELP)
def login(
    url: Annotated[str | None, typer.Option(help=f"Server address (default {URL_ENV}).")] = None,
    api_key: Annotated[
        str | None, typer.Option(help="API key (asked for, hidden, when not given).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check a key against the server and save both (owner-only file) for later commands."""
    try:
        current = resolve_connection()
    except ConfigFileInvalid:
        current = Connection(url or "", None)
    server = (url or current.url).rstrip("/")
    key = api_key or typer.prompt("API key", hide_input=True)
    connection = Connection(server, key.strip())
    with FoproClient(connection.url, connection.api_key) as client:
        try:
            me = client.me()
        except FoproError as exc:
            _report_error(exc, as_json, connection)
            raise typer.Exit(exit_code_for(exc)) from exc
    path = config_path()
    write_config(path, connection)
    if as_json:
        _print_json({"config": str(path), "url": server, **me.model_dump(mode="json")})
    else:
        _out().print(f"logged in to {server} as team {me.team_name} ({me.role}); saved to {path}")


def main() -> None:
    """Run the ``fopro-client`` console script."""
    app()
