"""Entry points of the processes the worker forks from its training forkserver.

This module stays light (no torch, no engine): the worker imports it to name the child's target,
and the heavy imports happen in the forkserver, once (``workers.training.PRELOAD``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
from multiprocessing.connection import Connection

PR_SET_NAME = 15
TRAINER_NAME = "fopro-train"  # what ps, top and /proc/PID/comm show for a training child
CUDA_FORKED = 3  # the probe's exit code when the forkserver had initialised CUDA


def die_with_parent(lifeline: Connection) -> None:
    """Make sure this process never outlives the supervisor that started it.

    The supervisor holds the only writing end of ``lifeline`` and never writes: a watchdog
    thread blocked reading it sees end-of-file the moment the supervisor exits (``kill -9``
    included, since the kernel closes its descriptors) and kills this process. Unlike
    ``PR_SET_PDEATHSIG`` this follows the supervisor, not our parent (the forkserver). The
    process is also renamed ``fopro-train``.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_NAME, TRAINER_NAME.encode(), 0, 0, 0)

    def watch() -> None:
        with contextlib.suppress(EOFError, OSError):
            lifeline.recv_bytes()
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="supervisor-watchdog", daemon=True).start()


def run_training(job_id: str, owner: str, run_dir: str, lifeline: Connection) -> None:
    """The training child: tied to its supervisor, then job ``job_id``'s run."""
    die_with_parent(lifeline)
    from workers.distillation import run_in_child

    run_in_child(job_id, owner, run_dir)


def probe_runtime() -> None:
    """The worker's warm-up child: exits ``CUDA_FORKED`` when the forkserver it came from had
    initialised CUDA (a forked CUDA context is unusable), else 0."""
    import torch

    if torch.cuda._is_in_bad_fork():  # torch's own fork check
        os._exit(CUDA_FORKED)
