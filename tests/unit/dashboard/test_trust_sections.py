"""The job page shows what a clinic needs before deploying: intervals, small-split warnings,
calibration and the INT8 decision, from the job's engine metrics."""

from __future__ import annotations

import numpy as np
from fastapi.testclient import TestClient

from app.core.db import get_sessionmaker
from app.dashboard.views import small_splits
from app.jobs.models import Job, JobStatus
from foprokd.metrics import classification_report
from foprokd.trust import assess, summary
from tests.unit.dashboard.test_pages import HTML, Team, client, sign_in, team

__all__ = ["client", "team"]
CLASSES = ["nevus", "melanoma", "bcc"]


def _metrics() -> dict:
    rng = np.random.default_rng(0)
    val_y, test_y = rng.integers(0, 3, 60), np.array([0] * 30 + [1] * 20 + [2] * 4)
    val_logits, test_logits = rng.normal(0, 3, (60, 3)), rng.normal(0, 3, (54, 3))
    val_logits[np.arange(60), val_y] += 3
    test_logits[np.arange(54), test_y] += 3
    trust = assess(
        val_logits=val_logits,
        val_labels=val_y,
        eval_logits=test_logits,
        eval_labels=test_y,
        class_names=CLASSES,
        class_counts={"train": [300, 200, 12], "val": [20, 20, 20], "test": [30, 20, 4]},
        evaluated_split="test",
    )
    report = classification_report(test_y, test_logits.argmax(1), CLASSES, [300, 200, 12])
    report["intervals"] = trust.pop("intervals")
    int8 = {
        "mode": "auto",
        "published": False,
        "evaluated_split": "test",
        "speedup_p50": 0.9,
        "reasons": ["few-shot class bcc loses 25.00 points of recall (limit 5.00)"],
        "fp32": {"size_mb": 44.7, "latency_ms": {"p50": 30.0, "p95": 33.0}, "report": report},
        "int8": {"size_mb": 11.3, "latency_ms": {"p50": 33.0, "p95": 36.0}, "report": report},
        "deltas": {"balanced_accuracy": -0.083, "shot_groups": {"few": -0.25}},
    }
    return {"report": report, "evaluated_split": "test", "trust": summary(trust, int8)}


def test_the_job_page_shows_calibration_int8_and_warnings(client: TestClient, team: Team) -> None:
    metrics = _metrics()
    html = _job_page(client, team, metrics)
    calibration = metrics["trust"]["calibration"]
    assert 'id="calibration"' in html
    assert f"{calibration['temperature']:.3f}" in html
    assert 'id="int8"' in html
    assert "withheld" in html
    assert "few-shot class bcc loses 25.00 points" in html
    # Sizes in the artifact table's units (44.7e6 bytes = 42.6 MiB).
    assert "42.6 MiB" in html
    assert "10.8 MiB" in html
    # bcc has 4 test images: the per-class row and the calibration card both warn, the card
    # once per split.
    assert "test: 4 image(s)" in html
    assert "<li><strong>test</strong>: bcc (4)</li>" in html
    # No reliability_diagram.png among this job's artifacts: no broken image.
    assert "reliability_diagram.png" not in html
    low, high = metrics["report"]["intervals"]["headline"]["balanced_accuracy"]
    assert f"[{low:.3f}–{high:.3f}]" in html


def _job_page(client: TestClient, team: Team, metrics: dict) -> str:
    with get_sessionmaker()() as session:
        job = session.get_one(Job, team.job_id)
        job.status = JobStatus.succeeded.value
        job.metrics = metrics
        session.commit()
    sign_in(client, team.viewer)
    page = client.get(f"/jobs/{team.job_id}", headers=HTML)
    assert page.status_code == 200
    return page.text


def test_the_job_page_shows_each_class_operating_points(client: TestClient, team: Team) -> None:
    metrics = _metrics()
    html = _job_page(client, team, metrics)
    assert 'id="operating-points"' in html
    points = metrics["trust"]["operating_points"]
    assert points["reported_on"] == "test"
    assert set(points["profiles"]) == {"sens90", "sens95"}
    for row in points["per_class"]:
        start = html.index(f'<tr data-class="{row["class"]}">')
        cells = html[start : html.index("</tr>", start)]
        assert f"{row['roc_auc']:.3f}" in cells
        assert f"{row['pr_auc']:.3f}" in cells
        for profile in points["profiles"]:
            at = row["at"][profile]
            # The val-chosen threshold reaches its target on val; on test it may not.
            assert at["threshold"] is not None
            for value in (at["threshold"], at["sensitivity"], at["specificity"]):
                assert f"{value:.3f}" in cells


def test_a_job_from_before_operating_points_shows_no_empty_table(
    client: TestClient, team: Team
) -> None:
    metrics = _metrics()
    del metrics["trust"]["operating_points"]
    html = _job_page(client, team, metrics)
    assert 'id="calibration"' in html
    assert 'id="operating-points"' not in html


def test_small_class_warnings_are_grouped_one_line_per_split() -> None:
    warnings = [
        {"split": "val", "class": "bcc", "images": 2},
        {"split": "test", "class": "bcc", "images": 4},
        {"split": "val", "class": "vasc", "images": 0},
    ]
    assert small_splits(warnings) == [("val", ["bcc (2)", "vasc (0)"]), ("test", ["bcc (4)"])]
