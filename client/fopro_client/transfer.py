"""Progress of uploads and downloads: a callback type, a file wrapper that reports reads, and a
dependency-free bar on stderr for ``progress=True``."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import BinaryIO, TextIO

TransferProgress = Callable[[str, int, int], None]
"""Called as ``progress(label, done_bytes, total_bytes)`` while a file moves."""


class ReportingReader:
    """A binary file that calls ``progress`` with its position after every read, for httpx to
    stream a multipart body from (it seeks to 0 before each attempt, which resets the count)."""

    def __init__(self, file: BinaryIO, label: str, total: int, progress: TransferProgress) -> None:
        self._file = file
        self._label = label
        self._total = total
        self._progress = progress

    def read(self, size: int = -1) -> bytes:
        chunk = self._file.read(size)
        self._progress(self._label, self._file.tell(), self._total)
        return chunk

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def fileno(self) -> int:
        return self._file.fileno()


class StderrProgress:
    """A one-line text bar per file (``label  42%  1.2/2.9 MB``), redrawn in place."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self._last: tuple[str, int] | None = None

    def __call__(self, label: str, done: int, total: int) -> None:
        percent = 100 if total <= 0 else min(100, done * 100 // total)
        if self._last == (label, percent):
            return
        self._last = (label, percent)
        end = "\n" if done >= total else ""
        self._stream.write(f"\r{label}  {percent:3d}%  {done / 1e6:.1f}/{total / 1e6:.1f} MB{end}")
        self._stream.flush()


def progress_callback(progress: TransferProgress | bool) -> TransferProgress | None:
    """``True``: a bar on stderr; ``False``: none; a callable: itself."""
    if progress is True:
        return StderrProgress()
    if progress is False:
        return None
    return progress
