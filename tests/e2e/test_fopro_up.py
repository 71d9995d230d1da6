"""`fopro up` (what `make run` ends with): migrate, start API + worker, ready within a minute."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.integration


def test_up_serves_readyz_then_stops_every_child_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "FOPRO_DATA_DIR": str(tmp_path / "fopro"), "FOPRO_ENV": "test"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fopro", "up", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/readyz"
    body = None
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    body = json.loads(resp.read())
                    break
            except (urllib.error.URLError, OSError):
                time.sleep(0.5)
        assert body == {
            "status": "ready",
            "checks": {"database": "ok", "broker": "ok", "store": "ok"},
        }, "fopro up did not become ready within 60 s"
        assert (tmp_path / "fopro" / "fopro.db").exists()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            output = proc.communicate(timeout=30)[0].decode(errors="replace")
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output = proc.communicate()[0].decode(errors="replace")
            pytest.fail(f"fopro up did not stop on Ctrl-C:\n{output[-3000:]}")
    assert proc.returncode == 0, output[-3000:]
    assert f"http://127.0.0.1:{port}" in output
    # Every child is gone: nothing in the session still runs.
    leftover = subprocess.run(
        ["pgrep", "-s", str(proc.pid)], capture_output=True, text=True, check=False
    ).stdout.split()
    assert leftover == [], f"children still running: {leftover}"
