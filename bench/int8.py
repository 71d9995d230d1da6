"""FP32 vs static INT8 ONNX students on this CPU, side by side in one run.

For each student (default resnet18 and mobilenetv3_large_100, 224 px, 10 classes) the FP32 ONNX
export (``foprokd.export``) and its INT8 QDQ model (``foprokd.quantize``, the very function a
job runs, calibrated on 64 random images) are timed in onnxruntime with ``--threads`` intra-op
threads: p50 latency per batch and images/s at batch 1 and 32, and file size. Speed does not
depend on weight values, so the students use random weights; accuracy is measured by the jobs
themselves (``model_card.json`` → ``int8``), e.g. ``python -m bench.fashion_lt``.
The last line is the headline ratio: INT8 over FP32 images/s at batch 1.

    python -m bench.int8 --threads 1
    python -m bench.int8 --quick          # smoke run (fewer repeats)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from foprokd.export import export_student
from foprokd.quantize import quantize_student, session, to_unit_float
from foprokd.student import build_classifier

STUDENTS = ("resnet18", "mobilenetv3_large_100")
BATCHES = (1, 32)


def measure(path: Path, image_size: int, batch: int, threads: int, repeats: int) -> float:
    """Median seconds of one ``batch``-image forward pass, after 3 warm-up passes."""
    runner = session(path, threads)
    name = runner.get_inputs()[0].name
    x = to_unit_float(
        np.random.default_rng(0).integers(0, 256, (batch, 3, image_size, image_size), np.uint8)
    )
    for _ in range(3):
        runner.run(None, {name: x})
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        runner.run(None, {name: x})
        times.append(time.perf_counter() - start)
    return float(statistics.median(times))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--students", nargs="+", default=list(STUDENTS))
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="3 repeats: a smoke run")
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else args.repeats
    rng = np.random.default_rng(0)
    calibration = rng.integers(0, 256, (64, 3, args.image_size, args.image_size), np.uint8)
    print(f"onnxruntime CPU, {args.threads} thread(s), {args.image_size} px, median of {repeats}")
    print(
        f"{'student':24} {'format':6} {'MB':>7} "
        + " ".join(f"{'b' + str(b) + ' p50 ms':>12} {'b' + str(b) + ' img/s':>10}" for b in BATCHES)
    )
    ratios: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-int8-") as scratch:
        for arch in args.students:
            folder = Path(scratch) / arch
            export_student(
                build_classifier(arch, 10),
                classes=[str(i) for i in range(10)],
                image_size=args.image_size,
                arch=arch,
                out_dir=folder,
            )
            fp32 = folder / "student.onnx"
            int8 = folder / "student.int8.onnx"
            quantize_student(fp32, int8, calibration)
            per_second: dict[str, dict[int, float]] = {}
            for kind, path in (("fp32", fp32), ("int8", int8)):
                cells = []
                per_second[kind] = {}
                for batch in BATCHES:
                    seconds = measure(path, args.image_size, batch, args.threads, repeats)
                    per_second[kind][batch] = batch / seconds
                    cells.append(f"{1000 * seconds:12.2f} {batch / seconds:10.1f}")
                size = path.stat().st_size / 1e6
                print(f"{arch:24} {kind:6} {size:7.2f} " + " ".join(cells))
            for batch in BATCHES:
                ratios[f"{arch} b{batch}"] = per_second["int8"][batch] / per_second["fp32"][batch]
    print(
        "INT8 / FP32 images/s: "
        + ", ".join(f"{name} x{ratio:.2f}" for name, ratio in ratios.items())
    )


if __name__ == "__main__":
    main()
