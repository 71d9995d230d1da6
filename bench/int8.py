"""FP32 vs static INT8 ONNX students on this CPU, side by side in one run.

For each student (default resnet18 and mobilenetv3_large_100, 224 px, 10 classes) the FP32 ONNX
export (``foprokd.export``) and its INT8 QDQ model (``foprokd.quantize``, the very function a
job runs, calibrated on 64 random images) are timed in onnxruntime with ``--threads`` intra-op
threads: p50 latency per batch and images/s at batch 1 and 32, and file size. Speed does not
depend on weight values, so the students use random weights; accuracy is measured by the jobs
themselves (``model_card.json`` → ``int8``), e.g. ``python -m bench.fashion_lt``.
The last line is the headline ratio: INT8 over FP32 images/s at batch 1.
``--fashion-epochs N`` instead trains the Fashion-MNIST-LT benchmark student (``bench.fashion_lt``,
method bsm) and prints its FP32 vs INT8 balanced accuracy, few-shot accuracy and latency.

    python -m bench.int8 --threads 1
    python -m bench.int8 --quick                    # smoke run (fewer repeats)
    python -m bench.int8 --fashion-epochs 30        # accuracy of INT8 on the benchmark student
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


def fashion_accuracy(epochs: int, seed: int, threads: int, repeats: int) -> None:
    """The Fashion-MNIST-LT benchmark student (``bench.fashion_lt``'s half-width ResNet-18 at
    32 px, method ``bsm``: no teacher to train), FP32 vs INT8 as a job's gate measures them on
    the 10k test set, calibrated on 128 class-stratified training images."""
    import torch

    from bench.fashion_lt import (
        FINE_CLASSES,
        MEAN,
        STD,
        BenchSettings,
        halves,
        labelled,
        load_fashion_mnist,
        resnet18,
        student_split,
    )
    from foprokd.hyperparams import TrainConfig
    from foprokd.pipeline import DatasetSplits, DecodedImages, DistillationRequest, run_distillation
    from foprokd.quantize import CALIBRATION_IMAGES, Int8Gate, LatencySpec, build_int8
    from foprokd.quantize import stratified_sample as sample
    from foprokd.runtime import seed_everything
    from foprokd.student import Student

    torch.set_num_threads(threads)
    settings = BenchSettings(epochs=epochs)
    data = load_fashion_mnist()
    train_idx, val_idx = student_split(
        data.train_labels, halves(len(data.train_labels))[1], settings, seed
    )
    size = settings.image_size
    sets = [
        labelled(data.train_images[idx], data.train_labels[idx], FINE_CLASSES, size)
        for idx in (train_idx, val_idx)
    ]
    test = labelled(data.test_images, data.test_labels, FINE_CLASSES, size)
    seed_everything(seed)
    student = Student(resnet18(settings.student_channels), len(FINE_CLASSES), 512, MEAN, STD)
    with tempfile.TemporaryDirectory(prefix="bench-int8-fashion-") as scratch:
        outcome = run_distillation(
            DistillationRequest(
                images=DecodedImages(DatasetSplits(sets[0], sets[1], test)),
                out_dir=Path(scratch) / "run",
                config=TrainConfig(
                    method="bsm", epochs=epochs, image_size=size, seed=seed, device="cpu"
                ),
                student=student,
                export=False,
            )
        )
        folder = Path(scratch) / "student"
        export_student(
            outcome.result.student.classifier(),
            classes=FINE_CLASSES,
            image_size=size,
            arch="resnet18-half",
            out_dir=folder,
        )
        train = sets[0]
        picked = torch.from_numpy(sample(train.labels.numpy(), CALIBRATION_IMAGES, seed))
        record = build_int8(
            folder / "student.onnx",
            folder / "student.int8.onnx",
            mode="always",
            calibration=train.images[picked].numpy(),
            eval_images=test.images.numpy(),
            eval_labels=test.labels.numpy(),
            class_names=FINE_CLASSES,
            train_counts=train.class_counts(),
            gate=Int8Gate(),
            latency=LatencySpec(threads=threads, repeats=repeats),
            evaluated_split="test",
        )
    print(f"Fashion-MNIST-LT bsm student, {epochs} epochs, seed {seed}, test 10k images")
    for kind in ("fp32", "int8"):
        side = record[kind]
        groups = side["report"]["shot_groups"]
        print(
            f"{kind}: balanced acc {side['report']['balanced_accuracy']:.4f}  few-shot "
            f"{groups['few']['accuracy']:.4f}  {side['size_mb']:.2f} MB  batch-1 p50 "
            f"{side['latency_ms']['p50']:.3f} ms  p95 {side['latency_ms']['p95']:.3f} ms"
        )
    print("gate (auto): " + ("passes" if not record["reasons"] else "; ".join(record["reasons"])))
    print(
        f"INT8 - FP32 balanced accuracy {100 * record['deltas']['balanced_accuracy']:+.2f} points; "
        f"batch-1 speed-up x{record['speedup_p50']:.2f}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--students", nargs="+", default=list(STUDENTS))
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="3 repeats: a smoke run")
    parser.add_argument(
        "--fashion-epochs",
        type=int,
        help="instead: train the Fashion-MNIST-LT student this many epochs and compare its "
        "FP32 and INT8 accuracy and latency (the gate's numbers)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else args.repeats
    if args.fashion_epochs is not None:
        fashion_accuracy(args.fashion_epochs, args.seed, args.threads, repeats)
        return
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
