"""``python -m foprokd train|evaluate|export|sample``: the engine on a folder of images, no service
needed (``sample`` writes a synthetic long-tailed archive for trying the engine or the service).

A run folder holds ``run.json`` (everything needed to reproduce or re-export the run),
``manifest.csv`` (the splits used), ``checkpoint.pt`` (written after every epoch),
``metrics.json`` (test classification report + training history) and ``student/`` (the exported
classifier). ``run_training`` is the same workflow as a library call, for benchmarks and scripts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from foprokd.checkpoint import load_checkpoint
from foprokd.data import (
    SPLITS,
    ImageCache,
    LabelledImages,
    ManifestEntry,
    ManifestInvalid,
    class_order,
    read_manifest,
    scan_image_folder,
    write_manifest,
)
from foprokd.errors import EngineError
from foprokd.export import FILE_NAMES, export_student, load_exported
from foprokd.metrics import classification_report
from foprokd.student import build_classifier, build_student
from foprokd.synthetic import archive_kind, sample_dataset, write_archive
from foprokd.trainer import (
    CHECKPOINT_NAME,
    METHODS,
    TEACHER_METHODS,
    EpochSummary,
    Progress,
    TrainCallbacks,
    TrainConfig,
    predict,
    seed_everything,
    train,
)
from foprokd.zoo import load_teacher, resolve_spec

RUN_FILE = "run.json"
METRICS_FILE = "metrics.json"
MANIFEST_FILE = "manifest.csv"
EXPORT_DIR = "student"
DEFAULT_CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "foprokd"
# Only these student modules make up the deployable classifier (proj/fc_proj are training-only).
_CLASSIFIER_MODULES = frozenset({"normalise", "backbone", "fc"})


class RunFolderInUse(EngineError):
    """The output folder already holds a run and resuming was not asked for."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        super().__init__(
            f"{self.run_dir} already holds a training run. Pass --resume to continue it, "
            "or choose a new --out folder."
        )

    def _init_args(self) -> tuple[Any, ...]:
        return (self.run_dir,)


@dataclass
class TrainRequest:
    """One training run on a manifest: what ``python -m foprokd train`` does, as data."""

    data_root: Path  # manifest paths are relative to it
    entries: list[ManifestEntry]
    run_dir: Path
    config: TrainConfig
    teacher: str = "resnet50"
    student: str = "resnet18"
    teacher_weights: Path | None = None
    student_weights: Path | None = None
    weights_dir: Path | None = None
    allow_random_weights: bool = False  # tests and smoke runs only
    cache_dir: Path = DEFAULT_CACHE_DIR
    classes: list[str] | None = None  # label order; default: natural order of the labels
    split_seed: int | None = None  # recorded when the splits were generated here
    export: bool = True
    resume: bool = False
    show_progress: bool = True


class ProgressBar(TrainCallbacks):
    """tqdm over all training steps, one printed line per epoch."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: tqdm[Any] | None = None

    def on_progress(self, progress: Progress) -> None:
        if self.bar is None:
            self.bar = tqdm(
                total=progress.total_steps,
                initial=progress.global_step - 1,
                unit="step",
                disable=not self.enabled,
                dynamic_ncols=True,
            )
        self.bar.update(1)
        self.bar.set_postfix(
            epoch=f"{progress.epoch}/{progress.epochs}",
            loss=f"{progress.losses['loss']:.3f}",
            img_s=f"{progress.images_per_s:.0f}",
            refresh=False,
        )

    def on_epoch_end(self, summary: EpochSummary) -> None:
        if self.enabled:
            tqdm.write(
                f"epoch {summary.epoch}/{summary.epochs}: val balanced accuracy "
                f"{summary.val_balanced_accuracy:.4f} (best {summary.best_balanced_accuracy:.4f} "
                f"at epoch {summary.best_epoch}), {summary.seconds:.1f} s"
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def build_cache(
    entries: Sequence[ManifestEntry],
    *,
    data_root: Path,
    cache_dir: Path,
    image_size: int,
    classes: Sequence[str] | None,
    show_progress: bool,
) -> ImageCache:
    """``ImageCache.build`` with a tqdm bar over the images decoded."""
    with tqdm(total=len(entries), unit="img", desc="decode", disable=not show_progress) as bar:

        def advance(done: int, total: int) -> None:
            bar.update(done - bar.n)

        return ImageCache.build(
            entries,
            root=data_root,
            cache_dir=cache_dir,
            image_size=image_size,
            classes=classes,
            on_progress=advance,
        )


def run_training(request: TrainRequest) -> dict[str, Any]:
    """Train, select on val, report on test, export; return the metrics written to metrics.json.

    The report is on the test split, or on val when the manifest has no test images (said in
    ``metrics["evaluated_split"]``). Raises the engine's typed errors (weights, data, training).
    """
    config, run_dir = request.config, request.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = run_dir / CHECKPOINT_NAME
    if checkpoint.exists() and not request.resume:
        raise RunFolderInUse(run_dir)
    resume_from = checkpoint if request.resume and checkpoint.exists() else None

    classes = request.classes or class_order([e.label for e in request.entries])
    for name in ("train", "val"):
        if not any(e.split == name for e in request.entries):
            raise ManifestInvalid(
                f"the {name} split is empty; every run needs train and val images"
            )

    # Models (and their weights files) first: a missing file must fail before a long decode.
    seed_everything(config.seed)
    teacher = None
    if config.method in TEACHER_METHODS:
        teacher = load_teacher(
            request.teacher,
            weights=request.teacher_weights,
            weights_dir=request.weights_dir,
            allow_random=request.allow_random_weights,
        )
        teacher_dim = teacher.feature_dim
    else:
        teacher_dim = resolve_spec(request.teacher, "teacher").feature_dim
    student = build_student(
        request.student,
        len(classes),
        teacher_dim,
        weights=request.student_weights,
        weights_dir=request.weights_dir,
        allow_random=request.allow_random_weights,
    )
    cache = build_cache(
        request.entries,
        data_root=request.data_root,
        cache_dir=request.cache_dir,
        image_size=config.image_size,
        classes=classes,
        show_progress=request.show_progress,
    )
    write_manifest(cache.entries, run_dir / MANIFEST_FILE)
    train_set, val_set, test_set = (cache.split(name) for name in SPLITS)
    train_counts = train_set.class_counts()
    _write_json(
        run_dir / RUN_FILE,
        {
            "data_root": str(request.data_root.resolve()),
            "manifest": MANIFEST_FILE,
            "split_seed": request.split_seed,
            "cache_fingerprint": cache.fingerprint,
            "teacher": request.teacher,
            "teacher_dim": teacher_dim,
            "student": request.student,
            "classes": cache.classes,
            "split_counts": {name: len(cache.split_entries(name)) for name in SPLITS},
            "train_counts": train_counts,
            "random_weights_allowed": request.allow_random_weights,
            "config": config.to_dict(),
        },
    )

    bar = ProgressBar(enabled=request.show_progress)
    start = time.perf_counter()
    try:
        result = train(
            config,
            train_set,
            val_set,
            student,
            teacher,
            run_dir=run_dir,
            callbacks=bar,
            resume_from=resume_from,
        )
    finally:
        bar.close()
    train_seconds = time.perf_counter() - start

    evaluated_split = "test" if len(test_set) else "val"
    eval_set = test_set if len(test_set) else val_set
    report = evaluate_images(
        result.student.classifier(),
        eval_set,
        train_counts=train_counts,
        batch_size=config.eval_batch_size,
        device=config.device,
    )
    metrics: dict[str, Any] = {
        "method": config.method,
        "teacher": request.teacher if teacher is not None else None,
        "student": request.student,
        "evaluated_split": evaluated_split,
        "best_epoch": result.best_epoch,
        "best_val_balanced_accuracy": result.best_balanced_accuracy,
        "train_seconds": train_seconds,
        "report": report,
        "history": [dataclasses.asdict(summary) for summary in result.history],
    }
    if request.export:
        classifier = result.student.classifier()
        paths = export_student(
            classifier,
            classes=cache.classes,
            image_size=config.image_size,
            arch=request.student,
            out_dir=run_dir / EXPORT_DIR,
            extra_config={
                "method": config.method,
                "teacher": metrics["teacher"],
                "train_counts": train_counts,
                "best_epoch": result.best_epoch,
                f"{evaluated_split}_balanced_accuracy": report["balanced_accuracy"],
            },
        )
        metrics["export"] = {kind: str(path.relative_to(run_dir)) for kind, path in paths.items()}
    _write_json(run_dir / METRICS_FILE, metrics)
    return metrics


def evaluate_images(
    classifier: nn.Module,
    images: LabelledImages,
    *,
    train_counts: Sequence[int] | None,
    batch_size: int,
    device: str,
) -> dict[str, Any]:
    """Classification report (``foprokd.metrics.classification_report``) of a [0, 1] classifier."""
    probs = predict(classifier, images, batch_size=batch_size, device=device)
    predicted = np.asarray(probs).argmax(axis=1) if len(images) else np.zeros(0, dtype=np.int64)
    return classification_report(
        images.labels.numpy(), predicted, images.classes, train_counts=train_counts
    )


def export_run(run_dir: Path, out_dir: Path | None = None) -> dict[str, Path]:
    """Re-export the best student of a run folder's checkpoint (default: ``run_dir/student``)."""
    run = json.loads((run_dir / RUN_FILE).read_text())
    payload = load_checkpoint(run_dir / CHECKPOINT_NAME)
    state = payload["best"]["student"] or payload["student"]
    classifier = build_classifier(run["student"], len(run["classes"]))
    classifier.load_state_dict(
        {k: v for k, v in state.items() if k.split(".", 1)[0] in _CLASSIFIER_MODULES}, strict=True
    )
    return export_student(
        classifier,
        classes=run["classes"],
        image_size=int(run["config"]["image_size"]),
        arch=run["student"],
        out_dir=out_dir or run_dir / EXPORT_DIR,
        extra_config={
            "method": run["config"]["method"],
            "teacher": run["teacher"] if run["config"]["method"] in TEACHER_METHODS else None,
            "train_counts": run["train_counts"],
            "best_epoch": payload["best"]["epoch"],
        },
    )


def load_entries(data: Path, manifest: Path | None, split_seed: int) -> list[ManifestEntry]:
    """The manifest CSV when given, else the ImageFolder tree under ``data``."""
    if manifest is not None:
        return read_manifest(manifest, split_seed=split_seed)
    return scan_image_folder(data, split_seed=split_seed)


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2))
    tmp.replace(path)


def _cmd_train(args: argparse.Namespace) -> int:
    config = TrainConfig(
        method=args.method,
        epochs=args.epochs,
        batch_size=args.batch_size,
        image_size=args.image_size,
        lr=args.lr,
        seed=args.seed,
        device=args.device,
        augment=not args.no_augment,
    )
    entries = load_entries(args.data, args.manifest, args.split_seed)
    request = TrainRequest(
        data_root=args.data,
        entries=entries,
        run_dir=args.out,
        config=config,
        teacher=args.teacher,
        student=args.student,
        teacher_weights=args.teacher_weights,
        student_weights=args.student_weights,
        weights_dir=args.weights_dir,
        allow_random_weights=args.allow_random_weights,
        cache_dir=args.cache_dir,
        split_seed=args.split_seed,
        export=not args.no_export,
        resume=args.resume,
        show_progress=not args.quiet,
    )
    metrics = run_training(request)
    report = metrics["report"]
    print(
        f"{metrics['evaluated_split']} balanced accuracy {report['balanced_accuracy']:.4f}, "
        f"macro-F1 {report['macro_f1']:.4f} (best epoch {metrics['best_epoch']}); "
        f"run folder {args.out}"
    )
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    model_dir = args.model
    if not (model_dir / FILE_NAMES["config"]).exists() and (model_dir / EXPORT_DIR).is_dir():
        model_dir = model_dir / EXPORT_DIR
    exported = load_exported(model_dir)
    entries = load_entries(args.data, args.manifest, args.split_seed)
    if args.split != "all":
        entries = [e for e in entries if e.split == args.split]
        if not entries:
            raise ManifestInvalid(f"no images in split {args.split!r} of {args.data}")
    cache = build_cache(
        entries,
        data_root=args.data,
        cache_dir=args.cache_dir,
        image_size=exported.image_size,
        classes=exported.classes,
        show_progress=not args.quiet,
    )
    images = _concat([cache.split(name) for name in SPLITS])
    report = evaluate_images(
        exported.classifier,
        images,
        train_counts=exported.config.get("train_counts"),
        batch_size=args.batch_size,
        device=args.device,
    )
    out = args.out or model_dir.parent / f"evaluation_{args.split}.json"
    _write_json(out, {"model": str(model_dir), "split": args.split, "report": report})
    print(
        f"{len(images)} images: balanced accuracy {report['balanced_accuracy']:.4f}, "
        f"macro-F1 {report['macro_f1']:.4f}; report in {out}"
    )
    return 0


def _concat(parts: Sequence[LabelledImages]) -> LabelledImages:
    return LabelledImages(
        torch.cat([p.images for p in parts]),
        torch.cat([p.labels for p in parts]),
        list(parts[0].classes),
    )


def _cmd_export(args: argparse.Namespace) -> int:
    paths = export_run(args.run, args.out)
    print("exported: " + ", ".join(str(p) for p in paths.values()))
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    out: Path = args.out
    kind = archive_kind(out)
    if out.exists() and not args.force:
        raise ValueError(f"{out} already exists; pass --force to replace it")
    if args.classes < 2:
        raise ValueError("--classes must be at least 2")
    if not 8 <= args.size <= 1024:
        raise ValueError("--size must be within 8-1024 pixels")
    dataset = sample_dataset(
        classes=args.classes,
        head=args.head,
        imbalance=args.imbalance,
        size=args.size,
        seed=args.seed,
        layout=args.layout,
        with_splits=args.splits,
        image_format=args.format,
        corrupt=args.corrupt,
    )
    write_archive(out, dataset.members, kind)
    counts = ", ".join(f"{name} {n}" for name, n in dataset.class_counts.items())
    print(f"wrote {out} ({out.stat().st_size} bytes): {dataset.num_images} images; {counts}")
    if dataset.manifest:
        columns = "image,label,split" if args.splits else "image,label"
        print(f"manifest: {dataset.manifest} (columns {columns})")
    if dataset.corrupt:
        print(f"deliberately broken files: {', '.join(dataset.corrupt)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``train`` / ``evaluate`` / ``export`` / ``sample`` argument parser."""
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(
        prog="python -m foprokd",
        description="FoPro-KD: distil a frozen teacher into a small student on long-tailed images.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    data_help = "ImageFolder root ([split/]class/image) or the root the --manifest paths are under"
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data", type=Path, required=True, help=data_help)
    common.add_argument("--manifest", type=Path, help="CSV with path,label[,split] columns")
    common.add_argument(
        "--split-seed",
        type=int,
        default=0,
        help="seed of the stratified 70/10/20 split made when the data has no splits "
        "(evaluate: use the training run's, or pass its RUN/manifest.csv as --manifest)",
    )
    common.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    common.add_argument("--device", default=defaults.device, help="auto, cpu, cuda, cuda:1, ...")
    common.add_argument("--quiet", action="store_true", help="no progress bars")

    run = commands.add_parser("train", parents=[common], help="train, evaluate and export")
    run.add_argument("--out", type=Path, required=True, help="run folder to create")
    run.add_argument("--teacher", default="resnet50", help="zoo name or any timm name")
    run.add_argument("--teacher-weights", type=Path, help="teacher state dict file")
    run.add_argument("--student", default="resnet18", help="zoo name or any timm name")
    run.add_argument("--student-weights", type=Path, help="student backbone state dict file")
    run.add_argument("--weights-dir", type=Path, help="folder of <name>.safetensors|.pth")
    run.add_argument("--method", choices=METHODS, default=defaults.method)
    run.add_argument("--epochs", type=int, default=defaults.epochs)
    run.add_argument("--image-size", type=int, default=defaults.image_size)
    run.add_argument("--batch-size", type=int, default=defaults.batch_size)
    run.add_argument("--lr", type=float, default=defaults.lr)
    run.add_argument("--seed", type=int, default=defaults.seed)
    run.add_argument("--no-augment", action="store_true")
    run.add_argument("--no-export", action="store_true")
    run.add_argument("--resume", action="store_true", help="continue the run in --out")
    run.add_argument(
        "--allow-random-weights",
        action="store_true",
        help="use random weights when no file is found (tests and smoke runs only)",
    )
    run.set_defaults(handler=_cmd_train)

    evaluate = commands.add_parser(
        "evaluate", parents=[common], help="score an exported student on a dataset split"
    )
    evaluate.add_argument("--model", type=Path, required=True, help="export folder or run folder")
    evaluate.add_argument("--split", choices=[*SPLITS, "all"], default="test")
    evaluate.add_argument("--batch-size", type=int, default=defaults.eval_batch_size)
    evaluate.add_argument("--out", type=Path, help="report JSON (default: next to the model)")
    evaluate.set_defaults(handler=_cmd_evaluate)

    export = commands.add_parser("export", help="re-export the best student of a run folder")
    export.add_argument("--run", type=Path, required=True)
    export.add_argument("--out", type=Path, help="export folder (default: RUN/student)")
    export.set_defaults(handler=_cmd_export)

    sample = commands.add_parser(
        "sample",
        help="write a synthetic long-tailed image archive (class-dependent textures)",
        description="Classes of learnable textures whose image counts fall from --head to "
        "--head/--imbalance, as .zip, .tar or .tar.gz: for trying the engine or the service "
        "without real data.",
    )
    sample.add_argument("out", type=Path, help="archive to write: NAME.zip, .tar or .tar.gz")
    sample.add_argument("--classes", type=int, default=5)
    sample.add_argument("--head", type=int, default=60, help="images in the largest class")
    sample.add_argument("--imbalance", type=float, default=10.0, help="largest / smallest class")
    sample.add_argument("--size", type=int, default=64, help="image side in pixels")
    sample.add_argument("--layout", choices=["folders", "csv"], default="folders")
    sample.add_argument("--splits", action="store_true", help="fix train/val/test in the archive")
    sample.add_argument("--format", choices=["PNG", "JPEG"], default="PNG")
    sample.add_argument("--corrupt", type=int, default=0, help="add that many broken files")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--force", action="store_true", help="replace an existing file")
    sample.set_defaults(handler=_cmd_sample)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 with a one-line reason for expected failures)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except (EngineError, KeyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
