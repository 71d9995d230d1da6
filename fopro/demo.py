"""``fopro demo``: the whole service, end to end, on a machine with nothing installed.

In a fresh data dir it starts the service (API + workers, as ``fopro up``), writes a long-tailed
sample archive, creates a team and key, and then does over HTTP what a team would: upload the
archive, wait until it is ready, register a teacher, run a short job of the default method
(``foprokd.hyperparams.DEFAULT_METHOD``) with the student trained from scratch, download the
student and print its model card summary and the dashboard's address.

The teacher is never random weights presented as real: installed zoo weights when there are any,
otherwise a small timm model pre-trained here for about a minute on the sample's train images
WITHOUT their labels (``foprokd.pretext``), registered under a name and with a card that say so.
"""

from __future__ import annotations

import io
import json
import secrets
import shutil
import signal
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from foprokd.hyperparams import DEFAULT_METHOD

MARKER = ".fopro-demo"
DEMO_PORT = 8001
DATASET_NAME = "derm-demo"
TEAM_NAME = "demo"
PRETEXT_ARCH = "resnet18"
SAMPLE = {"classes": 5, "head": 60, "imbalance": 10.0, "size": 64, "seed": 0}
STUDENT_FILES = ("config.json", "student.safetensors", "model_card.json", "model_card.md")
POLL_S = 1.0
READY_TIMEOUT_S = 120.0
DATASET_TIMEOUT_S = 300.0
JOB_TIMEOUT_S = 1800.0


class DemoFailed(Exception):
    """A step of the demo went wrong; the message says which and where to look."""


@dataclass(frozen=True)
class DemoTeacher:
    """The teacher the job names, and a line saying honestly what it is."""

    name: str
    how_made: str


def demo(
    data_dir: Annotated[
        Path, typer.Option(help="A fresh folder for the demo's service (database, objects).")
    ] = Path(".fopro-demo"),
    force: Annotated[
        bool, typer.Option(help="Use a non-empty data dir that is not a previous demo's.")
    ] = False,
    host: Annotated[str, typer.Option(help="Interface the API binds.")] = "127.0.0.1",
    port: Annotated[
        int | None,
        typer.Option(
            help=f"API port (default {DEMO_PORT}, next to `make run`'s; a free one if taken)."
        ),
    ] = None,
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs of the job.")] = 10,
    image_size: Annotated[int, typer.Option(min=32, help="Training resolution (pixels).")] = 32,
    student: Annotated[str, typer.Option(help="Student architecture (zoo).")] = "resnet18",
    pretrain_seconds: Annotated[
        float,
        typer.Option(min=1, help="Self-supervised pre-training budget when no teacher exists."),
    ] = 60.0,
    keep_running: Annotated[
        bool, typer.Option(help="Leave the service up at the end (for the dashboard).")
    ] = False,
) -> None:
    """Run the service end to end on a sample: upload, teacher, a short FoPro-KD job, the
    student and its model card, then the dashboard URL. A few minutes on a laptop CPU."""
    data_dir = data_dir.expanduser().resolve()
    try:
        _prepare_data_dir(data_dir, force=force)
    except DemoFailed as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    # Python leaves SIGINT ignored when its parent ignored it (a test runner, `nohup`, some
    # supervisors); Ctrl-C or `kill -INT` must still stop the demo and its children.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    run = DemoRun(data_dir, host, _choose_port(host, port))
    finished = False
    try:
        run.start_service()
        run.go(
            epochs=epochs,
            image_size=image_size,
            student=student,
            pretrain_seconds=pretrain_seconds,
        )
        finished = True
        if keep_running:
            typer.echo("The service keeps running; Ctrl-C stops it.")
            while run.service_alive():
                time.sleep(POLL_S)
    except KeyboardInterrupt:
        if finished:  # the way to end --keep-running
            run.stop()
            return
        typer.echo("\ninterrupted: stopping the demo", err=True)
        run.cancel_job()
        run.stop()
        raise typer.Exit(130) from None
    except DemoFailed as exc:
        typer.echo(f"error: {exc} (service logs: {data_dir / 'logs'})", err=True)
        run.stop()
        raise typer.Exit(1) from exc
    run.stop()


def _raise_keyboard_interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _prepare_data_dir(data_dir: Path, *, force: bool) -> None:
    """Empty a previous demo's folder; refuse another non-empty one unless ``force`` (then it
    is used as it is: nothing deleted, and not marked as the demo's)."""
    if data_dir.exists() and not data_dir.is_dir():
        raise DemoFailed(f"{data_dir} is not a folder.")
    if data_dir.is_dir() and any(data_dir.iterdir()):
        if not (data_dir / MARKER).is_file():
            if not force:
                raise DemoFailed(
                    f"{data_dir} is not empty and not a previous demo's; pick a fresh "
                    "--data-dir or pass --force to use it as it is."
                )
            return  # used as it is, and never marked: no later demo may empty it
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / MARKER).write_text("created by `fopro demo`; the next demo here empties it\n")


def _choose_port(host: str, port: int | None) -> int:
    if port is not None:
        return port
    with socket.socket() as probe:
        try:
            probe.bind((host, DEMO_PORT))
            return DEMO_PORT
        except OSError:
            probe.bind((host, 0))
            return int(probe.getsockname()[1])


class DemoRun:
    """One demo: its service, key, HTTP client and what it created (for a clean Ctrl-C)."""

    def __init__(self, data_dir: Path, host: str, port: int) -> None:
        self.data_dir = data_dir
        self.host, self.port = host, port
        self.service: Any = None
        self.client: Any = None
        self.key = ""
        self.team_name = TEAM_NAME
        self.job_id: str | None = None

    # --- the service --------------------------------------------------------------------

    def start_service(self) -> None:
        """Point the settings at the demo's data dir, migrate, start API + workers, wait."""
        import os

        from app.core.config import get_settings
        from app.core.migrate import upgrade
        from fopro.local_service import LocalService

        os.environ["FOPRO_DATA_DIR"] = str(self.data_dir)
        os.environ["FOPRO_API_HOST"], os.environ["FOPRO_API_PORT"] = self.host, str(self.port)
        get_settings.cache_clear()
        settings = get_settings()
        settings.ensure_dirs()
        with _step("migrating the database"):
            upgrade(settings.database_url)
        with _step(f"starting the API and two workers (logs in {self.data_dir / 'logs'})"):
            self.service = LocalService.start(
                self.host, self.port, log_dir=self.data_dir / "logs", own_process_groups=True
            )
            if not self.service.wait_ready(READY_TIMEOUT_S):
                raise DemoFailed(f"the service did not become ready at {self.service.url}")

    def service_alive(self) -> bool:
        return self.service is not None and self.service.alive()

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.service is not None:
            with _step("stopping the service"):
                self.service.stop()
            self.service = None

    def cancel_job(self) -> None:
        """Ask a running job to stop (best effort: the service may already be going)."""
        if self.job_id is None or self.client is None:
            return
        try:
            self.client.post(f"/v1/jobs/{self.job_id}/cancel", timeout=5)
        except Exception as exc:  # the stop below ends the job with its worker anyway
            typer.echo(f"(could not cancel {self.job_id}: {exc})", err=True)

    # --- the walk -----------------------------------------------------------------------

    def go(self, *, epochs: int, image_size: int, student: str, pretrain_seconds: float) -> None:
        import httpx

        self.key = self._create_team_and_key()
        self.client = httpx.Client(
            base_url=self.service.url,
            headers={"Authorization": f"Bearer {self.key}"},
            timeout=120,
        )
        archive, members = self._write_sample()
        dataset = self._upload(archive)
        teacher = self._teacher(members, image_size, pretrain_seconds)
        job = self._train(dataset["id"], teacher, student, epochs, image_size)
        student_dir = self._download_student(job["id"])
        self._summary(job, teacher, student_dir)

    def _create_team_and_key(self) -> str:
        from sqlalchemy import select

        from app.core.config import get_settings
        from app.core.db import session_scope
        from app.teams.models import Role, Team
        from app.teams.service import create_api_key, create_team

        with session_scope() as session:
            taken = session.scalar(select(Team).where(Team.name == TEAM_NAME)) is not None
            # A --force'd data dir may hold an earlier team of that name: never reuse it.
            self.team_name = f"{TEAM_NAME}-{secrets.token_hex(3)}" if taken else TEAM_NAME
            team = create_team(session, self.team_name)
            _, key = create_api_key(
                session, team, Role.admin, get_settings().secret_key, "fopro demo"
            )
        typer.echo(f"team {self.team_name!r} with an admin key")
        return key

    def _write_sample(self) -> tuple[Path, list[Any]]:
        from foprokd.synthetic import sample_dataset, write_archive

        dataset = sample_dataset(**SAMPLE, with_splits=True)  # type: ignore[arg-type]
        archive = write_archive(self.data_dir / f"{DATASET_NAME}.zip", dataset.members, "zip")
        counts = ", ".join(f"{name} {n}" for name, n in dataset.class_counts.items())
        typer.echo(f"sample archive {archive.name}: {dataset.num_images} images ({counts})")
        return archive, dataset.members

    def _upload(self, archive: Path) -> dict[str, Any]:
        with _step(f"uploading {archive.name}"), archive.open("rb") as handle:
            response = self.client.post(
                "/v1/datasets",
                data={"name": DATASET_NAME},
                files={"file": (archive.name, handle, "application/zip")},
            )
        dataset = _json(response, "upload the dataset")
        with _progress("validating the dataset", unit="entry") as bar:
            deadline = time.monotonic() + DATASET_TIMEOUT_S
            while dataset["status"] == "validating":
                if time.monotonic() > deadline:
                    raise DemoFailed(f"dataset {dataset['id']} is still validating")
                time.sleep(POLL_S)
                dataset = _json(self.client.get(f"/v1/datasets/{dataset['id']}"), "read it")
                progress = dataset["stats"].get("progress") or {}
                bar.total = progress.get("entries_total") or bar.total
                bar.update(max(0, int(progress.get("entries_done") or 0) - bar.n))
        if dataset["status"] != "ready":
            problems = "; ".join(p["message"] for p in dataset["problems"][:3])
            raise DemoFailed(f"dataset {dataset['id']} is {dataset['status']}: {problems}")
        typer.echo(f"dataset {dataset['id']} ready: {dataset['num_images']} images")
        return dict(dataset)

    def _teacher(self, members: list[Any], image_size: int, seconds: float) -> DemoTeacher:
        """An installed zoo teacher if there is one, else a self-supervised one made here."""
        catalog = _json(self.client.get("/v1/teachers"), "list the teachers")
        installed = sorted(
            (t for t in catalog["zoo"] if t["weights_available"]), key=lambda t: t["num_params"]
        )
        if installed:
            chosen = installed[0]
            how = (
                f"zoo teacher {chosen['name']} with the installed weights {chosen['weights_path']}"
            )
            typer.echo(f"teacher: {how}")
            return DemoTeacher(chosen["name"], how)
        return self._pretrained_teacher(members, image_size, seconds)

    def _pretrained_teacher(
        self, members: list[Any], image_size: int, seconds: float
    ) -> DemoTeacher:
        import numpy as np
        import torch
        from PIL import Image
        from safetensors.torch import save_file

        from foprokd.images import to_model_rgb
        from foprokd.pretext import PretextProgress, pretrain_contrastive

        train = [
            to_model_rgb(Image.open(io.BytesIO(m.data)), image_size)
            for m in members
            if m.kind == "file" and m.name.startswith("train/")
        ]
        images = torch.from_numpy(np.stack([np.asarray(image) for image in train])).permute(
            0, 3, 1, 2
        )
        typer.echo(
            f"no zoo teacher weights are installed: pre-training a {PRETEXT_ARCH} for "
            f"{seconds:.0f} s on the {len(train)} train images WITHOUT their labels "
            "(SimCLR-style contrastive pretext)"
        )
        with _progress("self-supervised pre-training", unit="s", total=seconds) as bar:

            def show(progress: PretextProgress) -> None:
                bar.update(round(min(progress.seconds, seconds), 1) - bar.n)
                bar.set_postfix(step=progress.step, loss=f"{progress.loss:.3f}", refresh=False)

            made = pretrain_contrastive(
                PRETEXT_ARCH, images, budget_s=seconds, batch_size=32, on_progress=show
            )
        how = (
            f"{PRETEXT_ARCH} from random init, self-supervised (SimCLR-style contrastive "
            f"pretext) for {made.seconds:.0f} s / {made.steps} steps on the {made.images} train "
            f"images of {DATASET_NAME} without labels, by `fopro demo`; not ImageNet weights"
        )
        teacher_dir = self.data_dir / "teacher"
        teacher_dir.mkdir(exist_ok=True)
        weights = teacher_dir / "teacher.safetensors"
        save_file(
            {k: v.contiguous() for k, v in made.backbone.state_dict().items()},
            str(weights),
            metadata={"how_made": how, "arch": PRETEXT_ARCH, "final_loss": f"{made.final_loss}"},
        )
        card = teacher_dir / "TEACHER_CARD.md"
        card.write_text(f"# Teacher demo-selfsup-{PRETEXT_ARCH}\n\n{how}.\n")
        name = f"demo-selfsup-{PRETEXT_ARCH}"
        with _step(f"registering teacher {name} (the worker checks the file)"):
            with weights.open("rb") as handle:
                response = self.client.post(
                    "/v1/teachers",
                    data={"name": name, "arch": PRETEXT_ARCH},
                    files={"file": (weights.name, handle, "application/octet-stream")},
                )
            _json(response, "register the teacher")
        typer.echo(f"teacher card: {card}")
        return DemoTeacher(name, how)

    def _train(
        self, dataset_id: str, teacher: DemoTeacher, student: str, epochs: int, image_size: int
    ) -> dict[str, Any]:
        body = {
            "dataset_id": dataset_id,
            "teacher": teacher.name,
            "student": student,
            "method": DEFAULT_METHOD,
            "params": {
                "epochs": epochs,
                "image_size": image_size,
                "batch_size": 32,
                "student_init": "scratch",
            },
        }
        job = _json(self.client.post("/v1/jobs", json=body), "submit the job")
        self.job_id = job["id"]
        typer.echo(
            f"job {job['id']}: {DEFAULT_METHOD}, teacher {teacher.name} -> student {student} "
            f"(from scratch), {epochs} epochs at {image_size} px"
        )
        deadline = time.monotonic() + JOB_TIMEOUT_S
        with _progress("queued", unit="%", total=100) as bar:
            while job["status"] in ("queued", "running"):
                if time.monotonic() > deadline:
                    raise DemoFailed(f"job {job['id']} did not finish")
                time.sleep(POLL_S)
                job = _json(self.client.get(f"/v1/jobs/{job['id']}"), "read the job")
                progress = job["progress"] or {}
                bar.set_description(job["phase"] or job["status"], refresh=False)
                if job["phase"] == "training" and "epoch" in progress:
                    val = progress.get("val") or {}
                    bar.set_postfix(
                        epoch=f"{progress['epoch']}/{progress['epochs']}",
                        val_bacc=f"{val['balanced_accuracy']:.3f}" if val else "-",
                        refresh=False,
                    )
                    bar.update(round(float(progress.get("percent", 0)), 1) - bar.n)
        if job["status"] != "succeeded":
            raise DemoFailed(
                f"job {job['id']} {job['status']}: {job['failure_reason'] or 'no reason given'}"
            )
        self.job_id = None  # nothing left to cancel
        return dict(job)

    def _download_student(self, job_id: str) -> Path:
        out = self.data_dir / "student"
        out.mkdir(exist_ok=True)
        with _step(f"downloading the student to {out}"):
            for name in STUDENT_FILES:
                with self.client.stream("GET", f"/v1/jobs/{job_id}/artifacts/{name}") as response:
                    if response.status_code != 200:
                        response.read()
                        _json(response, f"download {name}")
                    with (out / name).open("wb") as handle:
                        for chunk in response.iter_bytes():
                            handle.write(chunk)
        return out

    def _summary(self, job: dict[str, Any], teacher: DemoTeacher, student_dir: Path) -> None:
        card = json.loads((student_dir / "model_card.json").read_text())
        evaluation = card["evaluation"] or {}
        report = evaluation.get("report") or {}
        lines = [
            "",
            f"Student of job {job['id']} ({student_dir}):",
            f"  teacher: {teacher.how_made}",
            f"  {evaluation.get('split', '?')} balanced accuracy "
            f"{report.get('balanced_accuracy', float('nan')):.3f}, "
            f"macro-F1 {report.get('macro_f1', float('nan')):.3f}",
        ]
        groups = report.get("shot_groups") or {}
        for group in ("many", "medium", "few"):
            info = groups.get(group)
            if info and info.get("classes"):
                accuracy = info.get("accuracy")
                shown = f"{accuracy:.3f}" if accuracy is not None else "—"
                lines.append(f"  {group}-shot accuracy {shown} ({', '.join(info['classes'])})")
        lines += [
            f"  model card: {student_dir / 'model_card.md'}",
            "",
            f"Dashboard: {self.service.url}/  (sign in with the key below)",
            f"API key (team {self.team_name}, admin): {self.key}",
            f'  e.g. curl -H "Authorization: Bearer {self.key}" {self.service.url}/v1/jobs',
        ]
        typer.echo("\n".join(lines))


def _json(response: Any, doing: str) -> Any:
    """The body of a 2xx answer; otherwise DemoFailed with the API's error message."""
    if response.status_code < 300:
        return response.json()
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text[:300]
    raise DemoFailed(f"could not {doing}: HTTP {response.status_code}: {message}")


@contextmanager
def _step(what: str) -> Iterator[None]:
    """One line for a step that has no measurable progress, with its duration."""
    typer.echo(f"{what} ...", nl=False)
    start = time.monotonic()
    try:
        yield
    except BaseException:
        typer.echo(" failed")
        raise
    typer.echo(f" done ({time.monotonic() - start:.1f} s)")


@contextmanager
def _progress(what: str, *, unit: str, total: float | None = None) -> Iterator[Any]:
    from tqdm import tqdm

    shown = "{l_bar}{bar}| {n:.0f}/{total:.0f} " + unit + " [{elapsed}<{remaining}{postfix}]"
    bar = tqdm(
        desc=what,
        total=total,
        unit=unit,
        file=sys.stdout,
        dynamic_ncols=True,
        bar_format=shown if total is not None else None,
    )
    try:
        yield bar
    finally:
        bar.close()
