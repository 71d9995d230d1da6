"""Where FoPro-KD's claim lives: a frozen teacher from one domain, a student's data from another.

Protocol (issue "The engine where FoPro-KD is meant to win", point 1): everything as in
``bench.fashion_lt`` (the same cached coarse-label teacher trained on natural half-A images; the
long-tailed half-B student set; the official test set), except that the student's train, val and
test images are seen through a fixed acquisition shift in the frequency domain
(``bench.scanner_shift.ScannerShift``: per-channel colour gain at DC, a boosted middle band, a
damped high band; its exact inverse is a mask the FPG can make). The teacher never sees a shifted
image during its own training.

Reported per seed: the teacher's linear probe on unshifted vs shifted images (how much
fine-class information the shift takes from the frozen teacher's features) and a probe fitted on
unshifted images but tested on shifted ones (how far the shift moves those features: what a frozen
teacher's view of the new scanner costs), every method's balanced / many / medium / few-shot test
accuracy, paired differences (fopro − ekd, fopro_akd − ekd, ekd − bsm), and for the FPG methods
how far the learned mean mask moved toward the inverse of the shift (cosine of log-gains; a
picture of both). Selection is on val only (the trainer's best epoch); test is only reported.

    python -m bench.domain_gap --seeds 0 1 2 3 4 --threads 2
    python -m bench.domain_gap --quick              # smoke run, about a minute

The teacher (~16 min once on 2 cores) is shared with ``bench.fashion_lt`` through its cache;
one seed of the five methods takes ~17 min on 2 cores.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from bench.fashion_lt import (
    FINE_CLASSES,
    coarse_teacher,
    halves,
    labelled,
    linear_probe,
    load_fashion_mnist,
    mean_std,
    protocol_parser,
    protocol_settings,
    run_method,
    student_split,
)
from bench.scanner_shift import ScannerShift, log_gain_agreement
from foprokd.atomic import write_json_atomic
from foprokd.data import LabelledImages
from foprokd.hyperparams import METHODS

PAIRS = (("fopro", "ekd"), ("fopro_akd", "ekd"), ("ekd", "bsm"))
GROUPS = ("many", "medium", "few")


def shifted(images: LabelledImages, shift: ScannerShift) -> tuple[LabelledImages, float]:
    """``images`` seen through ``shift`` (and the signal mass lost to uint8 clipping)."""
    pixels, clipped = shift.apply(images.images)
    return LabelledImages(pixels, images.labels, images.classes), clipped


def group_accuracy(row: dict[str, Any], group: str) -> float | None:
    value = row.get(f"{group}_shot_accuracy")
    return None if value is None else float(value)


def paired(rows: Sequence[dict[str, Any]], first: str, second: str) -> list[tuple[int, float]]:
    """(seed, first − second balanced accuracy) for every seed both methods ran."""
    by = {(r["method"], r["seed"]): r["test_balanced_accuracy"] for r in rows}
    seeds = sorted({r["seed"] for r in rows})
    return [
        (s, by[first, s] - by[second, s]) for s in seeds if (first, s) in by and (second, s) in by
    ]


def tables(rows: Sequence[dict[str, Any]], probes: dict[int, dict[str, float]]) -> str:
    """The BENCHMARKS.md tables: methods, paired differences, teacher probes, FPG masks."""
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    lines = [
        "| method | balanced (%) | many (%) | medium (%) | few (%) | per seed |",
        "|---|---|---|---|---|---|",
    ]
    for method in methods:
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["seed"])
        per_seed = " / ".join(f"{100 * r['test_balanced_accuracy']:.2f}" for r in mine)
        groups = " | ".join(mean_std([group_accuracy(r, g) for r in mine]) for g in GROUPS)
        lines.append(
            f"| {method} | {mean_std([r['test_balanced_accuracy'] for r in mine])} | {groups} "
            f"| {per_seed} |"
        )
    lines += ["", "| comparison | per seed (points) | mean | wins |", "|---|---|---|---|"]
    for first, second in PAIRS:
        diffs = paired(rows, first, second)
        if diffs:
            shown = " / ".join(f"{100 * d:+.2f}" for _, d in diffs)
            mean = 100 * statistics.fmean(d for _, d in diffs)
            wins = sum(d > 0 for _, d in diffs)
            lines.append(f"| {first} − {second} | {shown} | {mean:+.2f} | {wins} / {len(diffs)} |")
    lines += [
        "",
        "| seed | teacher probe, unshifted (%) | shifted (%) "
        "| fitted unshifted, tested shifted (%) |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {seed} | {100 * p['unshifted']:.2f} | {100 * p['shifted']:.2f} "
        f"| {100 * p['transfer']:.2f} |"
        for seed, p in sorted(probes.items())
    ]
    fpg = [r for r in rows if r.get("mask_agreement") is not None]
    if fpg:
        lines += [
            "",
            "| method | cos(log mean mask, log inverse) | mean abs(M − 1) | cos(f(x~), f(x)) |",
            "|---|---|---|---|",
        ]
        for method in sorted({r["method"] for r in fpg}):
            mine = [r for r in fpg if r["method"] == method]
            agreement = statistics.fmean(r["mask_agreement"] for r in mine)
            gain = statistics.fmean(r["fpg_diagnostics"]["mask_mean_abs_gain"] for r in mine)
            cosine = statistics.fmean(
                r["fpg_diagnostics"]["teacher_cosine_prompted_vs_raw"] for r in mine
            )
            lines.append(f"| {method} | {agreement:+.3f} | {gain:.3f} | {cosine:.3f} |")
    return "\n".join(lines)


def headline(rows: Sequence[dict[str, Any]]) -> str:
    """One line: the paired differences that decide whether the method wins here."""
    parts = []
    for first, second in PAIRS:
        diffs = paired(rows, first, second)
        if diffs:
            mean = 100 * statistics.fmean(d for _, d in diffs)
            wins = sum(d > 0 for _, d in diffs)
            parts.append(f"{first} − {second} {mean:+.2f} points ({wins}/{len(diffs)} seeds)")
    return "domain gap: " + "; ".join(parts) if parts else "domain gap: no pair of methods ran"


def mask_picture(
    rows: Sequence[dict[str, Any]], shift: ScannerShift, size: int, path: Path
) -> None:
    """Per channel: the inverse of the shift next to each FPG method's mean learned mask
    (first seed), both centred (DC in the middle of the left edge), on one colour scale."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    wanted = shift.inverse_mask(size, size)[0]
    learned = {}
    for row in rows:
        if row.get("fpg_diagnostics") and row["method"] not in learned:
            learned[row["method"]] = torch.tensor(row["fpg_diagnostics"]["mean_mask"])
    panels = [
        ("inverse of the shift", wanted),
        *[(f"{m}: mean mask", v) for m, v in learned.items()],
    ]
    low, high = 1 - shift.alpha, 1 + shift.alpha
    figure, axes = plt.subplots(3, len(panels), figsize=(2.6 * len(panels), 6.4), squeeze=False)
    for column, (title, mask) in enumerate(panels):
        for channel, name in enumerate("RGB"):
            axis = axes[channel][column]
            image = axis.imshow(
                torch.fft.fftshift(mask[channel], dim=0).numpy(),
                vmin=low,
                vmax=high,
                cmap="coolwarm",
                aspect="auto",
            )
            axis.set_xticks([])
            axis.set_yticks([])
            if channel == 0:
                axis.set_title(title, fontsize=9)
            if column == 0:
                axis.set_ylabel(f"{name}: vertical freq.")
    figure.colorbar(image, ax=axes, shrink=0.6, label="amplitude gain")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> int:
    parser = protocol_parser(__doc__, "bench/results/domain_gap.json")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--resume", action="store_true", help="keep the runs already in --out, run the rest"
    )
    args = parser.parse_args(argv)
    settings = protocol_settings(args)
    shift = ScannerShift()
    print(f"acquisition shift: {shift.describe()}", flush=True)
    data = load_fashion_mnist(args.data_dir)
    teacher, teacher_record = coarse_teacher(data, settings, args.cache_dir, args.device)
    test_images, test_labels = data.test_images, data.test_labels
    if settings.test_images is not None:
        test_images = test_images[: settings.test_images]
        test_labels = test_labels[: settings.test_images]
    test = labelled(test_images, test_labels, FINE_CLASSES, settings.image_size)
    shifted_test, clipped = shifted(test, shift)
    print(f"shifted test set: {100 * clipped:.2f}% of the signal lost to clipping", flush=True)
    inverse = shift.inverse_mask(settings.image_size, settings.image_size)[0]

    size = settings.image_size
    _, half_b = halves(len(data.train_labels))
    rows: list[dict[str, Any]] = []
    probes: dict[int, dict[str, float]] = {}
    if args.resume and args.out.is_file():
        saved = json.loads(args.out.read_text())
        rows = [r for r in saved["runs"] if r["seed"] in args.seeds]
        probes = {int(k): v for k, v in saved["teacher_linear_probe"].items()}
        print(f"resuming: {len(rows)} runs already in {args.out}", flush=True)

    def save() -> str:
        table = tables(rows, probes)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "settings": dataclasses.asdict(settings),
            "shift": dataclasses.asdict(shift),
            "shift_clipped_mass_test": clipped,
            "seeds": args.seeds,
            "teacher": teacher_record,
            "teacher_linear_probe": probes,
            "torch_threads": torch.get_num_threads(),
            "runs": rows,
            "table": table,
        }
        write_json_atomic(args.out, record)
        return table

    for seed in args.seeds:
        train_idx, val_idx = student_split(data.train_labels, half_b, settings, seed)
        raw = {
            "train": labelled(
                data.train_images[train_idx], data.train_labels[train_idx], FINE_CLASSES, size
            ),
            "val": labelled(
                data.train_images[val_idx], data.train_labels[val_idx], FINE_CLASSES, size
            ),
            "test": test,
        }
        sets = {"train": shifted(raw["train"], shift)[0], "val": shifted(raw["val"], shift)[0]}
        sets["test"] = shifted_test
        probes[seed] = {
            "unshifted": linear_probe(teacher, raw),
            "shifted": linear_probe(teacher, sets),
            # A head fitted on the teacher's natural-domain features, asked about shifted ones.
            "transfer": linear_probe(teacher, {"train": raw["train"], "test": sets["test"]}),
        }
        print(
            f"seed {seed}: teacher linear probe {100 * probes[seed]['unshifted']:.2f}% unshifted, "
            f"{100 * probes[seed]['shifted']:.2f}% shifted, "
            f"{100 * probes[seed]['transfer']:.2f}% fitted unshifted and tested shifted",
            flush=True,
        )
        for method in args.methods:
            if any(r["method"] == method and r["seed"] == seed for r in rows):
                continue
            run_dir = args.cache_dir / "domain_gap_runs" / f"seed{seed}" / method
            if run_dir.exists():  # a run that was interrupted: start it again
                shutil.rmtree(run_dir)
            row = run_method(method, seed, sets, teacher, settings, run_dir, args.device)
            if row["fpg_diagnostics"] is not None:
                mean_mask = torch.tensor(row["fpg_diagnostics"]["mean_mask"])
                row["mask_agreement"] = log_gain_agreement(mean_mask, inverse)
            rows.append(row)
            print(
                f"  {method:10s} balanced acc {row['test_balanced_accuracy']:.4f}  "
                f"few-shot {row['few_shot_accuracy'] or 0:.4f}  best epoch {row['best_epoch']:3d}"
                f"  {row['seconds'] / 60:.1f} min",
                flush=True,
            )
            save()

    table = save()
    picture = args.out.with_suffix(".png")
    mask_picture(rows, shift, settings.image_size, picture)
    print(f"\nFashion-MNIST-LT through the scanner shift, seeds {args.seeds}\n\n{table}")
    print(f"\nresults: {args.out}; masks: {picture}")
    print(headline(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
