"""`fopro admin weights pull` against a stand-in Hugging Face hub on 127.0.0.1, never the internet.

The stand-in answers what huggingface_hub asks of the hub for one file: ``HEAD`` then ``GET``
``/{repo_id}/resolve/{revision}/{filename}``, with ``X-Repo-Commit`` and an ``ETag`` that, for a
large (LFS) file, is the file's sha256.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save, save_file

from foprokd.catalog import STUDENTS
from foprokd.zoo import load_state_dict_file
from tests.conftest import free_port

pytestmark = pytest.mark.integration

NAME = "mobilenetv3_small_100"  # the smallest zoo model: 1.5 M parameters, a 6 MB file
REPO = STUDENTS[NAME].hf_hub_id
PATH = f"/{REPO}/resolve/main/model.safetensors"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
OFFLINE_BOUND_S = 30  # interpreter start, torch import, one 5 s connection attempt


@dataclass
class StandInHub:
    """Serves ``body`` at ``PATH`` with ``etag``; records (method, path) of every request."""

    body: bytes = b""
    etag: str = ""
    requests: list[tuple[str, str]] = field(default_factory=list)
    url: str = ""


@pytest.fixture(scope="module")
def published() -> bytes:
    """What timm publishes for NAME, in shape: a state dict with its ImageNet classifier."""
    torch.manual_seed(0)
    return save(timm.create_model(NAME, pretrained=False).state_dict())


@pytest.fixture
def hub() -> Iterator[StandInHub]:
    state = StandInHub()

    class Handler(BaseHTTPRequestHandler):
        def _headers(self) -> bool:
            state.requests.append((self.command, self.path))
            if self.path != PATH:
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return False
            self.send_response(200)
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("ETag", f'"{state.etag}"')
            self.send_header("Content-Length", str(len(state.body)))
            self.end_headers()
            return True

        def do_HEAD(self) -> None:
            self._headers()

        def do_GET(self) -> None:
            if self._headers():
                self.wfile.write(state.body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_port}"
    yield state
    server.shutdown()
    server.server_close()


def pull(
    tmp_path: Path, endpoint: str, *names: str, timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "FOPRO_DATA_DIR": str(tmp_path / "fopro"),
        "FOPRO_ENV": "test",
        "HF_ENDPOINT": endpoint,
        "HF_HOME": str(tmp_path / "hf-home"),
        "HF_HUB_CACHE": str(tmp_path / "hf-home" / "hub"),
    }
    return subprocess.run(
        [sys.executable, "-m", "fopro", "admin", "weights", "pull", *names],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def weights_dir(tmp_path: Path) -> Path:
    return tmp_path / "fopro" / "weights"


def test_pull_downloads_verifies_and_installs_where_jobs_look(
    tmp_path: Path, hub: StandInHub, published: bytes
) -> None:
    hub.body, hub.etag = published, hashlib.sha256(published).hexdigest()
    result = pull(tmp_path, hub.url, NAME)
    assert result.returncode == 0, result.stderr
    installed = weights_dir(tmp_path) / f"{NAME}.safetensors"
    assert installed.read_bytes() == published
    assert hub.etag in result.stdout
    assert "100%" in result.stderr  # the download's progress bar ran to the end
    assert [p.name for p in weights_dir(tmp_path).iterdir()] == [installed.name]
    # Metadata, then the download; nothing else (no telemetry) leaves the machine.
    assert hub.requests[0] == ("HEAD", PATH)
    assert hub.requests[-1] == ("GET", PATH)
    assert {path for _method, path in hub.requests} == {PATH}
    # The engine's own strict check accepts it: it is a state dict of NAME.
    assert "blocks.0.0.conv_dw.weight" in load_state_dict_file(installed)
    assert not (tmp_path / "hf-home" / "hub").exists() or not any(
        (tmp_path / "hf-home" / "hub").iterdir()
    )


def _garbled(body: bytes) -> bytes:
    """Same size, same header, one tensor's bytes flipped: only the digest can tell."""
    middle = len(body) // 2
    return body[:middle] + bytes(b ^ 0xFF for b in body[middle : middle + 64]) + body[middle + 64 :]


@pytest.mark.parametrize(
    ("served", "reason"),
    [("garbled", "is corrupted: its sha256 is"), ("other_arch", "does not match")],
    ids=["garbled-in-transit", "wrong-architecture"],
)
def test_a_bad_download_is_refused_and_leaves_nothing_behind(
    tmp_path: Path, hub: StandInHub, published: bytes, served: str, reason: str
) -> None:
    if served == "garbled":
        hub.body, hub.etag = _garbled(published), hashlib.sha256(published).hexdigest()
    else:
        other = tmp_path / "other.safetensors"
        save_file(timm.create_model("efficientnet_b0", pretrained=False).state_dict(), other)
        hub.body = other.read_bytes()
        hub.etag = hashlib.sha256(hub.body).hexdigest()
    result = pull(tmp_path, hub.url, NAME)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert reason in errors[0]
    assert "Traceback" not in result.stderr
    # Neither the weights nor the temporary download remain.
    assert list(weights_dir(tmp_path).iterdir()) == []


@pytest.fixture(params=["refused", "silent"])
def unreachable(request: pytest.FixtureRequest) -> Iterator[str]:
    """An endpoint nothing answers on: no listener (refused), or a listener that never replies
    (a firewall that drops packets)."""
    if request.param == "refused":
        yield f"http://127.0.0.1:{free_port()}"
        return
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes handshakes; nobody ever reads or answers
        yield f"http://127.0.0.1:{silent.getsockname()[1]}"


def test_offline_fails_at_once_naming_the_url_and_the_manual_way(
    tmp_path: Path, unreachable: str
) -> None:
    # The subprocess timeout (not a timing assert) stands for "at once": huggingface_hub's own
    # retries with their 60 s timeouts would exceed it.
    result = pull(tmp_path, unreachable, NAME, "resnet50", timeout_s=OFFLINE_BOUND_S)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: Cannot reach "), result.stderr
    assert f"{unreachable}{PATH}" in lines[-1]
    assert f"fopro admin weights add {NAME} FILE" in lines[-1]
    assert "Traceback" not in result.stderr
    assert "resnet50" not in result.stderr  # it stopped at the first failure
    assert not weights_dir(tmp_path).exists() or list(weights_dir(tmp_path).iterdir()) == []
