"""`fopro` subprocesses for integration tests: started with a log file, stopped politely."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass
class ServiceProcess:
    """A `fopro` subprocess with its log file."""

    process: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def start(cls, args: list[str], env: dict[str, str], log_path: Path) -> ServiceProcess:
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "fopro", *args],
                env={**os.environ, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return cls(process, log_path)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_tail(self, chars: int = 3000) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return f"--- {self.log_path.name} ---\n{text[-chars:]}"
