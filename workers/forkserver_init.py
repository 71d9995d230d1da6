"""Imported first, and only, by a worker's training forkserver (``workers.training.PRELOAD``):
the forkserver is killed the moment its worker exits, even in the middle of its imports.

multiprocessing's forkserver notices its parent's exit only between requests, so a worker
killed (or stopped) while the forkserver still imports torch would leave it running for seconds.
``PR_SET_PDEATHSIG`` is cleared in forked children: training children are not affected (they are
tied to their supervisor instead, ``workers.child.die_with_parent``).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1

if sys.platform.startswith("linux"):
    _parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != _parent:  # the worker died before the call
        os._exit(1)
