"""Peak RSS growth of the API while it streams a ~1 GB dataset archive into the object store.

A real ``fopro serve`` process (embedded backend: SQLite, local object directory; upload limit
raised) receives the archive as the raw request body from a file on disk. A thread samples the API
process's ``VmRSS`` from ``/proc/<pid>/status`` every 20 ms; the kernel's ``VmHWM`` (peak) is read
too. Baseline, same run and same server: a small upload of the same kind, so the ratio of the two
RSS growths shows whether memory grows with the archive; throughput is compared with a plain
local file copy of the same archive (the store writes to the same disk).

The archive is a tar of incompressible noise PNGs in class folders (an ImageFolder dataset as a
hospital would send it). No worker runs: only the upload path of the API is measured.

    python -m bench.upload_rss                 # ~1 GB archive, prints the BENCHMARKS.md figures
    python -m bench.upload_rss --size-mb 100   # quicker
"""

from __future__ import annotations

import argparse
import io
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.db import make_engine
from app.core.migrate import upgrade
from app.teams.models import Role
from app.teams.service import create_api_key, create_team

IMAGE_SIDE = 512
SAMPLE_INTERVAL_S = 0.02
UPLOAD_CHUNK = 1024 * 1024


def write_noise_archive(path: Path, size_mb: int, *, classes: int = 4, seed: int = 0) -> int:
    """Write a tar of uncompressed noise PNGs (``IMAGE_SIDE``² RGB, ~0.79 MB each) totalling about
    ``size_mb`` MB to ``path``; returns its size in bytes."""
    rng = np.random.default_rng(seed)
    per_image = IMAGE_SIDE * IMAGE_SIDE * 3
    count = max(classes * 2, size_mb * 1_000_000 // per_image)
    with tarfile.open(path, "w") as tar:
        for number in range(count):
            pixels = rng.integers(0, 256, (IMAGE_SIDE, IMAGE_SIDE, 3), dtype=np.uint8)
            out = io.BytesIO()
            # Noise does not compress; level 0 keeps generation fast and the bytes incompressible.
            Image.fromarray(pixels).save(out, format="PNG", compress_level=0)
            info = tarfile.TarInfo(f"class_{number % classes}/img_{number:06d}.png")
            info.size = out.tell()
            out.seek(0)
            tar.addfile(info, out)
    return path.stat().st_size


def read_status_kb(pid: int, field: str) -> int:
    """A ``kB`` field (``VmRSS``, ``VmHWM``) of ``/proc/<pid>/status``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(f"{field} not in /proc/{pid}/status")


class RssSampler:
    """Samples a process's VmRSS in a background thread; ``peak_kb`` is the largest seen."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._stop = threading.Event()
        self.peak_kb = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, read_status_kb(self._pid, "VmRSS"))
            time.sleep(SAMPLE_INTERVAL_S)


@dataclass(frozen=True)
class Measurement:
    size_bytes: int
    seconds: float
    rss_before_kb: int
    rss_peak_kb: int

    @property
    def growth_mb(self) -> float:
        return (self.rss_peak_kb - self.rss_before_kb) / 1024

    @property
    def mb_per_s(self) -> float:
        return self.size_bytes / 1e6 / self.seconds


def upload(
    base_url: str, key: str, archive: Path, name: str, pid: int, *, form: bool
) -> Measurement:
    """Stream ``archive`` to ``POST /v1/datasets`` (raw body, or a multipart form with ``form``)
    while sampling the API's RSS."""

    def body() -> Iterator[bytes]:
        with archive.open("rb") as handle:
            while chunk := handle.read(UPLOAD_CHUNK):
                yield chunk

    before = read_status_kb(pid, "VmRSS")
    headers = {"Authorization": f"Bearer {key}"}
    with (
        RssSampler(pid) as sampler,
        httpx.Client(base_url=base_url, timeout=600) as client,
        archive.open("rb") as handle,
    ):
        started = time.perf_counter()
        if form:
            # httpx streams file parts in chunks; the form is never built in memory.
            response = client.post(
                "/v1/datasets",
                data={"name": name},
                files={"file": (archive.name, handle, "application/x-tar")},
                headers=headers,
            )
        else:
            size = str(archive.stat().st_size)
            response = client.post(
                f"/v1/datasets?name={name}",
                content=body(),
                headers={**headers, "Content-Type": "application/x-tar", "Content-Length": size},
            )
        seconds = time.perf_counter() - started
    if response.status_code != 202:
        raise SystemExit(f"upload failed: {response.status_code} {response.text}")
    if response.json()["archive_bytes"] != archive.stat().st_size:
        raise SystemExit("the stored archive does not have the uploaded size")
    return Measurement(archive.stat().st_size, seconds, before, max(sampler.peak_kb, before))


def copy_mb_per_s(archive: Path, target_dir: Path) -> float:
    """MB/s of a plain streamed copy of ``archive`` to the same disk, fsynced like the store."""
    target = target_dir / "copy.bin"
    started = time.perf_counter()
    with archive.open("rb") as source, target.open("wb") as out:
        shutil.copyfileobj(source, out, UPLOAD_CHUNK)
        out.flush()
        os.fsync(out.fileno())
    seconds = time.perf_counter() - started
    target.unlink()
    return archive.stat().st_size / 1e6 / seconds


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_api(env: dict[str, str], port: int, log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "fopro", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"fopro serve exited:\n{log_path.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit("fopro serve did not become healthy within 60 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="archive size (default 1024)")
    parser.add_argument("--baseline-mb", type=int, default=16, help="baseline upload size")
    parser.add_argument("--form", action="store_true", help="multipart/form-data, not a raw body")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fopro-upload-bench-") as tmp:
        root = Path(tmp)
        print(f"writing a {args.size_mb} MB archive of noise PNGs ...", flush=True)
        big = root / "big.tar"
        write_noise_archive(big, args.size_mb, seed=1)
        small = root / "small.tar"
        write_noise_archive(small, args.baseline_mb, seed=2)
        env = {
            "FOPRO_ENV": "test",
            "FOPRO_DATA_DIR": str(root / "fopro"),
            "FOPRO_MAX_UPLOAD_BYTES": str(4 * big.stat().st_size),
        }
        settings = Settings(data_dir=root / "fopro", max_upload_bytes=4 * big.stat().st_size)
        settings.ensure_dirs()
        upgrade(settings.database_url)
        engine = make_engine(settings.database_url)
        with Session(engine) as session:
            team = create_team(session, "bench")
            _, key = create_api_key(session, team, Role.member, settings.secret_key)
            session.commit()
        engine.dispose()
        port = free_port()
        api = start_api(env, port, root / "api.log")
        try:
            base_url = f"http://127.0.0.1:{port}"
            baseline = upload(
                base_url, key, small, f"baseline-{secrets.token_hex(3)}", api.pid, form=args.form
            )
            measured = upload(
                base_url, key, big, f"big-{secrets.token_hex(3)}", api.pid, form=args.form
            )
            hwm_mb = read_status_kb(api.pid, "VmHWM") / 1024
        finally:
            api.send_signal(signal.SIGTERM)
            api.wait(timeout=30)
        disk = copy_mb_per_s(big, root)
    shape = "multipart/form-data" if args.form else "raw body"
    print(
        f"API process, {shape} uploads (after start-up and a "
        f"{baseline.size_bytes / 1e6:.0f} MB warm-up upload):"
    )
    print(f"  RSS before the big upload       {measured.rss_before_kb / 1024:8.1f} MB")
    for label, result in (("", measured), (" (baseline)", baseline)):
        print(
            f"  {result.size_bytes / 1e6:7.0f} MB upload: peak RSS growth "
            f"{result.growth_mb:6.1f} MB, {result.mb_per_s:6.1f} MB/s{label}"
        )
    print(f"  VmHWM (kernel peak) of the API   {hwm_mb:8.1f} MB")
    print(f"  local file copy of the archive   {disk:8.1f} MB/s (baseline)")
    ratio = measured.size_bytes / baseline.size_bytes
    print(
        f"archive {ratio:.0f}x larger -> RSS growth {measured.growth_mb:.1f} MB vs "
        f"{baseline.growth_mb:.1f} MB; upload speed {measured.mb_per_s / disk:.2f}x a plain copy"
    )


if __name__ == "__main__":
    main()
