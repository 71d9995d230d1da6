"""FP32 vs static INT8 ONNX students on this CPU, side by side in one run.

For each student (default resnet18 and mobilenetv3_large_100, 224 px, 10 classes) the FP32 ONNX
export (``foprokd.export``) and its INT8 QDQ model (``foprokd.quantize``, the very function a
job runs, calibrated on 64 random images) are timed in onnxruntime with ``--threads`` intra-op
threads, the two models taking turns pass by pass (``foprokd.quantize.latency_ms``, as the
job's gate times them): p50 latency per batch and images/s at batch 1 and 32, and file size.
Speed does not depend on weight values, so the students use random weights; accuracy is
measured by the jobs themselves (``model_card.json`` → ``int8``), e.g. ``python -m
bench.fashion_lt``.
The last line is the headline ratio: INT8 over FP32 images/s at batch 1.
``--profile`` adds, per student and format, onnxruntime's profiler breakdown of a batch-1 pass
by operator type (where INT8 time goes: the convolutions, or the Quantize/Dequantize pairs and
elementwise ops around them).
``--fashion-epochs N`` instead trains the Fashion-MNIST-LT benchmark student (``bench.fashion_lt``,
method bsm) and prints its FP32 vs INT8 balanced accuracy, few-shot accuracy and latency.

    python -m bench.int8 --threads 1
    python -m bench.int8 --quick                    # smoke run (fewer repeats)
    python -m bench.int8 --profile                  # + per-operator batch-1 time
    python -m bench.int8 --fashion-epochs 30        # accuracy of INT8 on the benchmark student
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
from pathlib import Path

import numpy as np

from foprokd.export import export_student
from foprokd.quantize import LatencySpec, latency_ms, quantize_student, to_unit_float
from foprokd.student import build_classifier

STUDENTS = ("resnet18", "mobilenetv3_large_100")
BATCHES = (1, 32)


def operator_ms(path: Path, image_size: int, threads: int, repeats: int) -> dict[str, float]:
    """Milliseconds per batch-1 pass spent in each operator type of the optimised graph (the
    kernels onnxruntime actually runs, e.g. QLinearConv), from its profiler, largest first."""
    import onnxruntime

    with tempfile.TemporaryDirectory(prefix="bench-int8-profile-") as scratch:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(scratch) / "profile")
        runner = onnxruntime.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        name = runner.get_inputs()[0].name
        x = to_unit_float(
            np.random.default_rng(0).integers(0, 256, (1, 3, image_size, image_size), np.uint8)
        )
        for _ in range(repeats):
            runner.run(None, {name: x})
        events = json.loads(Path(runner.end_profiling()).read_text())
    totals: collections.Counter[str] = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            totals[event["args"]["op_name"]] += event["dur"]  # microseconds, over all passes
    return {op: us / 1000.0 / repeats for op, us in totals.most_common()}


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
        "--profile", action="store_true", help="also print batch-1 time per operator type"
    )
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
            paths = {"fp32": fp32, "int8": int8}
            # The models take turns pass by pass (the gate's own timing), after 3 warm-up passes.
            spec = LatencySpec(threads=args.threads, warmup=3, repeats=repeats)
            p50 = {
                batch: {
                    kind: times["p50"]
                    for kind, times in latency_ms(paths, args.image_size, spec, batch).items()
                }
                for batch in BATCHES
            }
            per_second = {kind: {b: 1000 * b / p50[b][kind] for b in BATCHES} for kind in paths}
            for kind, path in paths.items():
                cells = [f"{p50[b][kind]:12.2f} {per_second[kind][b]:10.1f}" for b in BATCHES]
                size = path.stat().st_size / 1e6
                print(f"{arch:24} {kind:6} {size:7.2f} " + " ".join(cells))
                if args.profile:
                    ops = operator_ms(path, args.image_size, args.threads, repeats)
                    print(
                        f"  profile (ms per batch-1 pass, total {sum(ops.values()):.2f}): "
                        + ", ".join(f"{op} {ms:.2f}" for op, ms in ops.items())
                    )
            for batch in BATCHES:
                ratios[f"{arch} b{batch}"] = per_second["int8"][batch] / per_second["fp32"][batch]
    print(
        "INT8 / FP32 images/s: "
        + ", ".join(f"{name} x{ratio:.2f}" for name, ratio in ratios.items())
    )


if __name__ == "__main__":
    main()
