"""The dashboard in Chromium against a live embedded service: sign-in, live job progress,
cancel, curves, test report, downloads, dataset upload, roles and CSRF.

The one gpu worker trains the session's two jobs in turn: a long one the first test watches and
cancels, then a short one (2 epochs) whose report the last tests read, so the tests between run
while it trains.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import pytest

from app.teams.models import Role
from foprokd.synthetic import sample_dataset, write_archive
from tests.browser.conftest import Dashboard, LiveService

pytestmark = [pytest.mark.browser, pytest.mark.integration]

WRITE_CONTROLS = "[data-write], form[action$='/cancel'], form[action$='/delete'], #upload-form"

# Pixels a canvas has painted (alpha > 0) and the chart's points: a blank canvas has neither.
CANVAS_STATE = """(id) => {
  const canvas = document.getElementById(id);
  const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let painted = 0;
  for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) painted++;
  const chart = Chart.getChart(canvas);
  return {
    painted, total: pixels.length / 4, type: chart.options.scales.y.type,
    points: chart.data.datasets.map((set) => set.data.filter((v) => v !== null).length),
  };
}"""


def _expect() -> Any:
    from playwright.sync_api import expect

    return expect


def _progress_of(dashboard: Dashboard, selector: str) -> float:
    return float(dashboard.page.get_attribute(selector, "value") or 0)


def _wait_progress_above(dashboard: Dashboard, selector: str, floor: float) -> float:
    """Wait (at most 90 s) until the progress bar at ``selector`` shows more than ``floor``."""
    dashboard.page.wait_for_function(
        "([selector, floor]) => Number(document.querySelector(selector)?.value) > floor",
        arg=[selector, floor],
        timeout=90_000,
    )
    return _progress_of(dashboard, selector)


def test_progress_advances_live_and_a_job_is_cancelled_from_its_page(
    dashboard: Dashboard, live: LiveService
) -> None:
    job_id = live.long_job_id
    dashboard.sign_in(live.admin_key)
    # A marker on the window: it is gone if the page reloads.
    dashboard.page.evaluate("window.__sameDocument = true")
    row_bar = f"tr[data-job-id='{job_id}'] progress"
    first = _wait_progress_above(dashboard, row_bar, 0)
    second = _wait_progress_above(dashboard, row_bar, first)
    assert second > first
    assert dashboard.page.evaluate("window.__sameDocument === true"), "the list reloaded"
    dashboard.screenshot("jobs-live")

    dashboard.goto(f"/jobs/{job_id}")
    dashboard.page.evaluate("window.__sameDocument = true")
    start = _progress_of(dashboard, "#job-progress")
    later = _wait_progress_above(dashboard, "#job-progress", start)
    assert later > start
    assert dashboard.page.evaluate("window.__sameDocument === true"), "the job page reloaded"
    assert re.fullmatch(r"\d+ / 400", dashboard.page.inner_text("[data-live=epoch]"))
    assert dashboard.page.inner_text("[data-live=eta]") != "–"
    assert float(dashboard.page.inner_text("[data-live=images_per_s]")) > 0
    dashboard.screenshot("job-running")

    dashboard.page.once("dialog", lambda dialog: dialog.accept())
    with dashboard.page.expect_navigation():
        dashboard.page.click("#cancel-job")
    _expect()(dashboard.page.locator("#job-status")).to_have_text("cancelled", timeout=60_000)
    assert live.api("GET", f"/jobs/{job_id}")["status"] == "cancelled"
    assert dashboard.page.locator("#cancel-job").count() == 0
    dashboard.screenshot("job-cancelled")


def test_sign_in_refuses_a_bad_key_and_opens_the_jobs_page(
    dashboard: Dashboard, live: LiveService
) -> None:
    dashboard.goto("/jobs")
    assert "/sign-in" in dashboard.page.url  # not signed in: sent to the form
    dashboard.expect_error_page("/sign-in", 401)
    dashboard.page.fill("input[name=api_key]", "fpk_00000000_not-a-real-key")
    dashboard.page.click("button[type=submit]")
    _expect()(dashboard.page.locator("[role=alert]")).to_contain_text("Unknown API key")
    dashboard.screenshot("sign-in-refused")

    dashboard.sign_in(live.admin_key)
    assert dashboard.page.url.endswith("/jobs")
    _expect()(dashboard.page.locator("header .who")).to_contain_text("admin")
    _expect()(dashboard.page.locator(f"tr[data-job-id='{live.finished_job_id}']")).to_be_visible()
    cookie = next(c for c in dashboard.page.context.cookies() if c["name"] == "fopro_session")
    assert cookie["httpOnly"]
    assert cookie["sameSite"] == "Strict"
    assert live.admin_key not in cookie["value"]
    dashboard.screenshot("jobs")

    dashboard.goto("/teachers")
    teachers = live.api("GET", "/teachers")
    zoo = dashboard.page.locator("#zoo tbody tr")
    assert zoo.count() == len(teachers["zoo"])
    missing = next(t for t in teachers["zoo"] if not t["weights_available"])
    row = dashboard.page.locator(f"#zoo tr[data-teacher='{missing['name']}']")
    _expect()(row).to_contain_text(missing["expected_paths"][0])  # where to put the weights
    dashboard.screenshot("teachers")

    with dashboard.page.expect_navigation():
        dashboard.page.click("form[action='/sign-out'] button")
    dashboard.goto("/jobs")
    assert "/sign-in" in dashboard.page.url


def test_a_dataset_uploaded_from_the_form_becomes_ready(
    dashboard: Dashboard, live: LiveService, tmp_path: Path
) -> None:
    sample = sample_dataset(classes=5, head=16, imbalance=8.0, seed=3)
    archive = write_archive(tmp_path / "derm-demo.zip", sample.members, "zip")
    dashboard.sign_in(live.admin_key, "/datasets")
    page = dashboard.page
    page.fill("#upload-form input[name=name]", "derm-demo")
    page.set_input_files("#upload-form input[name=file]", str(archive))
    # Record what the progress bar shows while uploading, where it survives the navigation to
    # the dataset's page that follows.
    page.evaluate(
        """() => {
          const bar = document.getElementById("upload-progress");
          new MutationObserver(() => {
            const seen = JSON.parse(sessionStorage.getItem("progress") || "[]");
            sessionStorage.setItem("progress", JSON.stringify([...seen, Number(bar.value)]));
          }).observe(bar, { attributes: true, attributeFilter: ["value"] });
        }"""
    )
    with page.expect_navigation(url=re.compile(r".*/datasets/ds_[0-9a-f]+$"), timeout=60_000):
        page.click("#upload-form button[type=submit]")
    shown = page.evaluate("JSON.parse(sessionStorage.getItem('progress') || '[]')")
    assert shown, "the upload's progress bar never moved"
    assert shown[-1] == 100, f"the upload's progress bar showed {shown}"

    dataset_id = page.url.rsplit("/", 1)[1]
    _expect()(page.locator("#dataset-status-badge")).to_have_text("ready", timeout=90_000)
    dataset = live.api("GET", f"/datasets/{dataset_id}")
    assert dataset["name"] == "derm-demo"
    assert dataset["num_images"] == sample.num_images
    assert page.inner_text("#imbalance-ratio").startswith(str(dataset["stats"]["imbalance_ratio"]))
    state = page.evaluate(CANVAS_STATE, "class-counts-chart")
    assert state["type"] == "logarithmic"
    assert state["painted"] > 0.01 * state["total"], state
    assert state["points"] == [len(sample.classes)] * 3  # train, val, test bars per class
    dashboard.screenshot("dataset-ready")


def test_a_revoked_key_ends_its_session_at_once(dashboard: Dashboard, live: LiveService) -> None:
    key_id, member_key = live.new_key(Role.member)
    dashboard.sign_in(member_key)
    assert dashboard.page.url.endswith("/jobs")
    live.api("DELETE", f"/keys/{key_id}")
    dashboard.goto("/jobs")
    assert "/sign-in" in dashboard.page.url


def test_the_new_job_form_submits_a_job_with_the_engine_defaults(
    dashboard: Dashboard, live: LiveService
) -> None:
    dashboard.sign_in(live.admin_key, f"/jobs/new?dataset_id={live.dataset_id}")
    page = dashboard.page
    assert page.input_value("select[name=dataset_id]") == live.dataset_id
    assert page.input_value("input[name=epochs]") == "30"  # HyperParams' default
    assert "Passes over the train split." in page.inner_text("form#new-job")
    dashboard.screenshot("new-job")
    page.select_option("select[name=teacher]", "resnet18")
    page.select_option("select[name=student]", "resnet18")
    page.check("input[name=method][value=bsm]")
    for name, value in {"epochs": "1", "image_size": "30", "batch_size": "8"}.items():
        page.fill(f"input[name={name}]", value)
    page.check("input[name=allow_random_weights]")
    dashboard.expect_error_page("/jobs/new", 422)
    with page.expect_navigation():
        page.click("form#new-job button[type=submit]")
    # 30 px is refused by the service's own rule, and the form keeps what was typed.
    _expect()(page.locator("#form-errors")).to_contain_text("multiple of 8")
    assert page.input_value("input[name=epochs]") == "1"
    page.fill("input[name=image_size]", "32")
    with page.expect_navigation():
        page.click("form#new-job button[type=submit]")
    job_id = page.url.rsplit("/", 1)[1]
    job = live.api("GET", f"/jobs/{job_id}")
    assert job["method"] == "bsm"
    assert job["params"]["epochs"] == 1
    assert job["params"]["lr"] == 3e-4  # untouched fields keep the paper's defaults
    live.api("POST", f"/jobs/{job_id}/cancel")


def test_a_finished_job_shows_curves_report_and_downloads(
    dashboard: Dashboard, live: LiveService, tmp_path: Path
) -> None:
    job = live.finished_job()
    dashboard.sign_in(live.admin_key, f"/jobs/{job['id']}")
    page = dashboard.page

    for chart in ("loss-chart", "accuracy-chart"):
        state = page.evaluate(CANVAS_STATE, chart)
        assert state["painted"] > 0.01 * state["total"], (chart, state)
        assert state["points"], (chart, state)
        assert all(n == 2 for n in state["points"]), (chart, state)

    report = job["metrics"]["report"]
    names = report["class_names"]
    cells = page.locator("#confusion-matrix tbody td")
    assert cells.count() == len(names) ** 2
    counts = [int(text) for text in cells.all_inner_texts()]
    assert counts == [n for row in report["confusion_matrix"] for n in row]
    backgrounds = cells.evaluate_all("cells => cells.map(c => getComputedStyle(c).backgroundColor)")
    for count, colour in zip(counts, backgrounds, strict=True):
        assert (colour == "rgb(255, 255, 255)") == (count == 0), (count, colour)

    rows = page.locator("#per-class tbody tr")
    assert rows.count() == len(names)
    few = report["shot_groups"]["few"]["classes"]
    assert page.locator("#per-class tr.few-shot").count() == len(few)
    groups = page.inner_text("#shot-groups")
    assert "many-shot" in groups
    assert "few-shot" in groups
    dashboard.screenshot("job-report")

    listed = {a["name"]: a for a in live.api("GET", f"/jobs/{job['id']}/artifacts")}
    name = "model_card.json" if "model_card.json" in listed else sorted(listed)[0]
    with page.expect_download() as download_info:
        page.click(f"a[data-artifact='{name}']")
    download = download_info.value
    saved = tmp_path / name
    download.save_as(saved)
    assert download.suggested_filename == name
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == listed[name]["sha256"]


def test_a_viewer_sees_no_write_buttons_and_posts_without_a_token_are_refused(
    dashboard_factory: Any, live: LiveService
) -> None:
    job = live.finished_job()
    _, viewer_key = live.new_key(Role.viewer)
    viewer = dashboard_factory()
    viewer.sign_in(viewer_key, f"/jobs/{job['id']}")
    _expect()(viewer.page.locator("header .who")).to_contain_text("viewer")
    for path in ("/jobs", f"/jobs/{job['id']}", "/datasets", f"/datasets/{live.dataset_id}"):
        viewer.goto(path)
        assert viewer.page.locator(WRITE_CONTROLS).count() == 0, path
        viewer.screenshot(path.strip("/").replace("/", "-"))
    viewer.expect_error_page("/jobs/new", 403)
    assert viewer.goto("/jobs/new").status == 403
    _expect()(viewer.page.locator("[role=alert]")).to_contain_text("needs a admin or member key")

    # A viewer's own valid token still cannot write: the role decides, as in the API.
    token = viewer.csrf_token()
    refused = viewer.page.request.post(
        f"{live.url}/jobs/{job['id']}/delete", form={"csrf_token": token}
    )
    assert refused.status == 403

    # A forged form post (no token, or another session's) from a signed-in admin: refused.
    admin = dashboard_factory()
    admin.sign_in(live.admin_key, f"/jobs/{job['id']}")
    for form in ({}, {"csrf_token": token}):
        forged = admin.page.request.post(
            f"{live.url}/jobs/{job['id']}/delete",
            form=form,
            headers={"Accept": "application/json"},
        )
        assert forged.status == 403
        assert forged.json()["error"]["code"] == "csrf_rejected"
    assert live.api("GET", f"/jobs/{job['id']}")["status"] == "succeeded"
    assert admin.page.locator("#delete-job").count() == 1  # an admin does see the buttons
