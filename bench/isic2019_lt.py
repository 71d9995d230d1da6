"""The FoPro-KD paper's ISIC-2019-LT protocol on locally held ISIC 2019 images.

Split lists ship with the engine (``foprokd/splits/isic2019_lt``, from the paper's release): five
draws × three imbalance factors; label = ``finding`` (0..7 = NV, MEL, BCC, BKL, AK, SCC, VASC, DF).
Every method is trained on the train list, its epoch selected on val (balanced accuracy) and
reported on the balanced test list. Images are ``<images>/<image>.jpg`` from the ISIC 2019
training set, which the user must download (about 9 GB) — nothing is fetched here.

    python -m bench.isic2019_lt --images ~/data/ISIC_2019_Training_Input \
        --weights-dir ~/weights --fold 1 --imbalance 0.01 --epochs 30
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import foprokd
from foprokd.errors import EngineError
from foprokd.hyperparams import METHODS, TrainConfig
from foprokd.manifest import ManifestRow
from foprokd.pipeline import (
    DEFAULT_CACHE_DIR,
    DistillationRequest,
    ManifestImages,
    run_distillation,
)
from foprokd.progress import ProgressBar
from foprokd.splits import SPLITS

SPLIT_LISTS = Path(foprokd.__file__).parent / "splits" / "isic2019_lt"
CLASS_NAMES = ["NV", "MEL", "BCC", "BKL", "AK", "SCC", "VASC", "DF"]  # index = finding
FOLDS = (1, 2, 3, 4, 5)
IMBALANCES = ("0.01", "0.005", "0.002")
DOWNLOAD_HINT = (
    "Download ISIC_2019_Training_Input.zip (the ISIC 2019 challenge training images, "
    "https://challenge.isic-archive.com/data/#2019), unzip it and pass that folder as --images"
)


class IsicImagesMissing(EngineError):
    """The ISIC 2019 images the split lists name are not in the given folder."""

    def __init__(self, images_dir: Path, missing: Sequence[str], total: int) -> None:
        self.images_dir = Path(images_dir)
        self.missing = list(missing)
        self.total = total
        shown = ", ".join(self.missing[:3]) + (", ..." if len(self.missing) > 3 else "")
        super().__init__(
            f"{len(self.missing)} of {total} ISIC images are missing from {self.images_dir} "
            f"(e.g. {shown}). {DOWNLOAD_HINT}."
        )

    def _init_args(self) -> tuple[Any, ...]:
        return (self.images_dir, self.missing, self.total)


def load_protocol(fold: int, imbalance: str) -> list[ManifestRow]:
    """Manifest of one protocol draw: paths ``<image>.jpg``, labels from ``CLASS_NAMES``."""
    if fold not in FOLDS or imbalance not in IMBALANCES:
        raise ValueError(f"fold must be in {FOLDS} and imbalance in {IMBALANCES}")
    entries = []
    for split in SPLITS:
        with (SPLIT_LISTS / f"{split}_skin{fold}_{imbalance}.csv").open(newline="") as handle:
            for row in csv.DictReader(handle):
                label = CLASS_NAMES[int(row["finding"])]
                entries.append(ManifestRow(f"{row['image']}.jpg", label, split))
    return entries


def limit_per_class(entries: Sequence[ManifestRow], limit: int) -> list[ManifestRow]:
    """The first ``limit`` entries of every (split, class): a deterministic smoke-test subset."""
    seen: dict[tuple[str, str], int] = {}
    kept = []
    for entry in entries:
        key = (entry.split, entry.label)
        if seen.get(key, 0) < limit:
            seen[key] = seen.get(key, 0) + 1
            kept.append(entry)
    return kept


def check_images(entries: Sequence[ManifestRow], images_dir: Path) -> None:
    """Raise ``IsicImagesMissing`` unless every listed image is a file in ``images_dir``."""
    if not images_dir.is_dir():
        raise IsicImagesMissing(images_dir, [e.path for e in entries], len(entries))
    missing = [e.path for e in entries if not (images_dir / e.path).is_file()]
    if missing:
        raise IsicImagesMissing(images_dir, missing, len(entries))


def summarise(metrics: dict[str, Any]) -> dict[str, Any]:
    """The numbers the paper reports for one run: test balanced accuracy and shot-group accuracy."""
    report = metrics["report"]
    groups = report.get("shot_groups", {})
    return {
        "method": metrics["method"],
        "best_epoch": metrics["best_epoch"],
        "val_balanced_accuracy": metrics["best_val_balanced_accuracy"],
        "test_balanced_accuracy": report["balanced_accuracy"],
        "test_macro_f1": report["macro_f1"],
        **{f"{g}_shot_accuracy": groups.get(g, {}).get("accuracy") for g in ("many", "few")},
        "train_seconds": metrics["train_seconds"],
    }


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """One line per method: test balanced accuracy and few-shot accuracy in %."""

    def pct(value: float | None) -> str:
        return "–" if value is None else f"{100 * value:.2f}"

    lines = [
        "| method | test balanced acc. (%) | few-shot acc. (%) | best epoch | train s |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['method']} | {pct(r['test_balanced_accuracy'])} | {pct(r['few_shot_accuracy'])} "
        f"| {r['best_epoch']} | {r['train_seconds']:.0f} |"
        for r in rows
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--images", type=Path, required=True, help="ISIC_2019_Training_Input folder"
    )
    parser.add_argument("--fold", type=int, choices=FOLDS, default=1)
    parser.add_argument("--imbalance", choices=IMBALANCES, default="0.01")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--teacher", default="resnet50")
    parser.add_argument("--teacher-weights", type=Path)
    parser.add_argument("--student", default="resnet18")
    parser.add_argument("--student-weights", type=Path)
    parser.add_argument("--weights-dir", type=Path)
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--image-size", type=int, default=defaults.image_size)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=defaults.device)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    parser.add_argument("--out", type=Path, default=Path("bench/results/isic2019_lt"))
    parser.add_argument("--limit-per-class", type=int, help="smoke test: first N per split+class")
    parser.add_argument("--allow-random-weights", action="store_true", help="smoke tests only")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    entries = load_protocol(args.fold, args.imbalance)
    if args.limit_per_class:
        entries = limit_per_class(entries, args.limit_per_class)
    try:
        check_images(entries, args.images)
        rows = run_methods(args, entries)
    except EngineError as exc:
        parser.exit(2, f"error: {exc}\n")

    tag = run_tag(args)
    print(f"\nISIC-2019-LT fold {args.fold}, imbalance {args.imbalance}, seed {args.seed}\n")
    print(markdown_table(rows))
    results = {
        "protocol": {"fold": args.fold, "imbalance": args.imbalance, "seed": args.seed},
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "runs": rows,
    }
    (args.out / tag / "results.json").write_text(json.dumps(results, indent=2))
    return 0


def run_tag(args: argparse.Namespace) -> str:
    """Folder name of one protocol draw and seed under ``--out``."""
    return f"fold{args.fold}_imb{args.imbalance}_seed{args.seed}"


def run_methods(args: argparse.Namespace, entries: list[ManifestRow]) -> list[dict[str, Any]]:
    """Train every requested method on ``entries``; one ``summarise`` row per method."""
    rows = []
    for method in args.methods:
        config = TrainConfig(
            method=method,
            epochs=args.epochs,
            batch_size=args.batch_size,
            image_size=args.image_size,
            seed=args.seed,
            device=args.device,
        )
        request = DistillationRequest(
            images=ManifestImages(
                args.images, entries, cache_dir=args.cache_dir, classes=CLASS_NAMES
            ),
            out_dir=args.out / run_tag(args) / method,
            config=config,
            teacher=args.teacher,
            student=args.student,
            teacher_weights=args.teacher_weights,
            student_weights=args.student_weights,
            weights_dir=args.weights_dir,
            allow_random_weights=args.allow_random_weights,
            export=False,
        )
        bar = ProgressBar(enabled=not args.quiet)
        try:
            outcome = run_distillation(request, bar)
        finally:
            bar.close()
        rows.append(summarise(outcome.metrics))
        print(f"{method}: test balanced accuracy {rows[-1]['test_balanced_accuracy']:.4f}")
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
