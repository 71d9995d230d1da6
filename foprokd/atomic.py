"""Write-then-rename: a reader sees a file's old content or its new content, never half of it.

Torch-free, so the API, the workers and the engine share the one idiom.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def temp_sibling(path: Path) -> Path:
    """A hidden name beside ``path``, unique to this process and thread (same filesystem, so the
    final rename is atomic)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")


@contextmanager
def atomic_paths(paths: Sequence[Path], *, fsync: bool = False) -> Iterator[list[Path]]:
    """Yield one temporary path per target; when the block succeeds they are renamed onto the
    targets in the given order (put the file whose presence means "complete" last), and on any
    error every temporary file is removed and no target changes.

    ``fsync`` flushes each file to disk before its rename (checkpoints, installed weights).
    """
    temps = [temp_sibling(path) for path in paths]
    try:
        yield temps
        for temp, path in zip(temps, paths, strict=True):
            if fsync:
                with temp.open("rb") as handle:
                    os.fsync(handle.fileno())
            os.replace(temp, path)
    finally:
        for temp in temps:
            temp.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: Path, *, fsync: bool = False) -> Iterator[Path]:
    """``atomic_paths`` for one file: write the yielded path, and it replaces ``path``."""
    with atomic_paths([path], fsync=fsync) as (temp,):
        yield temp


def write_text_atomic(path: Path, text: str) -> Path:
    """Replace ``path`` with ``text`` (UTF-8) in one rename; returns ``path``."""
    with atomic_path(path) as temp:
        temp.write_text(text, encoding="utf-8")
    return path


def write_json_atomic(path: Path, payload: Mapping[str, Any]) -> Path:
    """Replace ``path`` with ``payload`` as indented JSON in one rename; returns ``path``."""
    return write_text_atomic(path, json.dumps(payload, indent=2))
