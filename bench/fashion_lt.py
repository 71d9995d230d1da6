"""Accuracy of every method on real data: long-tailed Fashion-MNIST distilled from a coarse teacher.

Protocol (issue 3, point 6):
- Data: Debian's ``dataset-fashion-mnist`` IDX files, 28×28 grey -> 32×32 RGB uint8 (bilinear).
  The 60k training images are split once (fixed data seed) into two halves.
- Teacher: a timm ResNet-18 (stage widths 64-128-256-512, 512-d features: twice the student's),
  trained here for 15 epochs on half A with **coarse** labels only (tops =
  T-shirt/Pullover/Coat/Shirt, footwear = Sandal/Sneaker/Ankle boot, other = Trouser/Dress/Bag),
  so it never sees the fine labels: Adam, cosine decay of the learning rate to 0, pad-and-crop +
  horizontal-flip augmentation (``teacher_recipe="cosine"``). Cached on disk; every seed and
  method reuses it. Why this recipe: with the engine's own trainer (constant learning rate, the
  paper's rotation/flip augmentation) the teacher's features held less fine-class information and
  EKD only tied BSM (BENCHMARKS.md); ``--teacher-recipe engine`` reproduces that.
- Student: the same ResNet-18 at half width (32-64-128-256, 4× fewer FLOPs), random init, trained
  30 epochs (the paper's default) on the 10 fine classes of half B: a balanced val set (100 per
  class) carved out per seed, then a long-tailed train set n_i = floor(n_max · 0.01^(i/9))
  (imbalance 100; 1000 ... 10 images, 2478 in all). Everything else is ``TrainConfig``'s defaults.
- Test: the official balanced 10k test set. Selection on val balanced accuracy (the trainer's
  best epoch), report on test: balanced accuracy and few-shot accuracy (classes with < 20 train
  images: Bag and Ankle boot at n_max = 1000).

    python -m bench.fashion_lt --seeds 0 1 2          # full run, prints the BENCHMARKS.md table
    python -m bench.fashion_lt --quick                # smoke run, well under a minute

CPU budget, measured on 2 CPU cores (``--threads 2``): the teacher takes ~16 min once (cached);
one seed of all five methods ~17 min (ce, bsm ~2 min; ekd ~3; fopro, fopro_akd ~5 each), so a
first run of one seed takes ~33 min, under the 45 min target. Per-method minutes are printed and
recorded so each run re-checks it. On a machine busy with other work, ``--threads 1`` avoids
OpenMP oversubscription, which can cost 10×. On a GPU (``--device cuda``) a seed takes ~4 min.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import hashlib
import json
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from foprokd.checkpoint import load_checkpoint
from foprokd.data import LabelledImages, to_unit_float
from foprokd.distillers import EffectiveDistiller, build_distiller
from foprokd.evaluation import predict
from foprokd.hyperparams import METHODS, PROMPT_METHODS, TrainConfig
from foprokd.losses import log_class_prior
from foprokd.metrics import classification_report
from foprokd.pipeline import (
    DatasetSplits,
    DecodedImages,
    DistillationRequest,
    PipelineCallbacks,
    run_distillation,
)
from foprokd.runtime import seed_everything
from foprokd.student import Student
from foprokd.trainer import CHECKPOINT_NAME, EpochSummary, train
from foprokd.zoo import FrozenTeacher

DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
INSTALL_HINT = "install it with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu)"
FINE_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
COARSE_CLASSES = ["tops", "footwear", "other"]
COARSE_OF_FINE = (0, 2, 0, 2, 0, 1, 0, 1, 2, 1)  # fine label -> index into COARSE_CLASSES
# Fashion-MNIST pixel statistics, replicated over the three RGB channels.
MEAN = (0.2860, 0.2860, 0.2860)
STD = (0.3530, 0.3530, 0.3530)
DATA_SEED = 0  # the teacher/student halves never change, so the cached teacher stays valid


@dataclass(frozen=True)
class BenchSettings:
    """Everything that changes the numbers; recorded in the results JSON."""

    image_size: int = 32
    n_max: int = 1000  # images of the most frequent fine class
    imbalance: float = 0.01  # n_min / n_max
    val_per_class: int = 100  # 50 made the best-epoch choice noisy (±1 point run to run)
    epochs: int = 30
    batch_size: int = 32
    student_channels: tuple[int, ...] = (32, 64, 128, 256)
    teacher_channels: tuple[int, ...] = (64, 128, 256, 512)
    teacher_epochs: int = 15
    teacher_batch_size: int = 128
    teacher_lr: float = 1e-3
    teacher_images: int | None = None  # None = all of half A (30k)
    # "engine": the engine's trainer (method ce, paper augmentation, constant lr); "cosine": the
    # usual small-image recipe (pad-and-crop + flip, cosine learning-rate decay to 0).
    teacher_recipe: str = "cosine"
    test_images: int | None = None  # None = the full 10k test set
    distill_weight: float = TrainConfig().distill_weight  # λ of the EKD cosine term
    # The students' CPU precision: the engine's default (bf16 autocast + channels_last on a CPU
    # with native bf16 kernels, else fp32) or, with ``--cpu-fp32``, fp32: to check the two agree.
    cpu_bf16: bool = TrainConfig().cpu_bf16
    # δ of the FPG's teacher-statistics term (TrainConfig.fpg_statistics_weight; 0 = the paper).
    fpg_statistics_weight: float = 0.0


QUICK = BenchSettings(
    n_max=40,
    val_per_class=4,
    epochs=1,
    teacher_epochs=1,
    teacher_images=1024,
    test_images=500,
)


@dataclass
class FashionMnist:
    """The IDX files as arrays: images uint8 (N, 28, 28), labels int64 (N,)."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def read_idx(path: Path) -> np.ndarray:
    """A gzip IDX file (ubyte images or labels) as a uint8 array of the shape in its header."""
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape).copy()


def load_fashion_mnist(data_dir: Path = DATA_DIR) -> FashionMnist:
    """Read the four IDX files; exits with install instructions when they are absent."""
    names = {
        "train_images": "train-images-idx3-ubyte.gz",
        "train_labels": "train-labels-idx1-ubyte.gz",
        "test_images": "t10k-images-idx3-ubyte.gz",
        "test_labels": "t10k-labels-idx1-ubyte.gz",
    }
    missing = [name for name in names.values() if not (data_dir / name).is_file()]
    if missing:
        sys.exit(
            f"error: Fashion-MNIST not found in {data_dir} (missing {', '.join(missing)}); "
            f"{INSTALL_HINT}, or pass --data-dir."
        )
    arrays = {key: read_idx(data_dir / name) for key, name in names.items()}
    return FashionMnist(
        train_images=arrays["train_images"],
        train_labels=arrays["train_labels"].astype(np.int64),
        test_images=arrays["test_images"],
        test_labels=arrays["test_labels"].astype(np.int64),
    )


def to_rgb(images: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (N, 28, 28) grey -> uint8 (N, 3, size, size) RGB, bilinear."""
    grey = torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1).float()
    resized = F.interpolate(grey, size=(size, size), mode="bilinear", align_corners=False)
    return resized.round_().clamp_(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()


def labelled(
    images: np.ndarray, labels: np.ndarray, classes: list[str], size: int
) -> LabelledImages:
    """Arrays -> the engine's ``LabelledImages`` at ``size``."""
    return LabelledImages(to_rgb(images, size), torch.from_numpy(labels.astype(np.int64)), classes)


def halves(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint index halves of the training set: (teacher half A, student half B)."""
    order = np.random.default_rng(DATA_SEED).permutation(n)
    return order[: n // 2], order[n // 2 :]


def long_tailed_counts(n_max: int, imbalance: float, num_classes: int) -> list[int]:
    """n_i = floor(n_max · imbalance^(i / (C − 1))), at least 1."""
    return [max(1, int(n_max * imbalance ** (i / (num_classes - 1)))) for i in range(num_classes)]


def student_split(
    labels: np.ndarray, pool: np.ndarray, settings: BenchSettings, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(long-tailed train indices, balanced val indices) drawn from ``pool`` for ``seed``."""
    rng = np.random.default_rng(seed)
    counts = long_tailed_counts(settings.n_max, settings.imbalance, len(FINE_CLASSES))
    train_idx, val_idx = [], []
    for label, count in enumerate(counts):
        members = rng.permutation(pool[labels[pool] == label])
        if len(members) < settings.val_per_class + count:
            raise ValueError(f"class {label} has {len(members)} images, needs more")
        val_idx.append(members[: settings.val_per_class])
        train_idx.append(members[settings.val_per_class : settings.val_per_class + count])
    return np.concatenate(train_idx), np.concatenate(val_idx)


class EpochLog(PipelineCallbacks):
    """Prints one line every ``every`` epochs (and the last) so long runs show progress."""

    def __init__(self, label: str, every: int = 1) -> None:
        self.label, self.every = label, every

    def on_epoch_end(self, summary: EpochSummary) -> None:
        if summary.epoch % self.every and summary.epoch != summary.epochs:
            return
        print(
            f"    {self.label} epoch {summary.epoch}/{summary.epochs}: "
            f"val balanced acc {summary.val_balanced_accuracy:.4f} "
            f"(best {summary.best_balanced_accuracy:.4f} @ {summary.best_epoch}), "
            f"{summary.seconds:.0f} s/epoch",
            flush=True,
        )


def resnet18(channels: Sequence[int]) -> torch.nn.Module:
    """timm ResNet-18 with the given stage widths, pooled features, random init."""
    return timm.create_model("resnet18", pretrained=False, num_classes=0, channels=tuple(channels))


def teacher_key(settings: BenchSettings) -> str:
    """Cache key: everything that changes the teacher's weights."""
    fields = (
        "image_size",
        "teacher_channels",
        "teacher_epochs",
        "teacher_batch_size",
        "teacher_lr",
        "teacher_images",
    )
    spec = {name: getattr(settings, name) for name in fields} | {"data_seed": DATA_SEED, "v": 2}
    if settings.teacher_recipe != "engine":  # keeps the keys of teachers cached before it existed
        spec["recipe"] = settings.teacher_recipe
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def coarse_teacher(
    data: FashionMnist, settings: BenchSettings, cache_dir: Path, device: str
) -> tuple[FrozenTeacher, dict[str, Any]]:
    """The frozen coarse-label teacher, trained on half A once and then loaded from the cache."""
    key = teacher_key(settings)
    weights, record_path = (
        cache_dir / f"teacher-{key}.safetensors",
        cache_dir / f"teacher-{key}.json",
    )
    seed_everything(DATA_SEED)  # the teacher's random init is part of what the key names
    backbone = resnet18(settings.teacher_channels)
    if weights.is_file() and record_path.is_file():
        backbone.load_state_dict(load_file(str(weights)))
        return FrozenTeacher(backbone, MEAN, STD), json.loads(record_path.read_text())

    half_a, _ = halves(len(data.train_labels))
    if settings.teacher_images is not None:
        half_a = half_a[: settings.teacher_images]
    coarse = np.asarray(COARSE_OF_FINE)[data.train_labels]
    n_val = max(len(half_a) // 30, 30)  # ~1000 images to pick the teacher's best epoch
    val_idx, train_idx = half_a[:n_val], half_a[n_val:]
    train_set = labelled(
        data.train_images[train_idx], coarse[train_idx], COARSE_CLASSES, settings.image_size
    )
    val_set = labelled(
        data.train_images[val_idx], coarse[val_idx], COARSE_CLASSES, settings.image_size
    )
    # Cross-entropy through the engine's own trainer: a Student's fc is the coarse classifier.
    model = Student(backbone, len(COARSE_CLASSES), 64, MEAN, STD)
    config = TrainConfig(
        method="ce",
        epochs=settings.teacher_epochs,
        batch_size=settings.teacher_batch_size,
        image_size=settings.image_size,
        lr=settings.teacher_lr,
        seed=DATA_SEED,
        device=device,
    )
    start = time.perf_counter()
    print(
        f"training the coarse teacher ({settings.teacher_recipe} recipe): "
        f"{settings.teacher_epochs} epochs, then cached",
        flush=True,
    )
    if settings.teacher_recipe == "cosine":
        best_bacc, best_epoch = _train_teacher_cosine(model, train_set, val_set, settings, device)
    else:
        run_dir = cache_dir / f"teacher-{key}"
        result = train(
            config, train_set, val_set, model, None, run_dir=run_dir, callbacks=EpochLog("teacher")
        )
        shutil.rmtree(run_dir)  # the training checkpoint is not needed once the weights are saved
        best_bacc, best_epoch = result.best_balanced_accuracy, result.best_epoch
    record = {
        "key": key,
        "recipe": settings.teacher_recipe,
        "train_images": len(train_set),
        "coarse_val_balanced_accuracy": best_bacc,
        "best_epoch": best_epoch,
        "seconds": time.perf_counter() - start,
    }
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = weights.with_name(f".{weights.name}.tmp")
    save_file({k: v.contiguous() for k, v in backbone.state_dict().items()}, str(tmp))
    tmp.replace(weights)
    record_path.write_text(json.dumps(record, indent=2))
    return FrozenTeacher(backbone, MEAN, STD), record


def _pad_crop_flip(images: torch.Tensor, generator: torch.Generator, pad: int = 2) -> torch.Tensor:
    """uint8 (B, 3, S, S) -> float [0, 1]: random crops of the reflect-padded batch, h-flips."""
    x = images.float().div_(255)
    size = x.shape[-1]
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    offsets = torch.randint(0, 2 * pad + 1, (x.shape[0], 2), generator=generator).tolist()
    crops = torch.stack(
        [padded[i, :, dy : dy + size, dx : dx + size] for i, (dy, dx) in enumerate(offsets)]
    )
    flip = torch.rand(x.shape[0], generator=generator) < 0.5
    crops[flip] = crops[flip].flip(-1)
    return crops


def _train_teacher_cosine(
    model: Student,
    train_set: LabelledImages,
    val_set: LabelledImages,
    settings: BenchSettings,
    device: str,
) -> tuple[float, int]:
    """Coarse cross-entropy with Adam, cosine decay of ``teacher_lr`` to 0 over all steps; the
    weights of the best val epoch are kept in ``model``. Returns (best val bal. acc., epoch)."""
    model.to(device)
    generator = torch.Generator().manual_seed(DATA_SEED)
    batches_per_epoch = -(-len(train_set) // settings.teacher_batch_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.teacher_lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=settings.teacher_epochs * batches_per_epoch
    )
    best: tuple[float, int, dict[str, torch.Tensor]] = (-1.0, 0, {})
    for epoch in range(1, settings.teacher_epochs + 1):
        model.train()
        started = time.perf_counter()
        order = torch.randperm(len(train_set), generator=generator)
        for batch in order.split(settings.teacher_batch_size):
            if len(batch) < 2:
                continue
            x = _pad_crop_flip(train_set.images[batch], generator).to(device)
            loss = F.cross_entropy(model(x).logits, train_set.labels[batch].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        probs = predict(model, val_set, batch_size=512, device=device)
        report = classification_report(val_set.labels.numpy(), probs.argmax(axis=1), COARSE_CLASSES)
        bacc = float(report["balanced_accuracy"])
        if bacc > best[0]:
            best = (bacc, epoch, {k: v.detach().clone() for k, v in model.state_dict().items()})
        print(
            f"    teacher epoch {epoch}/{settings.teacher_epochs}: val balanced acc {bacc:.4f} "
            f"(best {best[0]:.4f} @ {best[1]}), {time.perf_counter() - started:.0f} s/epoch",
            flush=True,
        )
    model.load_state_dict(best[2])
    model.cpu()
    return best[0], best[1]


@torch.no_grad()
def teacher_features(teacher: FrozenTeacher, images: LabelledImages) -> np.ndarray:
    """The teacher's pooled features of un-augmented images, float32 (N, D_t)."""
    teacher.eval()
    chunks = [
        teacher(to_unit_float(images.images[start : start + 512]))
        for start in range(0, len(images), 512)
    ]
    return torch.cat(chunks).numpy()


def linear_probe(teacher: FrozenTeacher, sets: dict[str, LabelledImages]) -> float:
    """Diagnostic: test balanced accuracy of a class-balanced logistic regression on the frozen
    teacher's features, fitted on the student's long-tailed train split with the fine labels.

    It measures how much fine-class information the coarse teacher's features hold: EKD pulls
    the student's projected features towards them.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    train_features = teacher_features(teacher, sets["train"])
    scaler = StandardScaler().fit(train_features)
    probe = LogisticRegression(class_weight="balanced", max_iter=2000, C=0.1)
    probe.fit(scaler.transform(train_features), sets["train"].labels.numpy())
    predicted = probe.predict(scaler.transform(teacher_features(teacher, sets["test"])))
    report = classification_report(
        sets["test"].labels.numpy(), predicted, FINE_CLASSES, sets["train"].class_counts()
    )
    return float(report["balanced_accuracy"])


@torch.no_grad()
def prompt_diagnostics(
    run_dir: Path,
    config: TrainConfig,
    student: Student,
    teacher: FrozenTeacher,
    sets: dict[str, LabelledImages],
    images: int = 1000,
) -> dict[str, Any] | None:
    """What the trained FPG (last epoch's checkpoint) does to the teacher's input and features,
    on the first ``images`` test images: mean and max |M − 1|, the mean cosine between f(x̃)
    and f(x), and the mean mask. None for methods without an FPG."""
    if config.method not in PROMPT_METHODS:
        return None
    prior = log_class_prior(sets["train"].class_counts())
    distiller = build_distiller(config, student, teacher, prior)
    distiller.load_checkpoint_state(load_checkpoint(run_dir / CHECKPOINT_NAME)["distiller"])
    assert isinstance(distiller, EffectiveDistiller)
    assert distiller.prompt is not None
    device = next(student.parameters()).device  # where training left the models
    generator = distiller.prompt.generator.to(device).eval()
    x01 = to_unit_float(sets["test"].images[:images].to(device))
    prompted = generator(x01)
    gain = (prompted.mask - 1).abs()
    cosine = F.cosine_similarity(teacher(prompted.images), teacher(x01), dim=1)
    return {
        "mask_mean_abs_gain": float(gain.mean()),
        "mask_max_abs_gain": float(gain.max()),
        "teacher_cosine_prompted_vs_raw": float(cosine.mean()),
        # (3, H, W//2+1) on the rfft2 grid: what the prompt does on average (bench.domain_gap).
        "mean_mask": prompted.mask.mean(dim=0).cpu().tolist(),
    }


def run_method(
    method: str,
    seed: int,
    sets: dict[str, LabelledImages],
    teacher: FrozenTeacher,
    settings: BenchSettings,
    run_dir: Path,
    device: str,
) -> dict[str, Any]:
    """Train one method for one seed; test metrics + wall time."""
    seed_everything(seed)
    student = Student(
        resnet18(settings.student_channels), len(FINE_CLASSES), teacher.feature_dim, MEAN, STD
    )
    config = TrainConfig(
        method=method,
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        image_size=settings.image_size,
        seed=seed,
        device=device,
        distill_weight=settings.distill_weight,
        cpu_bf16=settings.cpu_bf16,
        fpg_statistics_weight=settings.fpg_statistics_weight,
    )
    start = time.perf_counter()
    outcome = run_distillation(
        DistillationRequest(
            images=DecodedImages(DatasetSplits(sets["train"], sets["val"], sets["test"])),
            out_dir=run_dir,
            config=config,
            teacher=teacher,
            student=student,
            export=False,
        ),
        EpochLog(method, every=5),
    )
    result, report = outcome.result, outcome.report
    fpg = prompt_diagnostics(run_dir, config, result.student, teacher, sets)
    shutil.rmtree(run_dir)  # per-epoch checkpoints only matter while the run is in progress
    seconds = time.perf_counter() - start
    groups = report["shot_groups"]
    return {
        "method": method,
        "seed": seed,
        "test_balanced_accuracy": report["balanced_accuracy"],
        "few_shot_accuracy": groups["few"]["accuracy"],
        "medium_shot_accuracy": groups["medium"]["accuracy"],
        "many_shot_accuracy": groups["many"]["accuracy"],
        "few_shot_classes": groups["few"]["classes"],
        "best_epoch": result.best_epoch,
        "val_balanced_accuracy": result.best_balanced_accuracy,
        # Mean training terms of the last epoch (for the FPG: fpg_mask = γ·mean((M − 1)²), ...).
        "last_epoch_losses": result.history[-1].train_losses,
        "fpg_diagnostics": fpg,
        "seconds": seconds,
    }


def mean_std(values: Sequence[float | None]) -> str:
    """'mean ± std' in percent over seeds (std 0 for one seed; '–' when undefined)."""
    present = [v for v in values if v is not None]
    if not present:
        return "–"
    spread = statistics.stdev(present) if len(present) > 1 else 0.0
    return f"{100 * statistics.fmean(present):.2f} ± {100 * spread:.2f}"


def markdown_table(rows: Sequence[dict[str, Any]], methods: Sequence[str]) -> str:
    """One line per method, aggregated over seeds."""
    lines = [
        "| method | test balanced acc. (%) | few-shot acc. (%) | min / seed |",
        "|---|---|---|---|",
    ]
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        minutes = statistics.fmean(r["seconds"] for r in mine) / 60
        lines.append(
            f"| {method} | {mean_std([r['test_balanced_accuracy'] for r in mine])} "
            f"| {mean_std([r['few_shot_accuracy'] for r in mine])} | {minutes:.1f} |"
        )
    return "\n".join(lines)


def protocol_parser(doc: str | None, out: str) -> argparse.ArgumentParser:
    """The options every Fashion-MNIST benchmark shares (seeds, sizes, data, cache, threads);
    ``out`` is the default results file."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke-test settings")
    parser.add_argument("--epochs", type=int, help="override the student epochs")
    parser.add_argument("--n-max", type=int, help="override the head-class train images")
    parser.add_argument("--teacher-epochs", type=int, help="override the teacher's epochs")
    parser.add_argument("--distill-weight", type=float, help="override λ of the EKD cosine term")
    parser.add_argument(
        "--teacher-recipe", choices=("engine", "cosine"), help="override how the teacher trains"
    )
    parser.add_argument(
        "--cpu-fp32",
        action="store_true",
        help="students in fp32 on CPU (default: the engine's, bf16 autocast + channels_last "
        "where the CPU has native bf16 kernels)",
    )
    parser.add_argument(
        "--fpg-statistics-weight",
        type=float,
        help="δ of the FPG's teacher BatchNorm-statistics term (0 = the paper's objective)",
    )
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path("bench/.cache/fashion_lt"),
        help="the coarse teacher is trained once and shared by every benchmark",
    )
    parser.add_argument("--out", type=Path, default=Path(out))
    parser.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (1 is faster on a machine shared with others)",
    )
    return parser


def protocol_settings(args: argparse.Namespace) -> BenchSettings:
    """``BenchSettings`` (or ``QUICK``) with the overrides of ``protocol_parser``'s options;
    applies ``--threads``."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    settings = QUICK if args.quick else BenchSettings()
    overrides = {
        "epochs": args.epochs,
        "n_max": args.n_max,
        "teacher_epochs": args.teacher_epochs,
        "distill_weight": args.distill_weight,
        "teacher_recipe": args.teacher_recipe,
        "cpu_bf16": False if args.cpu_fp32 else None,
        "fpg_statistics_weight": args.fpg_statistics_weight,
    }
    return dataclasses.replace(settings, **{k: v for k, v in overrides.items() if v is not None})


def main(argv: Sequence[str] | None = None) -> int:
    parser = protocol_parser(__doc__, "bench/results/fashion_lt.json")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    settings = protocol_settings(args)
    data = load_fashion_mnist(args.data_dir)
    teacher, teacher_record = coarse_teacher(data, settings, args.cache_dir, args.device)
    print(
        f"teacher (coarse labels only): val balanced accuracy "
        f"{teacher_record['coarse_val_balanced_accuracy']:.4f}, "
        f"trained in {teacher_record['seconds']:.0f} s (cached as {teacher_record['key']})"
    )

    test_images, test_labels = data.test_images, data.test_labels
    if settings.test_images is not None:
        test_images, test_labels = (
            test_images[: settings.test_images],
            test_labels[: settings.test_images],
        )
    test = labelled(test_images, test_labels, FINE_CLASSES, settings.image_size)
    _, half_b = halves(len(data.train_labels))
    rows, probes = [], {}
    for seed in args.seeds:
        train_idx, val_idx = student_split(data.train_labels, half_b, settings, seed)
        sets = {
            "train": labelled(
                data.train_images[train_idx],
                data.train_labels[train_idx],
                FINE_CLASSES,
                settings.image_size,
            ),
            "val": labelled(
                data.train_images[val_idx],
                data.train_labels[val_idx],
                FINE_CLASSES,
                settings.image_size,
            ),
            "test": test,
        }
        print(f"seed {seed}: train counts {sets['train'].class_counts()}")
        probe = linear_probe(teacher, sets)
        probes[seed] = probe
        print(f"  teacher linear probe (fine labels, diagnostic): balanced acc {probe:.4f}")
        for method in args.methods:
            run_dir = args.cache_dir / "runs" / f"seed{seed}" / method
            row = run_method(method, seed, sets, teacher, settings, run_dir, args.device)
            rows.append(row)
            print(
                f"  {method:10s} balanced acc {row['test_balanced_accuracy']:.4f}  "
                f"few-shot {row['few_shot_accuracy'] or 0:.4f}  "
                f"best epoch {row['best_epoch']:3d}  {row['seconds'] / 60:.1f} min",
                flush=True,
            )

    table = markdown_table(rows, args.methods)
    print(f"\nFashion-MNIST-LT (imbalance {1 / settings.imbalance:.0f}), seeds {args.seeds}\n")
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "settings": dataclasses.asdict(settings),
                "seeds": args.seeds,
                "teacher": teacher_record,
                "teacher_linear_probe": probes,
                "torch_threads": torch.get_num_threads(),
                "runs": rows,
                "table": table,
            },
            indent=2,
        )
    )
    print(f"\nresults: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
