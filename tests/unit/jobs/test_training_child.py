"""The training child's ties to its worker: it dies the moment its supervisor's end of the
lifeline closes, it is named for ``ps``, and the worker process itself stays free of torch (the
heavy imports live in the training forkserver)."""

from __future__ import annotations

import multiprocessing
import signal
import subprocess
import sys
import time
from pathlib import Path

from workers.child import TRAINER_NAME, die_with_parent


def _tied_sleeper(lifeline: object) -> None:
    die_with_parent(lifeline)  # type: ignore[arg-type]
    time.sleep(60)


def test_a_child_dies_at_once_when_its_supervisor_end_closes_and_is_named_for_ps() -> None:
    context = multiprocessing.get_context("spawn")
    lifeline, ours = context.Pipe(duplex=False)
    child = context.Process(target=_tied_sleeper, args=(lifeline,), daemon=True)
    child.start()
    lifeline.close()
    try:
        deadline = time.monotonic() + 20
        comm = ""
        while comm != TRAINER_NAME and time.monotonic() < deadline:
            time.sleep(0.05)
            comm = Path(f"/proc/{child.pid}/comm").read_text().strip()
        assert comm == TRAINER_NAME
        child.join(0.5)
        assert child.is_alive(), "the child must live while its supervisor does"

        closed = time.monotonic()
        ours.close()  # what the kernel does when the supervisor exits, kill -9 included
        child.join(5)
        assert child.exitcode == -signal.SIGKILL
        assert time.monotonic() - closed < 2
    finally:
        if child.is_alive():
            child.kill()


def test_the_worker_process_never_imports_torch() -> None:
    """Celery imports every task module into the worker; none may pull in torch (or the
    engine), which belongs in the forkserver and its children."""
    script = (
        "import importlib, sys\n"
        "from workers.celery_app import celery_app\n"
        "for name in celery_app.conf.include: importlib.import_module(name)\n"
        "import workers.child\n"
        "heavy = sorted(m for m in ('torch', 'timm', 'onnx', 'matplotlib') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    found = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    ).stdout.strip()
    assert found == ""


def test_the_training_thread_budget_sets_torchs_threads_and_zero_keeps_its_default() -> None:
    # In a fresh interpreter: torch's thread count is process-wide.
    script = (
        "import torch\n"
        "from workers.distillation import apply_thread_budget\n"
        "default = torch.get_num_threads()\n"
        "apply_thread_budget(0)\n"
        "assert torch.get_num_threads() == default\n"
        "apply_thread_budget(1)\n"
        "print(torch.get_num_threads())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "1"
