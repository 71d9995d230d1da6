"""End-to-end CPU training speed: the engine's trainer vs the reference recipe, side by side.

Same teacher, student, method (``ekd``: the teacher's forward every step), batch and image size,
on ``--threads`` CPU threads, on generated photo-like JPEGs:

- **reference**: ``foprokd.reference.train_reference`` — per-sample PIL decode + torchvision
  transforms in a ``DataLoader`` (2 workers, as the released code), fp32 eager, ``no_grad``
  teacher forward every step;
- **engine**: ``foprokd.trainer.train`` on the uint8 cache (built once; its cost is reported
  apart) with batched augmentation, in three variants so each change is measured on its own:
  ``fp32`` (cache + batched augmentation; ``cpu_bf16=False``, and the default on CPUs without
  native bf16 kernels), ``bf16`` (autocast alone) and ``bf16+nhwc`` (autocast + channels_last:
  the engine's default on a CPU with native bf16 kernels).

Images/s are steady state: the second of two epochs (the first warms allocators, oneDNN kernel
caches and DataLoader workers); the engine counts training steps only (its per-epoch validation
and checkpoint are not training images). Arms run one after another in one process, repeated
``--rounds`` times, and the median round counts. The last line is the headline ratio.

    python -m bench.cpu_speed --sizes 32 224 --threads 2
    python -m bench.cpu_speed --quick          # smoke run
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench.data_loading import write_jpegs
from foprokd.atomic import write_json_atomic
from foprokd.hyperparams import TrainConfig
from foprokd.image_cache import ImageCache
from foprokd.manifest import ManifestRow
from foprokd.reference import ReferenceRecipe, train_reference
from foprokd.runtime import has_fast_bf16, seed_everything
from foprokd.student import Student, build_student
from foprokd.trainer import EpochSummary, TrainCallbacks, train
from foprokd.zoo import FrozenTeacher, load_teacher

ENGINE_VARIANTS: dict[str, dict[str, bool]] = {
    "engine fp32": {"cpu_bf16": False},
    "engine bf16": {"cpu_bf16": True, "channels_last": False},
    "engine bf16+nhwc": {"cpu_bf16": True, "channels_last": True},
}


@dataclass(frozen=True)
class Setting:
    image_size: int
    batch_size: int
    steps: int  # per epoch
    teacher: str
    student: str
    threads: int
    loader_workers: int

    @property
    def images(self) -> int:
        return self.batch_size * self.steps


def models(setting: Setting, num_classes: int) -> tuple[FrozenTeacher, Student]:
    """Random-weight teacher and student (speed only: the weights do not change the work)."""
    seed_everything(0)
    teacher = load_teacher(setting.teacher, allow_random=True)
    student = build_student(setting.student, num_classes, teacher.feature_dim, allow_random=True)
    return teacher, student


class _EpochTimes(TrainCallbacks):
    def __init__(self) -> None:
        self.summaries: list[EpochSummary] = []

    def on_epoch_end(self, summary: EpochSummary) -> None:
        self.summaries.append(summary)


def engine_images_per_s(
    setting: Setting, cache: ImageCache, flags: dict[str, bool], run_dir: Path
) -> float:
    teacher, student = models(setting, len(cache.classes))
    config = TrainConfig(
        method="ekd",
        epochs=2,
        batch_size=setting.batch_size,
        image_size=setting.image_size,
        device="cpu",
        seed=0,
        **flags,
    )
    times = _EpochTimes()
    train(
        config,
        cache.split("train"),
        cache.split("val"),
        student,
        teacher,
        run_dir=run_dir,
        callbacks=times,
    )
    return times.summaries[-1].images_per_s


def reference_images_per_s(
    setting: Setting, rows: Sequence[ManifestRow], root: Path, classes: Sequence[str]
) -> float:
    """``train_reference`` trains on the rows of split ``train`` only."""
    teacher, student = models(setting, len(classes))
    stamps: list[float] = [time.perf_counter()]

    def on_epoch(_epoch: int, _loss: float) -> None:
        stamps.append(time.perf_counter())

    train_reference(
        student,
        teacher,
        rows,
        root=root,
        classes=classes,
        image_size=setting.image_size,
        recipe=ReferenceRecipe(
            epochs=2, batch_size=setting.batch_size, num_workers=setting.loader_workers
        ),
        on_epoch=on_epoch,
    )
    return setting.images / (stamps[2] - stamps[1])


def measure(setting: Setting, rounds: int, work: Path) -> dict[str, Any]:
    """Every arm ``rounds`` times at one image size; median images/s per arm."""
    root = work / f"jpegs-{setting.image_size}"
    written = write_jpegs(root, setting.images + 16, max(48, int(setting.image_size * 1.25)))
    # The last 16 are the engine's val split (scored each epoch, not timed).
    rows = [
        ManifestRow(r.path, r.label, "train" if i < setting.images else "val")
        for i, r in enumerate(written)
    ]
    start = time.perf_counter()
    cache = ImageCache.build(
        rows,
        root=root,
        cache_dir=work / f"cache-{setting.image_size}",
        image_size=setting.image_size,
    )
    cache_build_s = time.perf_counter() - start

    arms: dict[str, Callable[[], float]] = {
        "reference": lambda: reference_images_per_s(setting, rows, root, cache.classes),
        **{
            name: (
                lambda flags=flags, name=name: engine_images_per_s(
                    setting, cache, flags, work / f"run-{setting.image_size}-{name}"
                )
            )
            for name, flags in ENGINE_VARIANTS.items()
        },
    }
    runs: dict[str, list[float]] = {name: [] for name in arms}
    for round_ in range(rounds):
        for name, arm in arms.items():
            runs[name].append(arm())
            print(
                f"  {setting.image_size}px round {round_ + 1}/{rounds} {name:17s} "
                f"{runs[name][-1]:8.1f} images/s",
                flush=True,
            )
    medians = {name: statistics.median(values) for name, values in runs.items()}
    return {
        "setting": setting.__dict__,
        "cache_build_s": cache_build_s,
        "cache_images_per_s": len(rows) / cache_build_s,
        "runs": runs,
        "images_per_s": medians,
        "ratio_to_reference": {n: v / medians["reference"] for n, v in medians.items()},
    }


def table(results: Sequence[dict[str, Any]]) -> str:
    arms = list(results[0]["images_per_s"])
    lines = [
        "| image size | batch | " + " | ".join(arms) + " | cache build (one-off) |",
        "|---|---|" + "---|" * len(arms) + "---|",
    ]
    for r in results:
        s, ips, ratio = r["setting"], r["images_per_s"], r["ratio_to_reference"]
        cells = [f"{ips[a]:.1f} ({ratio[a]:.2f}×)" for a in arms]
        lines.append(
            f"| {s['image_size']} px | {s['batch_size']} | " + " | ".join(cells) + " | "
            f"{r['cache_build_s']:.1f} s ({r['cache_images_per_s']:.0f} images/s) |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 224])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, help="steps per epoch (default 16 at 32 px, 6 above)")
    parser.add_argument("--teacher", default="resnet50")
    parser.add_argument("--student", default="resnet18")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--loader-workers", type=int, default=2, help="reference DataLoader")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="tiny smoke-test settings")
    parser.add_argument("--out", type=Path, default=Path("bench/results/cpu_speed.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.sizes, args.teacher, args.student, args.batch_size = [32], "resnet18", "resnet18", 8
    results = []
    print(
        f"torch {torch.__version__}, {args.threads} threads, native bf16: "
        f"{has_fast_bf16(torch.device('cpu'))}, {args.teacher} -> {args.student}, ekd",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="fopro-cpu-speed-") as tmp:
        for size in args.sizes:
            steps = args.steps or (2 if args.quick else 16 if size <= 64 else 6)
            setting = Setting(
                size,
                args.batch_size,
                steps,
                args.teacher,
                args.student,
                args.threads,
                args.loader_workers,
            )
            results.append(measure(setting, args.rounds, Path(tmp)))
            write_json_atomic(args.out, {"results": results, "table": table(results)})
    print(f"\n{table(results)}\n\nresults: {args.out}")
    # bf16+nhwc is what a CPU job gets by default where the CPU has native bf16 kernels.
    default = "engine bf16+nhwc" if has_fast_bf16(torch.device("cpu")) else "engine fp32"
    print(
        "headline: engine / reference images/s: "
        + "; ".join(
            f"{r['setting']['image_size']} px default ({default.removeprefix('engine ')}) "
            f"{r['ratio_to_reference'][default]:.2f}×, fp32 "
            f"{r['ratio_to_reference']['engine fp32']:.2f}×"
            for r in results
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
