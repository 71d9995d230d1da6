"""What the pages show, computed from the API's own response models: a job's progress line,
the test report's tables and heat map, the hyper-parameter form's fields.

Nothing here reads the database: routes fetch ``JobOut``, ``JobMetricsOut``, ``DatasetOut`` and
friends through the same functions the ``/v1`` routes use, and these functions only shape them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

from pydantic.fields import FieldInfo

from app.jobs.models import JobStatus
from app.jobs.schemas import JobOut, JobParams
from app.jobs.state import TERMINAL
from foprokd.hyperparams import METHOD_HELP

HEAT_LEVELS = 10
SHOT_GROUPS = ("many", "medium", "few")


@dataclass(frozen=True)
class ProgressView:
    """A job's progress as one line: ``percent`` of all training steps (0-100), the phase, where
    training is (``epoch``/``epochs``, ``step``/``steps``), throughput and time left."""

    percent: float
    phase: str
    epoch: int | None
    epochs: int | None
    step: int | None
    steps: int | None
    images_per_s: float | None
    eta_s: float | None


def progress_view(job: JobOut) -> ProgressView:
    """The progress line of ``job``; the preparing phase (downloads) counts as 0 % of training."""
    progress: dict[str, Any] = job.progress or {}
    training = "total_steps" in progress
    percent = float(progress.get("percent", 0.0)) if training else 0.0
    if job.status is JobStatus.succeeded:
        percent = 100.0
    active = job.status in (JobStatus.queued, JobStatus.running)
    phase = job.phase or ("waiting for a worker" if job.status is JobStatus.queued else "–")
    if job.status in TERMINAL:
        phase = f"ended: {job.status.value}"
    elif job.phase == "preparing" and "stage" in progress:
        phase = f"preparing ({progress['stage']} {progress.get('done', 0)}/{progress['total']})"
    return ProgressView(
        percent=round(min(max(percent, 0.0), 100.0), 2),
        phase=phase,
        epoch=progress.get("epoch") if training else None,
        epochs=progress.get("epochs") if training else None,
        step=progress.get("step") if training else None,
        steps=progress.get("steps_per_epoch") if training else None,
        images_per_s=progress.get("images_per_s") if training and active else None,
        eta_s=progress.get("eta_s") if training and active else None,
    )


@dataclass(frozen=True)
class JobActions:
    """Which buttons a job's state allows (the role is checked by the template and services)."""

    cancel: bool
    retry: bool
    delete: bool


def job_actions(job: JobOut) -> JobActions:
    return JobActions(
        cancel=job.status in (JobStatus.queued, JobStatus.running) and not job.cancel_requested,
        retry=job.status in (JobStatus.failed, JobStatus.cancelled),
        delete=job.status in TERMINAL,
    )


@dataclass(frozen=True)
class HeatCell:
    """One confusion-matrix cell: its count, share of the true class's row, and colour level."""

    count: int
    share: float
    level: int


@dataclass(frozen=True)
class ClassRow:
    name: str
    precision: float
    recall: float
    f1: float
    support: int
    train_count: int | None
    group: str | None
    recall_interval: list[float] | None = None  # 95 % Wilson
    precision_interval: list[float] | None = None
    warnings: tuple[str, ...] = ()  # a split holds too few images of the class


@dataclass(frozen=True)
class ReportView:
    """The test report of a succeeded job as the page lays it out."""

    summary: dict[str, float]
    groups: list[tuple[str, float | None, list[str]]]
    classes: list[ClassRow]
    class_names: list[str]
    heat: list[list[HeatCell]]
    intervals: dict[str, list[float] | None]  # headline metric -> 95 % bootstrap interval


@dataclass(frozen=True)
class TrustView:
    """Calibration and the INT8 decision of a succeeded job (``metrics.trust``)."""

    calibration: dict[str, Any]
    int8: dict[str, Any] | None
    # One line per split: (split, ["bcc (4)", ...]) for the classes it holds too few images of.
    small_splits: list[tuple[str, list[str]]]
    # Per class AUCs and, per sensitivity profile, threshold / sensitivity / specificity
    # (None for jobs that finished before the summary carried them).
    operating_points: dict[str, Any] | None = None


def small_splits(warnings: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """The per-(split, class) warnings grouped by split, in the order the splits first appear:
    a long tail can flag a dozen classes per split, which one line per pair buries."""
    grouped: dict[str, list[str]] = {}
    for warning in warnings:
        grouped.setdefault(warning["split"], []).append(f"{warning['class']} ({warning['images']})")
    return list(grouped.items())


def trust_view(trust: dict[str, Any] | None) -> TrustView | None:
    if not trust:
        return None
    return TrustView(
        calibration=dict(trust["calibration"]),
        int8=trust.get("int8"),
        small_splits=small_splits(list(trust.get("small_classes", []))),
        operating_points=trust.get("operating_points"),
    )


def heat_map(matrix: list[list[int]]) -> list[list[HeatCell]]:
    """Cells coloured by their share of the row (the true class), in ``HEAT_LEVELS`` steps, so
    a tail class's few images are as readable as the head's many."""
    rows = []
    for row in matrix:
        total = sum(row)
        rows.append(
            [
                HeatCell(
                    count=count,
                    share=count / total if total else 0.0,
                    level=round(HEAT_LEVELS * count / total) if total else 0,
                )
                for count in row
            ]
        )
    return rows


def report_view(report: dict[str, Any], trust: dict[str, Any] | None = None) -> ReportView:
    """Per-class scores with each class's shot group, 95 % intervals and small-split
    warnings (from ``trust``), group accuracies, the heat map."""
    intervals = report.get("intervals") or {}
    bounds = {row["class"]: row for row in intervals.get("per_class", [])}
    warned: dict[str, list[str]] = {}
    for warning in (trust or {}).get("small_classes", []):
        warned.setdefault(warning["class"], []).append(
            f"{warning['split']}: {warning['images']} image(s)"
        )
    groups_block: dict[str, Any] = report.get("shot_groups") or {}
    group_of = {
        name: group
        for group in SHOT_GROUPS
        for name in (groups_block.get(group) or {}).get("classes", [])
    }
    classes = [
        ClassRow(
            name=row["class"],
            precision=row["precision"],
            recall=row["recall"],
            f1=row["f1"],
            support=row["support"],
            train_count=row.get("train_count"),
            group=group_of.get(row["class"]),
            recall_interval=bounds.get(row["class"], {}).get("recall"),
            precision_interval=bounds.get(row["class"], {}).get("precision"),
            warnings=tuple(warned.get(row["class"], [])),
        )
        for row in report.get("per_class", [])
    ]
    summary_keys = ("accuracy", "balanced_accuracy", "macro_f1", "mcc", "cohen_kappa")
    return ReportView(
        summary={key: report[key] for key in summary_keys if key in report},
        groups=[
            (group, groups_block[group].get("accuracy"), groups_block[group].get("classes", []))
            for group in SHOT_GROUPS
            if group in groups_block
        ],
        classes=classes,
        class_names=list(report.get("class_names", [])),
        heat=heat_map(report.get("confusion_matrix", [])),
        intervals=dict(intervals.get("headline") or {}),
    )


@dataclass(frozen=True)
class ParamField:
    """One input of the new-job form, from a ``JobParams`` field: its default, range, help."""

    name: str
    kind: str  # "int", "float", "bool" or "choice"
    default: Any
    minimum: float | None
    maximum: float | None
    help: str
    choices: tuple[str, ...] = ()


def _bounds(info: FieldInfo) -> tuple[float | None, float | None]:
    """The field's lower and upper limits (``ge``/``gt``, ``le``/``lt``; the form shows the
    inclusive ones, the server checks the strict ones)."""
    low: float | None = None
    high: float | None = None
    for rule in info.metadata:
        for name in ("ge", "gt"):
            if (value := getattr(rule, name, None)) is not None:
                low = float(value)
        for name in ("le", "lt"):
            if (value := getattr(rule, name, None)) is not None:
                high = float(value)
    return low, high


def param_fields(*, include_admin_only: bool) -> list[ParamField]:
    """The form's hyper-parameters in ``JobParams`` order, with the engine's defaults and help;
    the test-only ``allow_random_weights`` switch only for admin keys (the only ones it is for)."""
    fields = []
    for name, info in JobParams.model_fields.items():
        if name == "allow_random_weights" and not include_admin_only:
            continue
        choices: tuple[str, ...] = ()
        kind: str | None
        if get_origin(info.annotation) is Literal:
            kind, choices = "choice", tuple(str(v) for v in get_args(info.annotation))
        else:
            kind = {bool: "bool", int: "int", float: "float"}.get(info.annotation)  # type: ignore[arg-type]
        if kind is None:
            raise TypeError(f"JobParams.{name} has a type the form cannot edit: {info.annotation}")
        low, high = _bounds(info)
        fields.append(
            ParamField(name, kind, info.default, low, high, info.description or "", choices)
        )
    return fields


def parse_params(form: dict[str, str], fields: list[ParamField]) -> dict[str, Any]:
    """Form values of ``fields`` as ``JobParams`` input: an unticked box is False, an emptied
    number box falls back to the default (pydantic converts and validates the rest)."""
    values: dict[str, Any] = {}
    for field in fields:
        if field.kind == "bool":
            values[field.name] = field.name in form
        elif form.get(field.name, "").strip():
            values[field.name] = form[field.name].strip()
    return values


METHODS_WITH_HELP: list[tuple[str, str]] = list(METHOD_HELP.items())
