"""How long a job's training child takes to be ready: spawned (what the worker did before)
against forked from the worker's warm training forkserver (``workers.training``), in one run.

Each child imports what a run needs before and during its job (``workers.training.PRELOAD``:
the engine, torch, timm, ONNX, onnxruntime, matplotlib) and exits; the time is from
``Process.start()`` to its exit. The forkserver's one-off warm-up, which a worker pays once at
start-up before it takes tasks, is reported on its own. Prints the ratio last.

    python -m bench.training_child --children 5
"""

from __future__ import annotations

import argparse
import importlib
import multiprocessing
import statistics
import time
from collections.abc import Callable
from multiprocessing.context import BaseContext

from workers.training import PRELOAD, warm_training_runtime


def import_run_modules() -> None:
    """The child: what a job's run imports (nothing when its forkserver preloaded it)."""
    for name in PRELOAD:
        importlib.import_module(name)


def time_children(context: BaseContext, children: int, on_child: Callable[[float], None]) -> None:
    for _ in range(children):
        start = time.perf_counter()
        child = context.Process(target=import_run_modules)  # type: ignore[attr-defined]
        child.start()
        child.join()
        if child.exitcode != 0:
            raise SystemExit(f"a child failed (exit code {child.exitcode})")
        on_child(time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--children", type=int, default=5, help="children per start method")
    args = parser.parse_args(argv)

    spawned: list[float] = []
    forked: list[float] = []
    time_children(multiprocessing.get_context("spawn"), args.children, spawned.append)
    print(f"spawn: {', '.join(f'{s:.2f}' for s in spawned)} s", flush=True)
    warm_up = warm_training_runtime()
    print(f"forkserver warm-up (once per worker, before its first task): {warm_up:.2f} s")
    time_children(multiprocessing.get_context("forkserver"), args.children, forked.append)
    print(f"forkserver: {', '.join(f'{s:.3f}' for s in forked)} s", flush=True)
    spawn_ms, fork_ms = statistics.median(spawned) * 1e3, statistics.median(forked) * 1e3
    print(
        f"training child ready: spawn {spawn_ms:.0f} ms, warm forkserver {fork_ms:.0f} ms "
        f"(median of {args.children}): {spawn_ms / fork_ms:.0f}x faster"
    )


if __name__ == "__main__":
    main()
