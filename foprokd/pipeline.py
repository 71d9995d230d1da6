"""One distillation from start to finish: the engine's whole workflow as one library call.

``run_distillation`` does build models → decode (cache) → train → evaluate (test, or val when
there is no test split; with calibration, operating points and intervals: ``foprokd.trust``) →
export (+ INT8 when it passes its gate, + ``bundle.json`` and golden files) → model card,
writing a run folder:

    run.json        everything needed to reproduce or re-export the run
    manifest.csv    the splits used (when the images came from a manifest)
    checkpoint.pt   written after every epoch (resume from it)
    metrics.json    the report on the evaluated split + training history
    student/        the exported classifier, its INT8 model, bundle and model card

``python -m foprokd train``, the service's training worker and the benchmarks all call it; they
differ only in where the images and weights come from and what they do with the outcome.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from foprokd.atomic import write_json_atomic
from foprokd.bundle import BUNDLE_FILE, write_bundle
from foprokd.catalog import ModelSpec
from foprokd.checkpoint import best_student_state, load_checkpoint
from foprokd.data import LabelledImages
from foprokd.errors import EngineError, ManifestInvalid
from foprokd.evaluation import concat_images, evaluate_images, split_logits
from foprokd.export import FILE_NAMES, export_student, load_exported
from foprokd.hyperparams import TEACHER_METHODS, TrainConfig
from foprokd.image_cache import ImageCache
from foprokd.images import RESIZE_POLICY
from foprokd.manifest import ManifestRow, read_manifest, save_manifest
from foprokd.metrics import classification_report
from foprokd.model_card import build_model_card, write_model_card
from foprokd.quantize import (
    CALIBRATION_IMAGES,
    INT8_FILE,
    Int8Gate,
    LatencySpec,
    build_int8,
    stratified_sample,
)
from foprokd.runtime import seed_everything
from foprokd.splits import SPLITS, describe_split
from foprokd.student import Student, build_classifier, build_student
from foprokd.trainer import CHECKPOINT_NAME, EpochSummary, TrainCallbacks, TrainResult, train
from foprokd.trust import assess, config_entries
from foprokd.trust import summary as trust_summary
from foprokd.zoo import FrozenTeacher, load_teacher, resolve_spec, resolve_weights

RUN_FILE = "run.json"
METRICS_FILE = "metrics.json"
MANIFEST_FILE = "manifest.csv"
EXPORT_DIR = "student"
DEFAULT_CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "foprokd"
# Each phase after "preparing" starts with one ``on_phase`` call, in this order.
PHASES: tuple[str, ...] = ("preparing", "training", "evaluating", "exporting")
# Only these student modules make up the deployable classifier (proj/fc_proj are training-only).
_CLASSIFIER_MODULES = frozenset({"normalise", "backbone", "fc"})

ProgressFn = Callable[[int, int], None]


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
class DatasetSplits:
    """A dataset decoded at the training resolution: train, val and (possibly empty) test."""

    train: LabelledImages
    val: LabelledImages
    test: LabelledImages
    rows: list[ManifestRow] | None = None  # in cache row order, when decoded from a manifest
    fingerprint: str | None = None  # the decode cache's, when there is one
    decoded: int = 0  # images decoded for this run (0 when a cache was reused)

    @property
    def classes(self) -> list[str]:
        return list(self.train.classes)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


class ImageSource(Protocol):
    """Where a run's images come from; ``load`` decodes them at ``image_size``."""

    def load(self, image_size: int, on_progress: ProgressFn | None) -> DatasetSplits: ...


@dataclass
class ManifestImages:
    """Image files named by manifest rows (paths relative to ``root``), decoded once into the
    memmap cache under ``cache_dir``. ``classes`` fixes the label order (default: natural)."""

    root: Path
    rows: Sequence[ManifestRow]
    cache_dir: Path = DEFAULT_CACHE_DIR
    classes: Sequence[str] | None = None

    def load(self, image_size: int, on_progress: ProgressFn | None) -> DatasetSplits:
        for name in ("train", "val"):
            if not any(row.split == name for row in self.rows):
                raise ManifestInvalid(
                    f"the {name} split is empty; every run needs train and val images"
                )
        cache = ImageCache.build(
            self.rows,
            root=self.root,
            cache_dir=self.cache_dir,
            image_size=image_size,
            classes=self.classes,
            on_progress=on_progress,
        )
        train_set, val_set, test_set = (cache.split(name) for name in SPLITS)
        return DatasetSplits(
            train_set, val_set, test_set, cache.entries, cache.fingerprint, cache.decoded
        )


@dataclass
class DecodedImages:
    """Splits already in memory (benchmarks, tests): used as they are."""

    splits: DatasetSplits

    def load(self, image_size: int, on_progress: ProgressFn | None) -> DatasetSplits:
        size = self.splits.train.images.shape[-1]
        if size != image_size:
            raise ValueError(f"the images are {size} px but the run trains at {image_size} px")
        if on_progress is not None:
            total = sum(self.splits.sizes().values())
            on_progress(total, total)
        return self.splits


@dataclass
class DistillationRequest:
    """One run. ``teacher``/``student``: a zoo or timm name, a spec, or a ready model.

    Weights come from the explicit file, else ``weights_dir``, else the offline HF cache; random
    weights only with ``allow_random_weights`` (tests, smoke runs), and then ``on_warning`` says
    so. ``resume_from`` continues from a checkpoint; without it, a run folder that already holds
    one is refused. ``dataset`` (name, id) goes into the model card and ``provenance`` (job id,
    dataset id, ...) into the exported ``config.json``.
    """

    images: ImageSource
    out_dir: Path
    config: TrainConfig
    teacher: str | ModelSpec | FrozenTeacher = "resnet50"
    student: str | ModelSpec | Student = "resnet18"
    teacher_weights: Path | None = None
    student_weights: Path | None = None
    weights_dir: Path | None = None
    allow_random_weights: bool = False
    resume_from: Path | None = None
    split_seed: int | None = None  # recorded when the splits were generated for this run
    export: bool = True  # export the student and write its model card
    dataset: Mapping[str, Any] = field(default_factory=dict)
    provenance: Mapping[str, Any] = field(default_factory=dict)
    int8_gate: Int8Gate = field(default_factory=Int8Gate)  # when ``int8: auto`` publishes


class PipelineCallbacks(TrainCallbacks):
    """The trainer's hooks plus the pipeline's own (all no-ops by default)."""

    def on_phase(self, phase: str) -> None:
        """When a phase of ``PHASES`` after ``preparing`` starts."""

    def on_decode(self, done: int, total: int) -> None:
        """As images are decoded into the cache (once with total when it is reused)."""


@dataclass
class DistillationOutcome:
    """What a run produced. ``files``: the exported student and model card, to publish."""

    metrics: dict[str, Any]
    result: TrainResult
    splits: DatasetSplits
    teacher: FrozenTeacher | None
    files: list[Path]

    @property
    def report(self) -> dict[str, Any]:
        return dict(self.metrics["report"])

    @property
    def evaluated_split(self) -> str:
        return str(self.metrics["evaluated_split"])


def run_distillation(
    request: DistillationRequest, callbacks: PipelineCallbacks | None = None
) -> DistillationOutcome:
    """Build, decode, train (best epoch by val balanced accuracy), evaluate, export, card.

    Raises the engine's typed errors: ``WeightsNotFound`` (before any decoding), data errors
    (``ManifestInvalid``), training errors (cancelled, NaN, out of memory), ``RunFolderInUse``.
    """
    callbacks = callbacks or PipelineCallbacks()
    config, out_dir = request.config, request.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    if (out_dir / CHECKPOINT_NAME).exists() and request.resume_from is None:
        raise RunFolderInUse(out_dir)

    # Models (and their weights files) first: a missing file must fail before a long decode.
    seed_everything(config.seed)
    teacher, teacher_dim = _teacher(request, callbacks)
    build, student_init = _student_builder(request, teacher_dim, callbacks)
    splits = request.images.load(config.image_size, callbacks.on_decode)
    student = build(len(splits.classes))
    if splits.rows is not None:
        save_manifest(splits.rows, out_dir / MANIFEST_FILE)
    write_json_atomic(out_dir / RUN_FILE, _run_record(request, splits, teacher_dim, student_init))

    callbacks.on_phase("training")
    start = time.perf_counter()
    result = train(
        config,
        splits.train,
        splits.val,
        student,
        teacher,
        run_dir=out_dir,
        callbacks=callbacks,
        resume_from=request.resume_from,
    )
    train_seconds = time.perf_counter() - start

    callbacks.on_phase("evaluating")
    if not len(splits.test):
        callbacks.on_warning("The dataset has no test split: reported on val.")
    classifier = result.student.classifier()
    report, trust, evaluated_split = _evaluate(config, splits, classifier)
    teacher_name = _model_name(request.teacher) if teacher is not None else None
    metrics: dict[str, Any] = {
        "method": config.method,
        "teacher": teacher_name,
        "student": _model_name(request.student),
        "student_init": student_init,
        "evaluated_split": evaluated_split,
        "best_epoch": result.best_epoch,
        "best_val_balanced_accuracy": result.best_balanced_accuracy,
        "train_seconds": train_seconds,
        "split_sizes": splits.sizes(),
        "report": report,
        "history": [dataclasses.asdict(summary) for summary in result.history],
    }
    files: list[Path] = []
    int8: dict[str, Any] | None = None
    if request.export:
        callbacks.on_phase("exporting")
        trained = Trained(classifier, result.best_epoch, result.history)
        files, int8 = _export(
            request, out_dir / EXPORT_DIR, trained, splits, teacher, metrics, trust
        )
        metrics["export"] = {path.name: str(path.relative_to(out_dir)) for path in files}
        if not int8["published"] and int8["mode"] != "never":
            callbacks.on_warning("INT8 model withheld: " + "; ".join(int8["reasons"]) + ".")
    metrics["trust"] = trust_summary(trust, int8)
    write_json_atomic(out_dir / METRICS_FILE, metrics)
    return DistillationOutcome(metrics, result, splits, teacher, files)


@dataclass(frozen=True)
class Trained:
    """What export needs of a training run: the deployable classifier of its best epoch."""

    classifier: torch.nn.Module
    best_epoch: int
    history: Sequence[EpochSummary]


def _evaluate(
    config: TrainConfig, splits: DatasetSplits, classifier: torch.nn.Module
) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Score ``classifier`` on test (val when there is no test split) and assess trust
    (temperature fitted on val, operating points, intervals): (report, trust, evaluated split)."""
    evaluated_split = "test" if len(splits.test) else "val"
    evaluated = splits.test if len(splits.test) else splits.val
    val_logits = split_logits(
        classifier, splits.val, batch_size=config.eval_batch_size, device=config.device
    )
    eval_logits = (
        val_logits
        if evaluated is splits.val
        else split_logits(
            classifier, evaluated, batch_size=config.eval_batch_size, device=config.device
        )
    )
    report = classification_report(
        evaluated.labels.numpy(),
        eval_logits.argmax(axis=1),
        splits.classes,
        train_counts=splits.train.class_counts(),
    )
    trust = assess(
        val_logits=val_logits,
        val_labels=splits.val.labels.numpy(),
        eval_logits=eval_logits,
        eval_labels=evaluated.labels.numpy(),
        class_names=splits.classes,
        class_counts=_class_counts(splits),
        evaluated_split=evaluated_split,
        seed=config.seed,
    )
    report["intervals"] = trust.pop("intervals")
    return report, trust, evaluated_split


def _teacher(
    request: DistillationRequest, callbacks: PipelineCallbacks
) -> tuple[FrozenTeacher | None, int]:
    """The frozen teacher (None when the method uses none) and its feature size."""
    if isinstance(request.teacher, FrozenTeacher):
        return request.teacher, request.teacher.feature_dim
    spec = resolve_spec(request.teacher, "teacher")
    if request.config.method not in TEACHER_METHODS:
        return None, spec.feature_dim
    path = _weights(
        request,
        spec,
        request.teacher_weights,
        callbacks,
        f"Teacher {spec.name} uses RANDOM weights (allow_random_weights is a test-only "
        "switch): the student learns nothing useful from it.",
    )
    return load_teacher(spec, weights=path, allow_random=True), spec.feature_dim


def _student_builder(
    request: DistillationRequest, teacher_dim: int, callbacks: PipelineCallbacks
) -> tuple[Callable[[int], Student], str]:
    """Resolve the student's weights now (so a missing file fails early); build it later, when
    the number of classes is known. Also returns how its backbone starts (for ``run.json``):
    ``imagenet`` (from a weights file), ``scratch`` (asked for) or ``random`` (test-only)."""
    prebuilt = request.student
    if isinstance(prebuilt, Student):
        if request.export:
            raise ValueError("a ready-made student cannot be exported by name: pass export=False")
        return (lambda num_classes: prebuilt), "prebuilt"
    spec = resolve_spec(prebuilt, "student")
    if request.config.student_init == "scratch":
        if request.student_weights is not None:
            raise ValueError(
                f"student_init is scratch but student weights {request.student_weights} were "
                "given: drop the weights file or use student_init imagenet"
            )
        path = None
    else:
        path = _weights(
            request,
            spec,
            request.student_weights,
            callbacks,
            f"Student {spec.name} starts from RANDOM weights (allow_random_weights).",
        )
    init = (
        "scratch" if request.config.student_init == "scratch" else "imagenet" if path else "random"
    )
    return (
        lambda num_classes: build_student(
            spec, num_classes, teacher_dim, weights=path, allow_random=True
        )
    ), init


def _weights(
    request: DistillationRequest,
    spec: ModelSpec,
    explicit: Path | None,
    callbacks: PipelineCallbacks,
    random_warning: str,
) -> Path | None:
    """``resolve_weights`` for the request; None (random weights) is said by ``on_warning``."""
    path = resolve_weights(
        spec,
        weights=explicit,
        weights_dir=request.weights_dir,
        allow_random=request.allow_random_weights,
    )
    if path is None:
        callbacks.on_warning(random_warning)
    return path


def _model_name(model: str | ModelSpec | FrozenTeacher | Student) -> str:
    if isinstance(model, str):
        return model
    if isinstance(model, ModelSpec):
        return model.name
    return type(model).__name__


def _run_record(
    request: DistillationRequest, splits: DatasetSplits, teacher_dim: int, student_init: str
) -> dict[str, Any]:
    """``run.json``: what ``export_run`` and a person reproducing the run need."""
    root = getattr(request.images, "root", None)
    return {
        "data_root": str(Path(root).resolve()) if root is not None else None,
        "manifest": MANIFEST_FILE if splits.rows is not None else None,
        "split_seed": request.split_seed,
        "cache_fingerprint": splits.fingerprint,
        "teacher": _model_name(request.teacher),
        "teacher_dim": teacher_dim,
        "student": _model_name(request.student),
        "student_init": student_init,
        "classes": splits.classes,
        "split_counts": splits.sizes(),
        "train_counts": splits.train.class_counts(),
        "random_weights_allowed": request.allow_random_weights,
        "config": request.config.to_dict(),
        "dataset": dict(request.dataset),
        "provenance": dict(request.provenance),
        "int8_gate": dataclasses.asdict(request.int8_gate),
    }


def _class_counts(splits: DatasetSplits) -> dict[str, list[int]]:
    return {
        "train": splits.train.class_counts(),
        "val": splits.val.class_counts(),
        "test": splits.test.class_counts(),
    }


def dataset_content_hash(splits: DatasetSplits) -> str:
    """SHA-256 of what the run learnt from: per image its split, class and file sha256 (from
    the manifest), else the decoded pixels and labels of each split."""
    digest = hashlib.sha256()
    if splits.rows is not None and all(row.sha256 for row in splits.rows):
        for line in sorted(f"{r.split}\t{r.label}\t{r.sha256}\n" for r in splits.rows):
            digest.update(line.encode())
        return digest.hexdigest()
    for name in SPLITS:
        part: LabelledImages = getattr(splits, name)
        digest.update(name.encode())
        digest.update(part.labels.numpy().tobytes())
        for start in range(0, len(part), 256):
            digest.update(part.images[start : start + 256].numpy().tobytes())
    return digest.hexdigest()


def _export(
    request: DistillationRequest,
    out_dir: Path,
    trained: Trained,
    splits: DatasetSplits,
    teacher: FrozenTeacher | None,
    metrics: Mapping[str, Any],
    trust: Mapping[str, Any],
) -> tuple[list[Path], dict[str, Any]]:
    """Export the best student (safetensors, TorchScript, ONNX with its temperature and
    operating points in config.json), its INT8 model when it passes the gate, the bundle
    (``bundle.json`` + golden files) and the model card into ``out_dir``; return the files and
    the INT8 record."""
    config, classifier = request.config, trained.classifier
    report, evaluated_split = metrics["report"], metrics["evaluated_split"]
    evaluated = splits.test if len(splits.test) else splits.val
    train_counts = splits.train.class_counts()
    exported = export_student(
        classifier,
        classes=splits.classes,
        image_size=config.image_size,
        arch=metrics["student"],
        out_dir=out_dir,
        extra_config={
            **dict(request.provenance),
            "method": config.method,
            "teacher": metrics["teacher"],
            "student_init": metrics["student_init"],
            "train_counts": train_counts,
            "best_epoch": trained.best_epoch,
            f"{evaluated_split}_balanced_accuracy": report["balanced_accuracy"],
            "resize_policy": RESIZE_POLICY,
            **config_entries(trust),
        },
    )
    eval_pixels = evaluated.images.numpy()
    calibration = stratified_sample(
        splits.train.labels.numpy(), CALIBRATION_IMAGES, seed=config.seed
    )
    int8 = build_int8(
        exported["onnx"],
        out_dir / INT8_FILE,
        mode=config.int8,
        calibration=splits.train.images[torch.from_numpy(calibration)].numpy(),
        eval_images=eval_pixels,
        eval_labels=evaluated.labels.numpy(),
        class_names=splits.classes,
        train_counts=train_counts,
        gate=request.int8_gate,
        latency=LatencySpec(),
        evaluated_split=evaluated_split,
    )
    models = {"fp32": exported["onnx"]}
    if int8["published"]:
        models["int8"] = out_dir / INT8_FILE
    bundle_files = write_bundle(
        out_dir,
        config=json.loads(exported["config"].read_text()),
        images=eval_pixels,
        labels=evaluated.labels.tolist(),
        models=models,
        other_files=[exported["safetensors"], exported["torchscript"]],
        provenance={
            **dict(request.provenance),
            "dataset": dict(request.dataset),
            "dataset_content_hash": dataset_content_hash(splits),
            "split_seed": request.split_seed,
            "teacher": metrics["teacher"],
            "student": metrics["student"],
            "student_init": metrics["student_init"],
            "method": config.method,
            "best_epoch": trained.best_epoch,
            "hyper_parameters": config.to_dict(),
        },
    )
    recorded = dict(request.dataset.get("split") or {})
    measured = describe_split([(row.split, row.group or None) for row in splits.rows or []])
    card = build_model_card(
        report=report,
        evaluated_split=evaluated_split,
        history=list(trained.history),
        dataset={
            **dict(request.dataset),
            "split": {**recorded, **measured},
            "classes": splits.classes,
            "class_counts": _class_counts(splits),
        },
        hyper_parameters=config.to_dict(),
        student_name=str(metrics["student"]),
        teacher_name=metrics["teacher"],
        student=classifier,
        teacher=teacher,
        onnx_path=exported["onnx"],
        trust={**trust, "int8": int8},
    )
    files = [*exported.values(), *models.values(), *bundle_files]
    return list(dict.fromkeys([*files, *write_model_card(out_dir, card).values()])), int8


class RunNotReexportable(EngineError):
    """A run folder whose images cannot be found again (or are not the ones it trained on)."""


def export_run(
    run_dir: Path,
    out_dir: Path | None = None,
    *,
    data_root: Path | None = None,
    cache_dir: Path = DEFAULT_CACHE_DIR,
    on_decode: ProgressFn | None = None,
) -> list[Path]:
    """Re-export the best student of a run folder's checkpoint as the run itself did (default
    folder: ``run_dir/student``): re-evaluate it on the run's splits (``manifest.csv``, images
    under ``data_root``, default the root ``run.json`` recorded), redo the trust assessment
    (temperature, operating points, intervals), the INT8 gate, the bundle and the model card.
    Returns the files written.

    Raises ``RunNotReexportable`` when the run's images were given in memory, are not found, or
    differ from those the run trained on (the bundle's dataset content hash).
    """
    try:
        run = json.loads((run_dir / RUN_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise RunNotReexportable(f"{run_dir} is not a readable run folder ({exc})") from exc
    if run.get("manifest") is None:
        raise RunNotReexportable(
            f"{run_dir} was trained on images given in memory (no {MANIFEST_FILE}): "
            "there is nothing to re-evaluate the student on, so it cannot be re-exported"
        )
    root = data_root or (Path(run["data_root"]) if run.get("data_root") else None)
    if root is None or not root.is_dir():
        raise RunNotReexportable(
            f"the images of {run_dir} are not at {root}: pass the folder that holds them (--data)"
        )
    config = TrainConfig.from_dict(run["config"])
    payload = load_checkpoint(run_dir / CHECKPOINT_NAME)
    state = best_student_state(payload) or payload["student"]
    classifier = build_classifier(run["student"], len(run["classes"]))
    classifier.load_state_dict(
        {k: v for k, v in state.items() if k.split(".", 1)[0] in _CLASSIFIER_MODULES}, strict=True
    )
    classifier.eval()
    rows = read_manifest(run_dir / MANIFEST_FILE)
    images = ManifestImages(root, rows, cache_dir=cache_dir, classes=run["classes"])
    splits = images.load(config.image_size, on_decode)
    recorded = _recorded_content_hash(run_dir / EXPORT_DIR)
    if recorded is not None and recorded != dataset_content_hash(splits):
        raise RunNotReexportable(
            f"the images under {root} are not the ones {run_dir} was trained on (their content "
            f"hash differs from the bundle's {recorded[:12]}…): re-exporting would publish "
            "metrics and a calibration measured on other data"
        )
    request = DistillationRequest(
        images=images,
        out_dir=run_dir,
        config=config,
        teacher=run["teacher"],
        student=run["student"],
        split_seed=run.get("split_seed"),
        dataset=run.get("dataset") or {},
        provenance=run.get("provenance") or {},
        int8_gate=Int8Gate(**run["int8_gate"]) if run.get("int8_gate") else Int8Gate(),
    )
    report, trust, evaluated_split = _evaluate(config, splits, classifier)
    uses_teacher = config.method in TEACHER_METHODS
    metrics = {
        "report": report,
        "evaluated_split": evaluated_split,
        "teacher": run["teacher"] if uses_teacher else None,
        "student": run["student"],
        "student_init": run.get("student_init"),
    }
    history = [EpochSummary(**summary) for summary in payload["history"]]
    trained = Trained(classifier, int(payload["best"]["epoch"]), history)
    teacher = _cost_teacher(run["teacher"]) if uses_teacher else None
    files, _ = _export(
        request, out_dir or run_dir / EXPORT_DIR, trained, splits, teacher, metrics, trust
    )
    return files


def _recorded_content_hash(export_dir: Path) -> str | None:
    """The dataset content hash in an earlier export's ``bundle.json`` (None when absent)."""
    try:
        bundle = json.loads((export_dir / BUNDLE_FILE).read_text())
    except (OSError, ValueError):
        return None
    value = bundle.get("provenance", {}).get("dataset_content_hash")
    return str(value) if value else None


def _cost_teacher(name: str) -> FrozenTeacher | None:
    """The teacher's architecture for the card's cost comparison (parameters, FLOPs, latency
    do not depend on weight values, so random weights measure the same); None when the name
    is not a zoo or timm model."""
    try:
        return load_teacher(name, allow_random=True)
    except (EngineError, RuntimeError, ValueError):
        return None


def evaluate_exported(
    model: Path,
    rows: Sequence[ManifestRow],
    *,
    root: Path,
    cache_dir: Path = DEFAULT_CACHE_DIR,
    batch_size: int,
    device: str,
    on_decode: ProgressFn | None = None,
) -> tuple[Path, int, dict[str, Any]]:
    """Score an exported student (its folder, or a run folder holding ``student/``) on the
    images of ``rows``; returns (export folder, images scored, classification report)."""
    model_dir = model
    if not (model_dir / FILE_NAMES["config"]).exists() and (model_dir / EXPORT_DIR).is_dir():
        model_dir = model_dir / EXPORT_DIR
    exported = load_exported(model_dir)
    cache = ImageCache.build(
        rows,
        root=root,
        cache_dir=cache_dir,
        image_size=exported.image_size,
        classes=exported.classes,
        on_progress=on_decode,
    )
    images = concat_images([cache.split(name) for name in SPLITS])
    report = evaluate_images(
        exported.classifier,
        images,
        train_counts=exported.config.get("train_counts"),
        batch_size=batch_size,
        device=device,
    )
    return model_dir, len(images), report
