"""Scale: ``--jobs`` tiny jobs submitted at once over HTTP to ``--workers`` real ``fopro worker``
processes on PostgreSQL + Redis + SeaweedFS S3; then the same with one worker's whole process
group ``kill -9``ed when about half the jobs are done. Each phase is audited from the database:
every job succeeded exactly once (one success, one artifact set, attempts that never overlap,
no epoch trained twice within an attempt, none lost or stuck), with the queue-to-start latency
(job created → its first ``queued → running`` event) and throughput. Prints the headline last.

Every server is the bench's own (a throwaway Postgres database, a Redis on its own port, a
``weed mini``, the API, the workers) and is stopped at the end, on errors and on Ctrl-C too.
Leases are short (5 s, heartbeat 1 s) so a killed worker's job is reaped within seconds.

    python -m bench.scale                          # 1000 jobs, 4 workers, both phases
    python -m bench.scale --jobs 40 --workers 4
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from bench.api_load import free_port, server
from foprokd.catalog import STUDENTS
from tests.support.databases import temporary_postgres_database
from tests.support.redis_server import RedisServer
from tests.support.seaweed import run_seaweed

RESULTS = Path(__file__).parent / "results" / "scale.json"
# The cheapest real job: the student alone (bsm: no teacher forward), random init, 32 px,
# one epoch of one step (8 train images, batch 8), no INT8 export.
TINY_PARAMS: dict[str, Any] = {
    "epochs": 1,
    "batch_size": 8,
    "image_size": 32,
    "seed": 0,
    "student_init": "scratch",
    "allow_random_weights": True,
    "int8": "never",
}
# The zoo's smallest student: a job's files (checkpoint, safetensors, TorchScript, ONNX) are
# about 30 MB, so 1,000 jobs fit on a disk that resnet18's 270 MB per job would fill.
TINY_STUDENT = min(STUDENTS, key=lambda name: STUDENTS[name].num_params or 0)
TERMINAL = ("succeeded", "failed", "cancelled")
# The phases of a run in order; each after "preparing" opens with an info event naming it.
PHASES = ("preparing", "training", "evaluating", "exporting")
POLL_S = 2.0


# --- the audit: pure functions over event rows -------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One ``job_events`` row as the audit needs it (rows of one job, in id order)."""

    id: int
    kind: str
    data: dict[str, Any]
    created_at: datetime


@dataclass
class Attempt:
    """One run of a job: from its ``queued → running`` event to the event that left running."""

    owner: str
    started: datetime
    ended: datetime | None = None
    outcome: str | None = None
    epochs: list[int] = field(default_factory=list)
    phase_began: dict[str, datetime] = field(default_factory=dict)

    def phase_seconds(self) -> dict[str, float]:
        """Seconds in each phase of a finished attempt (a phase not reached is left out)."""
        began = {"preparing": self.started, **self.phase_began}
        marks = [(p, began[p]) for p in PHASES if p in began]
        ends = [t for _, t in marks[1:]] + [self.ended or marks[-1][1]]
        return {p: (end - t).total_seconds() for (p, t), end in zip(marks, ends, strict=True)}


@dataclass
class JobAudit:
    """What one job's event log says: its attempts and every exactly-once rule it broke."""

    attempts: list[Attempt]
    problems: list[str]


def audit_job(events: Sequence[Event]) -> JobAudit:
    """Replay one job's events: a claim only from queued, nothing claimed while running, one
    success, epoch events only inside an attempt and never the same epoch twice in one."""
    attempts: list[Attempt] = []
    problems: list[str] = []
    current: Attempt | None = None
    for event in events:
        if event.kind == "state":
            source, target = event.data.get("from"), event.data.get("to")
            if target == "running":
                if current is not None:
                    problems.append(f"event {event.id}: claimed while attempt by "
                                    f"{current.owner} still running")  # fmt: skip
                current = Attempt(str(event.data.get("lease_owner")), event.created_at)
                attempts.append(current)
            elif source == "running":
                if current is None:
                    problems.append(f"event {event.id}: left running without a claim")
                    continue
                current.ended, current.outcome, current = event.created_at, target, None
        elif event.kind == "epoch":
            if current is None:
                problems.append(f"event {event.id}: epoch event outside any attempt")
            elif event.data.get("epoch") in current.epochs:
                problems.append(f"event {event.id}: epoch {event.data.get('epoch')} twice")
            else:
                current.epochs.append(int(event.data["epoch"]))
        elif event.kind == "info" and current is not None and "phase" in event.data:
            current.phase_began.setdefault(str(event.data["phase"]), event.created_at)
    successes = sum(a.outcome == "succeeded" for a in attempts)
    if successes != 1:
        problems.append(f"{successes} successful attempts")
    for before, after in itertools.pairwise(attempts):
        if before.ended is None or before.ended > after.started:
            problems.append(f"attempts by {before.owner} and {after.owner} overlap")
    return JobAudit(attempts, problems)


def quantiles(values: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/max of ``values`` (seconds); NaN when there are fewer than two."""
    if len(values) < 2:
        return dict.fromkeys(("p50", "p90", "p99", "max"), float("nan"))
    cut = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": cut[49], "p90": cut[89], "p99": cut[98], "max": max(values)}


# --- the deployment ------------------------------------------------------------------------


@dataclass
class Worker:
    """A ``fopro worker`` in its own session, so ``kill -9`` can take its whole group."""

    number: int
    process: subprocess.Popen[bytes]

    @classmethod
    def start(cls, number: int, env: dict[str, str], log_dir: Path) -> Worker:
        name = f"scale-{number}@localhost"
        with (log_dir / f"worker-{number}.log").open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "fopro", "worker", "--queues", "cpu,gpu", "--name", name],
                env={**os.environ, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return cls(number, process)

    def kill9(self) -> None:
        """SIGKILL the worker and everything it started (its training child)."""
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        """SIGTERM (a warm shutdown), then SIGKILL whatever of its group is left."""
        if self.process.poll() is None:
            self.process.terminate()
            with suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=30)
        self.kill9()


@dataclass
class Service:
    env: dict[str, str]
    url: str
    key: str
    dataset_id: str
    database_url: str
    log_dir: Path


@contextmanager
def deployment(
    log_dir: Path, stack: ExitStack, train_threads: int = 0
) -> Iterator[tuple[dict[str, str], str, str]]:
    """Postgres database, Redis, SeaweedFS and the API; yields (worker env, API url, db url).
    ``train_threads``: each training process's torch threads (0: torch's default)."""
    db_url = stack.enter_context(temporary_postgres_database())
    redis_server = RedisServer(free_port(), log_dir)
    redis_server.start()
    stack.callback(redis_server.stop)
    s3 = stack.enter_context(run_seaweed(log_dir / "seaweed", bucket="fopro-scale"))
    env = {
        "FOPRO_ENV": "test",
        "FOPRO_DATA_DIR": str(log_dir / "data"),
        "FOPRO_DATABASE_URL": db_url,
        "FOPRO_BROKER_URL": redis_server.url,
        "FOPRO_RESULT_BACKEND": redis_server.url,
        "FOPRO_STORAGE_URL": f"s3://{s3.bucket}/scale",
        "FOPRO_S3_ENDPOINT": s3.endpoint,
        "FOPRO_S3_ACCESS_KEY": s3.access_key,
        "FOPRO_S3_SECRET_KEY": s3.secret_key,
        "FOPRO_S3_REGION": s3.region,
        "FOPRO_LEASE_SECONDS": "5",
        "FOPRO_HEARTBEAT_SECONDS": "1",
        "FOPRO_RATE_LIMIT": "100000000/minute",  # the clients submit at once, as fast as they can
        "FOPRO_MAX_ACTIVE_JOBS": "100000000",
        "FOPRO_TRAIN_THREADS": str(train_threads),
        "HF_HUB_CACHE": str(log_dir / "empty-hf-cache"),  # random weights, never a download
    }
    migrate = [sys.executable, "-m", "fopro", "migrate"]
    subprocess.run(migrate, env={**os.environ, **env}, check=True, capture_output=True)
    port = free_port()
    command = [sys.executable, "-m", "fopro", "serve", "--port", str(port)]
    url = stack.enter_context(server(command, env, port, log_dir / "api.log"))
    yield env, url, db_url


def settings_for(env: dict[str, str]) -> Any:
    """The ``Settings`` the deployment's processes read from ``env``."""
    from app.core.config import Settings

    return Settings.model_validate(
        {k.removeprefix("FOPRO_").lower(): v for k, v in env.items() if k.startswith("FOPRO_")}
    )


def make_admin_key(env: dict[str, str]) -> str:
    from sqlalchemy.orm import Session

    from app.core.db import make_engine
    from app.teams.models import Role
    from app.teams.service import create_api_key, create_team

    settings = settings_for(env)
    engine = make_engine(settings.database_url)
    with Session(engine) as session:
        team = create_team(session, "scale")
        _, key = create_api_key(session, team, Role.admin, settings.secret_key)
        session.commit()
    engine.dispose()
    return key


def upload_dataset(url: str, key: str, workdir: Path) -> str:
    """Upload 2 classes × 6 textures (4 train, 1 val, 1 test each) over HTTP; wait until ready."""
    from foprokd.synthetic import sample_dataset, write_archive

    sample = sample_dataset(classes=2, head=6, imbalance=1.0, size=32, with_splits=True)
    archive = write_archive(workdir / "tiny.zip", sample.members, "zip")
    auth = {"Authorization": f"Bearer {key}"}
    with archive.open("rb") as handle:
        response = httpx.post(
            f"{url}/v1/datasets",
            data={"name": "tiny"},
            files={"file": ("tiny.zip", handle, "application/zip")},
            headers=auth,
            timeout=60,
        )
    response.raise_for_status()
    dataset = response.json()
    deadline = time.monotonic() + 300
    while dataset["status"] == "validating" and time.monotonic() < deadline:
        time.sleep(1)
        dataset = httpx.get(f"{url}/v1/datasets/{dataset['id']}", headers=auth).json()
    if dataset["status"] != "ready":
        raise RuntimeError(f"the tiny dataset is {dataset['status']}: {dataset.get('problems')}")
    return str(dataset["id"])


async def submit_all(
    service: Service, jobs: int, clients: int, student: str = TINY_STUDENT
) -> tuple[list[str], Counter[str]]:
    """POST ``jobs`` tiny jobs from ``clients`` concurrent connections; (job ids, failures)."""
    body = {
        "dataset_id": service.dataset_id,
        "teacher": "resnet18",  # not loaded: bsm trains the student alone
        "student": student,
        "method": "bsm",
        "params": TINY_PARAMS,
    }
    auth = {"Authorization": f"Bearer {service.key}"}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    ids: list[str] = []
    failures: Counter[str] = Counter()
    remaining = iter(range(jobs))
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:

        async def loop() -> None:
            for _ in remaining:
                try:
                    response = await client.post(f"{service.url}/v1/jobs", json=body, headers=auth)
                except httpx.TransportError as exc:
                    failures[type(exc).__name__] += 1
                    continue
                if response.status_code == 201:
                    ids.append(response.json()["id"])
                else:
                    failures[str(response.status_code)] += 1

        await asyncio.gather(*(loop() for _ in range(clients)))
    return ids, failures


async def delete_all(service: Service, job_ids: Sequence[str], clients: int) -> Counter[str]:
    """DELETE every job over HTTP from ``clients`` connections; counts of the status codes."""
    auth = {"Authorization": f"Bearer {service.key}"}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    answers: Counter[str] = Counter()
    remaining = iter(job_ids)
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:

        async def loop() -> None:
            for job_id in remaining:
                try:
                    response = await client.delete(f"{service.url}/v1/jobs/{job_id}", headers=auth)
                except httpx.TransportError as exc:
                    answers[type(exc).__name__] += 1
                    continue
                answers[str(response.status_code)] += 1

        await asyncio.gather(*(loop() for _ in range(clients)))
    return answers


def job_objects(service: Service, job_ids: Sequence[str]) -> tuple[int, int]:
    """(objects, bytes) the store holds under these jobs' prefixes (``teams/<t>/jobs/<id>/``)."""
    from app.core.storage import open_object_store

    wanted = set(job_ids)
    count = size = 0
    for info in open_object_store(settings_for(service.env)).list("teams/"):
        parts = info.key.split("/")
        if len(parts) > 3 and parts[2] == "jobs" and parts[3] in wanted:
            count, size = count + 1, size + info.size
    return count, size


def clean_up(service: Service, job_ids: Sequence[str], clients: int) -> dict[str, Any]:
    """Delete a phase's jobs through the API and check they leave no object behind: the
    delete path at scale, and the disk the next phase needs (1,000 jobs hold about 30 GB)."""
    objects, size = job_objects(service, job_ids)
    began = time.monotonic()
    answers = asyncio.run(delete_all(service, job_ids, clients))
    seconds = time.monotonic() - began
    left, _ = job_objects(service, job_ids)
    print(f"deleted {answers.get('204', 0)}/{len(job_ids)} jobs ({objects} objects, "
          f"{size / 1e9:.1f} GB) in {seconds:.1f} s; objects left: {left}", flush=True)  # fmt: skip
    return {
        "delete_answers": dict(answers),
        "delete_s": round(seconds, 1),
        "objects_before_delete": objects,
        "bytes_before_delete": size,
        "objects_left_after_delete": left,
    }


# --- one phase -----------------------------------------------------------------------------


def status_counts(database_url: str, job_ids: Sequence[str]) -> Counter[str]:
    import psycopg

    with psycopg.connect(database_url.replace("+psycopg", "")) as conn:
        rows = conn.execute(
            "SELECT status, count(*) FROM jobs WHERE id = ANY(%s) GROUP BY status", [list(job_ids)]
        ).fetchall()
    return Counter(dict(rows))


def running_owner_pids(database_url: str) -> Counter[int]:
    """Worker pids holding a running job (the pid is the middle of ``host:pid:uuid``)."""
    import psycopg

    with psycopg.connect(database_url.replace("+psycopg", "")) as conn:
        owners = conn.execute("SELECT lease_owner FROM jobs WHERE status = 'running'").fetchall()
    return Counter(int(owner.split(":")[1]) for (owner,) in owners if owner)


def wait_until_terminal(
    service: Service,
    job_ids: Sequence[str],
    workers: list[Worker],
    *,
    stall_s: float,
    kill_at: int | None,
) -> tuple[float, dict[str, Any] | None]:
    """Poll until every job is terminal or nothing finished for ``stall_s``; kill one busy
    worker once ``kill_at`` jobs are done. Returns (seconds waited, what was killed)."""
    began = last_change = time.monotonic()
    done_before = -1
    killed: dict[str, Any] | None = None
    while True:
        counts = status_counts(service.database_url, job_ids)
        done = sum(counts[s] for s in TERMINAL)
        now = time.monotonic()
        if done != done_before:
            done_before, last_change = done, now
        rate = 60 * done / max(now - began, 1e-9)
        print(f"\r  {done}/{len(job_ids)} done ({dict(counts)}), {rate:.1f} jobs/min, "
              f"{now - began:.0f} s   ", end="", flush=True)  # fmt: skip
        if done == len(job_ids) or now - last_change > stall_s:
            print(flush=True)
            return now - began, killed
        if kill_at is not None and killed is None and done >= kill_at:
            busy = running_owner_pids(service.database_url)
            victim = next((w for w in workers if busy[w.process.pid]), None)
            if victim is not None:
                victim.kill9()
                killed = {"worker": victim.number, "pid": victim.process.pid, "at_done": done}
                print(f"\n  kill -9 worker {victim.number} (pid {victim.process.pid}) "
                      f"at {done} done", flush=True)  # fmt: skip
        time.sleep(POLL_S)


def phase_report(
    service: Service, job_ids: Sequence[str], seconds: float, killed: dict[str, Any] | None
) -> dict[str, Any]:
    """Audit every job of the phase from the database; the figures of the phase."""
    import psycopg

    with psycopg.connect(service.database_url.replace("+psycopg", "")) as conn:
        jobs = {
            row[0]: row[1:]
            for row in conn.execute(
                "SELECT id, status, attempt, created_at FROM jobs WHERE id = ANY(%s)",
                [list(job_ids)],
            )
        }
        events: dict[str, list[Event]] = {job_id: [] for job_id in job_ids}
        for job_id, *row in conn.execute(
            "SELECT job_id, id, kind, data, created_at FROM job_events WHERE job_id = ANY(%s) "
            "ORDER BY id",
            [list(job_ids)],
        ):
            events[job_id].append(Event(*row))
        artifact_sets = Counter(
            job_id
            for (job_id,) in conn.execute(
                "SELECT job_id FROM artifacts WHERE job_id = ANY(%s) AND name = %s",
                [list(job_ids), "student.safetensors"],
            )
        )
    problems: dict[str, list[str]] = {}
    latencies, runs, re_runs = [], [], 0
    phase_times: dict[str, list[float]] = {p: [] for p in PHASES}
    killed_pid = killed["pid"] if killed else None
    for job_id in job_ids:
        if job_id not in jobs:
            problems[job_id] = ["lost: answered 201 but not in the database"]
            continue
        status, attempt, created_at = jobs[job_id]
        audit = audit_job(events[job_id])
        found = list(audit.problems)
        if status != "succeeded":
            found.append(f"ended {status}" if status in TERMINAL else f"stuck {status}")
        if len(audit.attempts) != attempt:
            found.append(f"{len(audit.attempts)} claims for {attempt} attempts")
        if artifact_sets[job_id] != (status == "succeeded"):
            found.append(f"{artifact_sets[job_id]} student.safetensors artifacts")
        for lost in audit.attempts[:-1]:
            if killed_pid is None or int(lost.owner.split(":")[1]) != killed_pid:
                found.append(f"attempt by {lost.owner} lost, but that worker was not killed")
        re_runs += len(audit.attempts) > 1
        if found:
            problems[job_id] = found
        if audit.attempts:
            latencies.append((audit.attempts[0].started - created_at).total_seconds())
            last = audit.attempts[-1]
            if last.ended is not None:
                runs.append((last.ended - last.started).total_seconds())
                for phase, seconds_in in last.phase_seconds().items():
                    phase_times[phase].append(seconds_in)
    succeeded = sum(1 for j in job_ids if j in jobs and j not in problems)
    return {
        "jobs": len(job_ids),
        "exactly_once": succeeded,
        "re_run": re_runs,
        "problems": dict(list(problems.items())[:20]),
        "jobs_with_problems": len(problems),
        "seconds": round(seconds, 1),
        "jobs_per_min": round(60 * len(job_ids) / seconds, 1),
        "queue_to_start_s": {k: round(v, 2) for k, v in quantiles(latencies).items()},
        "run_s": {k: round(v, 2) for k, v in quantiles(runs).items()},
        "phase_p50_s": {p: round(statistics.median(t), 2) for p, t in phase_times.items() if t},
        "killed": killed,
    }


def run_phase(
    name: str, service: Service, args: argparse.Namespace, *, kill: bool
) -> dict[str, Any]:
    log_dir = service.log_dir / name
    log_dir.mkdir(parents=True, exist_ok=True)
    workers = [Worker.start(i, service.env, log_dir) for i in range(args.workers)]
    try:
        began = time.monotonic()
        job_ids, failures = asyncio.run(submit_all(service, args.jobs, args.clients, args.student))
        submitted_s = time.monotonic() - began
        print(f"{name}: {len(job_ids)} jobs submitted in {submitted_s:.1f} s "
              f"(failed: {dict(failures) or 0})", flush=True)  # fmt: skip
        seconds, killed = wait_until_terminal(
            service,
            job_ids,
            workers,
            stall_s=args.stall_timeout,
            kill_at=args.jobs // 2 if kill else None,
        )
        if kill and killed is None:
            raise RuntimeError("no worker was busy to kill: the kill phase tested nothing")
        report = phase_report(service, job_ids, seconds + submitted_s, killed)
        report |= {"submit_failures": dict(failures), "submit_s": round(submitted_s, 1)}
        report |= clean_up(service, job_ids, args.clients)
        return report
    finally:
        for worker in workers:
            worker.stop()


def table(phases: dict[str, dict[str, Any]]) -> str:
    lines = [
        f"{'phase':<8} {'exactly once':>14} {'re-run':>6} {'jobs/min':>8} "
        f"{'queue→start p50 / p90 / p99 / max (s)':>40} {'run p50 (s)':>11}"
    ]
    for name, r in phases.items():
        q = r["queue_to_start_s"]
        lines.append(
            f"{name:<8} {r['exactly_once']:>6}/{r['jobs']:<7} {r['re_run']:>6} "
            f"{r['jobs_per_min']:>8.1f} "
            f"{q['p50']:>11.1f} / {q['p90']:>6.1f} / {q['p99']:>6.1f} / {q['max']:>6.1f}"
            f"{r['run_s']['p50']:>12.1f}"
        )
    for name, r in phases.items():
        split = ", ".join(f"{p} {t:.1f} s" for p, t in r["phase_p50_s"].items())
        lines.append(f"{name}: a successful run's phases, p50: {split}")
    return "\n".join(lines)


def headline(phases: dict[str, dict[str, Any]]) -> str:
    calm = phases["calm"]
    parts = [f"scale: {calm['exactly_once']}/{calm['jobs']} jobs exactly once"]
    if "kill" in phases:
        kill = phases["kill"]
        parts[0] += (f" (kill -9 phase: {kill['exactly_once']}/{kill['jobs']}, "
                     f"{kill['re_run']} re-run)")  # fmt: skip
    q = calm["queue_to_start_s"]
    parts.append(f"queue-to-start p50 {q['p50']:.1f} s, p99 {q['p99']:.1f} s")
    parts.append(f"{calm['jobs_per_min']:.1f} jobs/min on {calm['workers']} workers")
    return ", ".join(parts)


def _raise_interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--clients", type=int, default=50, help="concurrent HTTP submitters")
    parser.add_argument(
        "--student",
        default=TINY_STUDENT,
        choices=sorted(STUDENTS),
        help="the jobs' student (default: the zoo's smallest)",
    )
    parser.add_argument(
        "--train-threads",
        type=int,
        help="torch threads per training process (default: CPUs / workers, as README "
        "recommends for workers sharing a host; 0: torch's default, every core)",
    )
    parser.add_argument("--no-kill-phase", dest="kill_phase", action="store_false")
    parser.add_argument(
        "--stall-timeout",
        type=float,
        default=300.0,
        help="give up after this long with no job finishing (s)",
    )
    parser.add_argument("--log-dir", type=Path, help="keep data and logs here")
    args = parser.parse_args()
    if args.jobs < 2 or args.workers < 2:
        parser.error("--jobs and --workers must be at least 2 (one worker is killed midway)")
    signal.signal(signal.SIGTERM, _raise_interrupt)  # stop everything as Ctrl-C does
    print(f"{args.jobs} jobs, {args.workers} workers, {os.cpu_count()} CPUs, "
          f"train threads {args.train_threads if args.train_threads is not None else 'auto'}, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    with ExitStack() as stack:
        if args.log_dir is None:
            log_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fopro-scale-")))
        else:
            log_dir = args.log_dir
            log_dir.mkdir(parents=True, exist_ok=True)
        threads = args.train_threads
        if threads is None:
            threads = max(1, (os.cpu_count() or 1) // args.workers)
        env, url, db_url = stack.enter_context(deployment(log_dir, stack, threads))
        key = make_admin_key(env)
        ingest = Worker.start(99, env, log_dir)
        try:
            dataset_id = upload_dataset(url, key, log_dir)
        finally:
            ingest.stop()
        service = Service(env, url, key, dataset_id, db_url, log_dir)
        phases = {"calm": run_phase("calm", service, args, kill=False)}
        if args.kill_phase:
            phases["kill"] = run_phase("kill", service, args, kill=True)
    for report in phases.values():
        report["workers"] = args.workers
        for job_id, found in report["problems"].items():
            print(f"  {job_id}: {'; '.join(found)}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    results = {"args": vars(args), "load_average": os.getloadavg()[0], "phases": phases}
    RESULTS.write_text(json.dumps(results, indent=2, default=str))
    print(table(phases))
    print(headline(phases))


if __name__ == "__main__":
    main()
