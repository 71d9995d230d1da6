"""``python -m foprokd train|evaluate|export|sample``: the engine on a folder of images, no service
needed (``sample`` writes a synthetic long-tailed archive for trying the engine or the service).

Argument parsing only: the work is ``foprokd.pipeline`` (whose docstring describes the run
folder ``train`` writes) and ``foprokd.synthetic``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, get_args, get_origin

from foprokd.atomic import write_json_atomic
from foprokd.bundle import verify_bundle
from foprokd.errors import EngineError, ManifestInvalid
from foprokd.hyperparams import METHOD_HELP, METHODS, HyperParams, TrainConfig
from foprokd.manifest import ManifestRow, read_manifest, scan_image_folder
from foprokd.pipeline import (
    DEFAULT_CACHE_DIR,
    DistillationRequest,
    ManifestImages,
    evaluate_exported,
    export_run,
    run_distillation,
)
from foprokd.progress import ProgressBar
from foprokd.signing import read_public_key_file
from foprokd.splits import SPLITS
from foprokd.synthetic import archive_kind, sample_dataset, write_archive
from foprokd.trainer import CHECKPOINT_NAME


def load_rows(data: Path, manifest: Path | None, split_seed: int) -> list[ManifestRow]:
    """The manifest CSV when given, else the ImageFolder tree under ``data``."""
    if manifest is not None:
        return read_manifest(manifest, split_seed=split_seed)
    return scan_image_folder(data, split_seed=split_seed)


def _cmd_train(args: argparse.Namespace) -> int:
    config = TrainConfig(
        method=args.method,
        device=args.device,
        **{name: getattr(args, name) for name in HyperParams.model_fields},
    )
    rows = load_rows(args.data, args.manifest, args.split_seed)
    checkpoint = args.out / CHECKPOINT_NAME
    request = DistillationRequest(
        images=ManifestImages(args.data, rows, cache_dir=args.cache_dir),
        out_dir=args.out,
        config=config,
        teacher=args.teacher,
        student=args.student,
        teacher_weights=args.teacher_weights,
        student_weights=args.student_weights,
        weights_dir=args.weights_dir,
        allow_random_weights=args.allow_random_weights,
        resume_from=checkpoint if args.resume and checkpoint.exists() else None,
        split_seed=args.split_seed,
        export=not args.no_export,
        dataset={"name": args.data.name, "root": str(args.data)},
    )
    bar = ProgressBar(enabled=not args.quiet)
    try:
        outcome = run_distillation(request, bar)
    finally:
        bar.close()
    report = outcome.report
    print(
        f"{outcome.evaluated_split} balanced accuracy {report['balanced_accuracy']:.4f}, "
        f"macro-F1 {report['macro_f1']:.4f} (best epoch {outcome.result.best_epoch}); "
        f"run folder {args.out}"
    )
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    rows = load_rows(args.data, args.manifest, args.split_seed)
    if args.split != "all":
        rows = [row for row in rows if row.split == args.split]
        if not rows:
            raise ManifestInvalid(f"no images in split {args.split!r} of {args.data}")
    bar = ProgressBar(enabled=not args.quiet)
    try:
        model_dir, count, report = evaluate_exported(
            args.model,
            rows,
            root=args.data,
            cache_dir=args.cache_dir,
            batch_size=args.batch_size,
            device=args.device,
            on_decode=bar.on_decode,
        )
    finally:
        bar.close()
    out = args.out or model_dir.parent / f"evaluation_{args.split}.json"
    write_json_atomic(out, {"model": str(model_dir), "split": args.split, "report": report})
    print(
        f"{count} images: balanced accuracy {report['balanced_accuracy']:.4f}, "
        f"macro-F1 {report['macro_f1']:.4f}; report in {out}"
    )
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    bar = ProgressBar(enabled=not args.quiet)
    try:
        paths = export_run(
            args.run,
            args.out,
            data_root=args.data,
            cache_dir=args.cache_dir,
            on_decode=bar.on_decode,
        )
    finally:
        bar.close()
    print("exported: " + ", ".join(str(p) for p in paths))
    return 0


def _cmd_verify_bundle(args: argparse.Namespace) -> int:
    trusted = [read_public_key_file(path) for path in args.public_key] or None
    result = verify_bundle(args.folder, trusted)
    for check in result.checks:
        print(f"{'ok  ' if check.passed else 'FAIL'} {check.name}: {check.detail}")
    print(f"{args.folder}: the bundle {'verifies' if result.passed else 'does NOT verify'}.")
    return 0 if result.passed else 1


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
        image_format="DICOM" if args.dicom else args.format,
        corrupt=args.corrupt,
    )
    write_archive(out, dataset.members, kind)
    counts = ", ".join(f"{name} {n}" for name, n in dataset.class_counts.items())
    print(f"wrote {out} ({out.stat().st_size} bytes): {dataset.num_images} images; {counts}")
    if dataset.manifest:
        columns = "image,label,split" if args.splits else "image,label"
        print(f"manifest: {dataset.manifest} (columns {columns})")
    if dataset.patients:
        print(f"DICOM: {len(set(dataset.patients.values()))} synthetic patients")
    if dataset.corrupt:
        print(f"deliberately broken files: {', '.join(dataset.corrupt)}")
    return 0


def _add_hyper_parameters(parser: argparse.ArgumentParser) -> None:
    """One option per ``HyperParams`` field, with its default and help text (``--no-augment``
    for the switch that defaults on, ``choices`` for a Literal)."""
    for name, field in HyperParams.model_fields.items():
        flag = "--" + name.replace("_", "-")
        help_text = f"{field.description} (default {field.default})"
        if field.annotation is bool:
            parser.add_argument(
                "--no-" + name.replace("_", "-"),
                dest=name,
                action="store_false",
                help=f"turn off: {field.description}",
            )
        elif get_origin(field.annotation) is Literal:
            choices = get_args(field.annotation)
            parser.add_argument(flag, choices=choices, default=field.default, help=help_text)
        else:
            kind = int if field.annotation is int else float
            parser.add_argument(flag, type=kind, default=field.default, help=help_text)


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
    run.add_argument(
        "--method",
        choices=METHODS,
        default=defaults.method,
        help="; ".join(f"{name}: {text.rstrip('.')}" for name, text in METHOD_HELP.items()),
    )
    _add_hyper_parameters(run)
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

    export = commands.add_parser(
        "export",
        help="re-export the best student of a run folder: re-evaluated, calibrated, INT8-gated, "
        "bundled and carded as the run did",
    )
    export.add_argument("--run", type=Path, required=True)
    export.add_argument("--out", type=Path, help="export folder (default: RUN/student)")
    export.add_argument(
        "--data", type=Path, help="where the run's images are now (default: the recorded root)"
    )
    export.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    export.add_argument("--quiet", action="store_true", help="no progress bars")
    export.set_defaults(handler=_cmd_export)

    verify = commands.add_parser(
        "verify-bundle",
        help="check a bundle's files (sha256) and golden outputs with onnxruntime",
    )
    verify.add_argument("folder", type=Path, help="a student folder holding bundle.json")
    verify.add_argument(
        "--public-key",
        type=Path,
        action="append",
        default=[],
        help="also require bundle.sig.json to be signed by this key (PEM, or the JSON of the "
        "service's GET /.well-known/fopro-signing-key); repeat to trust several",
    )
    verify.set_defaults(handler=_cmd_verify_bundle)

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
    sample.add_argument(
        "--dicom",
        action="store_true",
        help="write DICOM files instead (several per synthetic patient; overrides --format)",
    )
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
