"""API load: requests/s and p50/p99 latency of ``GET /v1/jobs/{id}``, ``GET /v1/jobs?limit=50``
and ``POST /v1/jobs`` with many concurrent clients, on PostgreSQL (+ Redis broker) and on the
embedded SQLite default; baseline in the same run: ``bench.bare_api``, a bare FastAPI app doing
a primary-key select from the same database without the auth lookup. Prints ours / bare last.

Both servers run as real processes (``fopro serve --workers N`` and ``uvicorn --workers N``); the
load comes from asyncio + httpx in this process, which shares the machine's CPUs with them, so on
a small machine the client's own cost caps both figures alike (the ratio stays meaningful).
With clients sending back to back, latency is clients / throughput (Little's law), so the same
GET routes are then driven at a fixed rate (each client once per ``--poll-interval`` seconds, as
dashboards poll) to give the p99 a person waits at that load.

    python -m bench.api_load                              # both backends, 50 clients, 10 s each
    python -m bench.api_load --backends sqlite --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

# The test suite's throwaway database (FOPRO_TEST_PG_ADMIN names the server).
from tests.support.databases import temporary_postgres_database

# One request of a route: the client and the extra headers to send (the request id).
Request = Callable[[httpx.AsyncClient, dict[str, str]], Awaitable[httpx.Response]]

REDIS_URL = os.environ.get("FOPRO_BENCH_REDIS", "redis://127.0.0.1:6379/15")
SEEDED_JOBS = 200
DRAIN_S = 5.0


@dataclass
class Result:
    name: str
    latencies_s: list[float]
    errors: Counter[int]  # answers that were not 2xx, by status
    seconds: float
    # When each request was sent, seconds after the run began (same order as latencies_s):
    # tells a stall at the start (connections opening) from one in the middle.
    sent_at_s: list[float] = field(default_factory=list)
    # The X-Request-ID each request carried (same order): a slow one can be found in the server's
    # log, which names every request slower than ``slow_request_s`` with its id.
    request_ids: list[str] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return len(self.latencies_s) / self.seconds

    def quantile_ms(self, q: float) -> float:
        if len(self.latencies_s) < 2:
            return float("nan")
        return 1000 * statistics.quantiles(self.latencies_s, n=100)[int(q * 100) - 1]

    def slow(self, over_s: float = 1.0) -> list[tuple[float, float]]:
        """(sent at, latency) of every request slower than ``over_s``, slowest first."""
        pairs = zip(self.sent_at_s, self.latencies_s, strict=False)
        return sorted(((at, lat) for at, lat in pairs if lat > over_s), key=lambda p: -p[1])

    def slow_ids(self, over_s: float = 1.0) -> list[str]:
        """The request ids of every request slower than ``over_s``."""
        pairs = zip(self.request_ids, self.latencies_s, strict=False)
        return [rid for rid, lat in pairs if lat > over_s]

    def line(self) -> str:
        text = (
            f"{self.name:<34} {self.rps:8.1f} req/s  p50 {self.quantile_ms(0.50):7.1f} ms  "
            f"p99 {self.quantile_ms(0.99):7.1f} ms  errors {dict(self.errors) or 0}"
        )
        if slow := self.slow():
            worst = ", ".join(f"{lat:.1f} s sent at +{at:.1f} s" for at, lat in slow[:3])
            text += f"  ({len(slow)} over 1 s: {worst})"
        return text


@dataclass
class WrkResult:
    """What ``wrk`` measured (it keeps its own latency histogram)."""

    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: Counter[int]

    def quantile_ms(self, q: float) -> float:
        return {0.5: self.p50_ms, 0.99: self.p99_ms}[q]

    def line(self) -> str:
        return (
            f"{self.name:<34} {self.rps:8.1f} req/s  p50 {self.p50_ms:7.1f} ms  "
            f"p99 {self.p99_ms:7.1f} ms  errors {dict(self.errors) or 0}  (wrk)"
        )


WRK_REPORT = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  local broken = e.connect + e.read + e.write + e.timeout
  io.write(string.format("RESULT %d %d %f %f %d %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), e.status, broken))
end
"""


def drive_wrk(
    name: str,
    clients: int,
    seconds: float,
    url: str,
    workdir: Path,
    *,
    headers: dict[str, str] | None = None,
    body: dict[str, Any] | None = None,
) -> WrkResult:
    """``clients`` connections sending back to back for ``seconds`` from ``wrk`` (one thread, C):
    a load generator whose own cost is small next to the servers', unlike the Python client."""
    lines = [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in (headers or {}).items()]
    if body is not None:
        lines += [
            'wrk.method = "POST"',
            f"wrk.body = {json.dumps(json.dumps(body))}",
            'wrk.headers["Content-Type"] = "application/json"',
        ]
    script = workdir / f"wrk-{abs(hash(name))}.lua"
    script.write_text("\n".join(lines) + WRK_REPORT)
    warm = ["wrk", "-t1", f"-c{clients}", "-d2s", "-s", str(script), url]
    subprocess.run(warm, capture_output=True, check=True)
    command = ["wrk", "-t1", f"-c{clients}", f"-d{seconds:.0f}s", "--timeout", "30s"]
    out = subprocess.run([*command, "-s", str(script), url], capture_output=True, text=True)
    report = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if report is None:
        raise RuntimeError(f"wrk gave no result:\n{out.stdout}\n{out.stderr}")
    requests, duration_us, p50_us, p99_us, bad_status, socket_errors = report.split()[1:]
    errors: Counter[int] = Counter()
    if int(bad_status):
        errors[400] = int(bad_status)  # wrk counts answers >= 400 without their codes
    if int(socket_errors):
        errors[0] = int(socket_errors)
    ok = int(requests) - int(bad_status)
    return WrkResult(
        name, ok / (int(duration_us) / 1e6), float(p50_us) / 1e3, float(p99_us) / 1e3, errors
    )


TCP_COUNTERS = ("ListenOverflows", "ListenDrops", "TCPSynRetrans", "TCPTimeouts")


def tcp_counters() -> dict[str, int]:
    """The kernel's TcpExt counters that a stalled connection shows up in (dropped SYNs retry
    after 1, 3, 7, 15 s): {} where /proc/net/netstat is absent (not Linux)."""
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return {}
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:], strict=False))
            return {name: int(table.get(name, 0)) for name in TCP_COUNTERS}
    return {}


def tcp_change(before: dict[str, int]) -> str:
    after = tcp_counters()
    moved = {k: after[k] - before[k] for k in after if k in before and after[k] != before[k]}
    return f"  tcp: {moved}" if moved else ""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def seed(env: dict[str, str]) -> tuple[str, str, str]:
    """Migrate, then a team with an admin key, a ready dataset row and ``SEEDED_JOBS`` jobs;
    returns (key, dataset id, one job id)."""
    from sqlalchemy.orm import Session

    from app.core.config import Settings
    from app.core.db import make_engine
    from app.core.migrate import upgrade
    from app.datasets.models import Dataset, DatasetStatus
    from app.jobs.models import Job
    from app.teams.models import Role
    from app.teams.service import create_api_key, create_team

    settings = Settings.model_validate(
        {k.removeprefix("FOPRO_").lower(): v for k, v in env.items()}
    )
    upgrade(settings.database_url)
    with Session(make_engine(settings.database_url)) as session:
        team = create_team(session, "bench")
        _, key = create_api_key(session, team, Role.admin, settings.secret_key)
        dataset = Dataset(
            team_id=team.id,
            name="bench",
            status=DatasetStatus.ready.value,
            classes=["a", "b"],
            num_images=20,
        )
        session.add(dataset)
        session.flush()
        jobs = [
            Job(team_id=team.id, dataset_id=dataset.id, teacher="resnet18", student="resnet18",
                method="bsm", params={})
            for _ in range(SEEDED_JOBS)
        ]  # fmt: skip
        session.add_all(jobs)
        session.commit()
        return key, dataset.id, jobs[0].id


@contextmanager
def server(command: list[str], env: dict[str, str], port: int, log: Path) -> Iterator[str]:
    with log.open("wb") as out:
        proc = subprocess.Popen(command, env={**os.environ, **env}, stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{command} exited:\n{log.read_text()[-2000:]}")
            try:
                httpx.get(f"{url}/docs", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{command} did not start") from None
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def drive(
    name: str,
    clients: int,
    seconds: float,
    request: Request,
    interval: float = 0.0,
) -> Result:
    """``clients`` concurrent loops sending ``request`` for ``seconds``, after a short warm-up:
    back to back (closed loop: the server's capacity), or each one request per ``interval``
    seconds, the clients' start times spread over one interval (a dashboard polling). Every
    request carries its own ``X-Request-ID`` (``bench-<n>``)."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        for _ in range(5):
            await request(client, {})
        latencies: list[float] = []
        sent_at: list[float] = []
        ids: list[str] = []
        numbers = itertools.count()
        errors: Counter[int] = Counter()
        stop = time.monotonic() + seconds

        async def loop(offset: float) -> None:
            next_at = time.monotonic() + offset
            while time.monotonic() < stop:
                if interval:
                    await asyncio.sleep(max(next_at - time.monotonic(), 0.0))
                    next_at += interval
                rid = f"bench-{next(numbers)}"
                started = time.perf_counter()
                response = await request(client, {"X-Request-ID": rid})
                if response.is_success:
                    latencies.append(time.perf_counter() - started)
                    sent_at.append(started - began_perf)
                    ids.append(rid)
                else:
                    errors[response.status_code] += 1

        began, began_perf = time.monotonic(), time.perf_counter()
        await asyncio.gather(*(loop(interval * i / clients) for i in range(clients)))
        return Result(name, latencies, errors, time.monotonic() - began, sent_at, ids)


def server_side(result: Result, log: Path) -> str:
    """What the server logged about ``result``'s slow requests: its slow-request lines name the
    request id and the time it took to start answering. A slow request the server did not log
    waited outside the application (the accept queue, the connection, the client)."""
    ids = result.slow_ids()
    if not ids:
        return ""
    text = log.read_text(errors="replace") if log.exists() else ""
    lines = [line for line in text.splitlines() if "slow request" in line]
    found = [next((line for line in lines if f"request id {rid})" in line), None) for rid in ids]
    named = [line for line in found if line is not None]
    report = f"\n    server logged {len(named)} of the {len(ids)} slow requests"
    for line in named[:3]:
        message = line
        with suppress(ValueError):
            message = json.loads(line).get("message", line)
        report += f"\n      {message}"
    return report


def run_backend(
    backend: str, args: argparse.Namespace, workdir: Path
) -> dict[str, Result | WrkResult]:
    env = {
        "FOPRO_ENV": "test",
        "FOPRO_DATA_DIR": str(workdir / backend),
        "FOPRO_RATE_LIMIT": "100000000/minute",  # measure the API, not the rate limiter
        "FOPRO_MAX_ACTIVE_JOBS": "100000000",
        "FOPRO_KEY_CACHE_SECONDS": str(args.key_cache_seconds),
    }
    with temporary_postgres_database() if backend == "postgres" else nullcontext("") as db_url:
        if backend == "postgres":
            import redis

            redis.Redis.from_url(REDIS_URL).flushdb()
            env |= {
                "FOPRO_DATABASE_URL": db_url,
                "FOPRO_BROKER_URL": REDIS_URL,
                "FOPRO_RESULT_BACKEND": REDIS_URL,
            }
        key, dataset_id, job_id = seed(env)
        auth = {"Authorization": f"Bearer {key}"}
        body: dict[str, Any] = {
            "dataset_id": dataset_id,
            "teacher": "resnet18",
            "student": "resnet18",
            "method": "bsm",
            "params": {"epochs": 1, "allow_random_weights": True},
        }
        ours_port, bare_port = free_port(), free_port()
        workers = ["--workers", str(args.workers)]
        ours_cmd = [sys.executable, "-m", "fopro", "serve", "--port", str(ours_port), *workers]
        bare_cmd = [
            *(sys.executable, "-m", "uvicorn", "bench.bare_api:app", "--log-level", "warning"),
            *("--port", str(bare_port), *workers),
        ]
        one, page = f"/v1/jobs/{job_id}", "/v1/jobs?limit=50"
        ours_log = workdir / f"{backend}-ours.log"
        results: dict[str, Result | WrkResult] = {}
        with (
            server(ours_cmd, env, ours_port, ours_log) as ours,
            server(bare_cmd, env, bare_port, workdir / f"{backend}-bare.log") as bare,
        ):
            plan: list[tuple[str, Request]] = [
                ("bare GET pk", lambda c, h: c.get(f"{bare}/bare/jobs/{job_id}", headers=h)),
                ("GET /v1/jobs/{id}", lambda c, h: c.get(f"{ours}{one}", headers=auth | h)),
                (
                    "GET /v1/jobs?limit=50",
                    lambda c, h: c.get(f"{ours}{page}", headers=auth | h),
                ),
                (
                    "POST /v1/jobs",
                    lambda c, h: c.post(f"{ours}/v1/jobs", json=body, headers=auth | h),
                ),
            ]
            wrk_plan: dict[str, tuple[str, dict[str, Any] | None]] = {
                "bare GET pk": (f"{bare}/bare/jobs/{job_id}", None),
                "GET /v1/jobs/{id}": (f"{ours}{one}", None),
                "GET /v1/jobs?limit=50": (f"{ours}{page}", None),
                "POST /v1/jobs": (f"{ours}/v1/jobs", body),
            }
            for name, request in plan:
                label = f"{backend}: {name}"
                before = tcp_counters()
                if args.client == "wrk":
                    url, payload = wrk_plan[name]
                    hdrs = None if name.startswith("bare") else auth
                    results[name] = drive_wrk(
                        label, args.clients, args.seconds, url, workdir, headers=hdrs, body=payload
                    )
                else:
                    results[name] = asyncio.run(drive(label, args.clients, args.seconds, request))
                print(results[name].line() + tcp_change(before), flush=True)
            if args.poll_interval:
                # Requests the closed loop left in flight (POSTs queue on the team lock) finish
                # first, so the paced run measures reads alone.
                time.sleep(DRAIN_S)
                # What 50 people watching dashboards do: each client one request per interval.
                for name, request in plan[1:3]:
                    label = f"{backend}: polled {name}"
                    before = tcp_counters()
                    results[f"polled {name}"] = asyncio.run(
                        drive(label, args.clients, args.seconds, request, args.poll_interval)
                    )
                    polled = results[f"polled {name}"]
                    assert isinstance(polled, Result)
                    report = tcp_change(before) + server_side(polled, ours_log)
                    print(polled.line() + report, flush=True)
        if backend == "postgres":
            import redis

            redis.Redis.from_url(REDIS_URL).flushdb()
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", nargs="+", default=["postgres", "sqlite"])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers of each server")
    parser.add_argument(
        "--key-cache-seconds",
        type=float,
        default=5.0,
        help="FOPRO_KEY_CACHE_SECONDS of our server: 5, as README recommends for production; "
        "0 reads the key's row on every request",
    )
    parser.add_argument("--log-dir", type=Path, help="keep data and server logs here")
    parser.add_argument(
        "--client",
        choices=["wrk", "httpx"],
        default="wrk" if shutil.which("wrk") else "httpx",
        help="closed-loop load generator: wrk (apt-get install wrk; the default when installed) "
        "or this process's asyncio + httpx, which on 2 cores caps both servers near 180 req/s",
    )
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=1.0,
        help="then each client GETs once per this many seconds (0: skip); p99 at that load",
    )
    args = parser.parse_args()
    print(f"{args.clients} clients ({args.client}), {args.seconds:.0f} s per route, "
          f"{args.workers} workers each, key cache {args.key_cache_seconds:g} s, "
          f"{os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    ratios: list[str] = []
    polled: list[str] = []
    with tempfile.TemporaryDirectory(prefix="fopro-bench-load-") as tmp:
        for backend in args.backends:
            workdir = Path(tmp)
            if args.log_dir is not None:  # the servers' logs outlive the run
                workdir = args.log_dir
                workdir.mkdir(parents=True, exist_ok=True)
            results = run_backend(backend, args, workdir)
            bare = results["bare GET pk"].rps
            for name in ("GET /v1/jobs/{id}", "GET /v1/jobs?limit=50", "POST /v1/jobs"):
                ratios.append(f"{backend} {name}: {results[name].rps / bare:.2f}")
            for name in ("GET /v1/jobs/{id}", "GET /v1/jobs?limit=50"):
                if f"polled {name}" in results:
                    p99 = results[f"polled {name}"].quantile_ms(0.99)
                    polled.append(f"{backend} {name}: {p99:.1f} ms")
    if polled:
        print(f"p99 with each client polling every {args.poll_interval:g} s: " + "; ".join(polled))
    print("ours / bare (req/s): " + "; ".join(ratios))


if __name__ == "__main__":
    main()
