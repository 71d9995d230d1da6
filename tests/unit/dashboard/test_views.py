"""How the pages shape the API's models: progress line, heat map, report rows, form fields."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from app.dashboard.views import (
    HEAT_LEVELS,
    heat_map,
    job_actions,
    param_fields,
    parse_params,
    progress_view,
    report_view,
)
from app.jobs.models import JobStatus
from app.jobs.schemas import JobOut, JobParams
from foprokd.hyperparams import HyperParams
from foprokd.metrics import classification_report


def job(status: JobStatus, phase: str | None, progress: dict[str, Any], **extra: Any) -> JobOut:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    return JobOut(
        id="job_1",
        dataset_id="ds_1",
        teacher="resnet50",
        student="resnet18",
        method="fopro_akd",
        params={},
        priority="normal",
        retry_of=None,
        status=status,
        phase=phase,
        progress=progress,
        metrics={},
        attempt=1,
        max_attempts=3,
        cancel_requested=extra.get("cancel_requested", False),
        checkpoint_epoch=None,
        failure_code=None,
        failure_reason=None,
        created_at=now,
        started_at=None,
        finished_at=None,
        updated_at=now,
    )


TRAINING = {
    "epoch": 3,
    "epochs": 30,
    "step": 2,
    "steps_per_epoch": 5,
    "global_step": 12,
    "total_steps": 150,
    "percent": 8.0,
    "images_per_s": 41.5,
    "eta_s": 320.0,
}


def test_training_progress_shows_epoch_step_throughput_and_eta() -> None:
    view = progress_view(job(JobStatus.running, "training", TRAINING))
    assert (view.percent, view.epoch, view.epochs, view.step, view.steps) == (8.0, 3, 30, 2, 5)
    assert view.images_per_s == 41.5
    assert view.eta_s == 320.0
    assert view.phase == "training"


def test_preparing_counts_as_no_training_done_yet() -> None:
    progress = {"stage": "downloading", "done": 10, "total": 40, "percent": 25.0}
    view = progress_view(job(JobStatus.running, "preparing", progress))
    assert view.percent == 0.0
    assert view.phase == "preparing (downloading 10/40)"
    assert view.eta_s is None


def test_a_finished_job_has_no_eta_and_a_succeeded_one_is_complete() -> None:
    cancelled = progress_view(job(JobStatus.cancelled, "training", TRAINING))
    assert cancelled.percent == 8.0
    assert cancelled.eta_s is None
    assert cancelled.images_per_s is None
    assert cancelled.phase == "ended: cancelled"
    assert progress_view(job(JobStatus.succeeded, "exporting", TRAINING)).percent == 100.0
    assert progress_view(job(JobStatus.queued, None, {})).phase == "waiting for a worker"


@pytest.mark.parametrize(
    ("status", "cancel", "retry", "delete"),
    [
        (JobStatus.queued, True, False, False),
        (JobStatus.running, True, False, False),
        (JobStatus.succeeded, False, False, True),
        (JobStatus.failed, False, True, True),
        (JobStatus.cancelled, False, True, True),
    ],
)
def test_buttons_follow_the_job_state(
    status: JobStatus, cancel: bool, retry: bool, delete: bool
) -> None:
    actions = job_actions(job(status, None, {}))
    assert (actions.cancel, actions.retry, actions.delete) == (cancel, retry, delete)


def test_a_running_job_asked_to_stop_offers_no_second_cancel() -> None:
    assert not job_actions(job(JobStatus.running, "training", {}, cancel_requested=True)).cancel


def test_heat_map_colours_by_share_of_the_true_class() -> None:
    cells = heat_map([[90, 10], [1, 1], [0, 0]])
    assert [c.level for c in cells[0]] == [9, 1]
    assert [c.level for c in cells[1]] == [5, 5]  # a tail class's 2 images read like the head's
    assert [c.level for c in cells[2]] == [0, 0]  # a class absent from the split
    assert cells[0][0].share == pytest.approx(0.9)
    assert max(c.level for row in cells for c in row) <= HEAT_LEVELS


def test_report_rows_mark_the_few_shot_classes() -> None:
    names = ["nevus", "melanoma", "dermatofibroma"]
    report = classification_report(
        [0, 0, 1, 2, 2], [0, 1, 1, 2, 0], names, train_counts=[500, 60, 8]
    )
    view = report_view(report)
    groups = {row.name: row.group for row in view.classes}
    assert groups == {"nevus": "many", "melanoma": "medium", "dermatofibroma": "few"}
    assert [g for g, _, _ in view.groups] == ["many", "medium", "few"]
    assert view.summary["balanced_accuracy"] == pytest.approx(report["balanced_accuracy"])
    assert [[c.count for c in row] for row in view.heat] == report["confusion_matrix"]


def test_form_fields_are_the_engines_hyper_parameters() -> None:
    fields = param_fields(include_admin_only=False)
    assert [f.name for f in fields] == list(HyperParams.model_fields)
    defaults = HyperParams()
    for field in fields:
        info = HyperParams.model_fields[field.name]
        assert field.default == getattr(defaults, field.name)
        assert field.help == info.description
    epochs = next(f for f in fields if f.name == "epochs")
    assert (epochs.kind, epochs.minimum, epochs.maximum) == ("int", 1.0, 1000.0)
    admin = [f.name for f in param_fields(include_admin_only=True)]
    assert admin == list(JobParams.model_fields)


def test_parsed_form_values_validate_as_job_params() -> None:
    fields = param_fields(include_admin_only=True)
    params = parse_params({"epochs": "3", "lr": " 0.001 ", "image_size": ""}, fields)
    # A form sends text, so the dashboard validates leniently (the API's JSON body is strict).
    parsed = JobParams.model_validate(params, strict=False)
    assert parsed.epochs == 3
    assert parsed.lr == 0.001
    assert parsed.image_size == HyperParams().image_size  # emptied box: the default
    assert parsed.augment is False  # an unticked box
    assert parsed.allow_random_weights is False
