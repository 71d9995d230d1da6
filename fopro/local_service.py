"""The whole service on this machine as child processes: the API, a cpu worker and a gpu worker.

``fopro up`` runs it in the foreground; ``fopro demo`` starts it, drives it over HTTP and stops
it. Two solo workers, so a long training run never delays dataset checks on the cpu queue.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

STOP_GRACE_S = 20.0


@dataclass
class LocalService:
    """Running children by role (``api``, ``cpu-worker``, ``gpu-worker``) and the API's URL."""

    url: str
    children: dict[str, subprocess.Popen[bytes]]
    _logs: ExitStack = field(default_factory=ExitStack)

    @classmethod
    def start(
        cls, host: str, port: int, *, log_dir: Path | None = None, own_process_groups: bool = False
    ) -> LocalService:
        """Start the children (the schema must be migrated already).

        ``log_dir``: each child writes ``<role>.log`` there instead of this terminal.
        ``own_process_groups``: children do not get the terminal's Ctrl-C, so the caller decides
        the order of shutting down (``fopro demo`` cancels its job first).
        """
        me = [sys.executable, "-m", "fopro"]
        commands = {
            "api": [*me, "serve", "--host", host, "--port", str(port)],
            **{
                f"{queue}-worker": [
                    *me, "worker", "--queues", queue, "--name", f"{queue}@{socket.gethostname()}"
                ]
                for queue in ("cpu", "gpu")
            },
        }  # fmt: skip
        service = cls(f"http://{host}:{port}", {})
        for role, command in commands.items():
            output: IO[bytes] | None = None
            if log_dir is not None:
                log_dir.mkdir(parents=True, exist_ok=True)
                output = service._logs.enter_context((log_dir / f"{role}.log").open("ab"))
            service.children[role] = subprocess.Popen(
                command,
                stdout=output,
                stderr=subprocess.STDOUT if output is not None else None,
                process_group=0 if own_process_groups else None,
            )
        return service

    def wait_ready(self, timeout_s: float) -> bool:
        """Poll ``/readyz`` until it answers 200 (True), a child exits or time runs out (False)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                return False
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as resp:
                    if resp.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        return False

    def alive(self) -> bool:
        return all(child.poll() is None for child in self.children.values())

    def failed(self) -> list[str]:
        """Roles of children that exited with an error (a stop by SIGTERM is not one)."""
        return [
            role
            for role, child in self.children.items()
            if child.returncode not in (0, -signal.SIGTERM, None)
        ]

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM every child, wait up to ``grace_s`` seconds in all, then kill what is left."""
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for child in self.children.values():
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        self._logs.close()
