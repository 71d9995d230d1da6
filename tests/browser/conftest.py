"""A live embedded service (``fopro serve`` + a cpu and a gpu ``fopro worker``) and Chromium
pages that sign in to its dashboard.

Debian's ``/usr/bin/chromium`` drives the pages (Playwright's own browser download does not work
here; ``scripts/ensure-browser.sh`` installs it). Every page collects console errors and uncaught
exceptions, and a test fails if any appeared; a screenshot of each page is kept under
``$FOPRO_TEST_ARTIFACTS`` (default ``tests/browser/artifacts/``).
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.db import make_engine
from app.core.migrate import upgrade
from app.core.storage import open_object_store
from app.teams.models import Role
from app.teams.service import create_api_key, create_team
from tests.conftest import free_port
from tests.support.processes import ServiceProcess
from tests.unit.jobs.ready_dataset import put_ready_dataset

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
VIEWPORT = {"width": 1366, "height": 768}
ARTIFACTS = Path(os.environ.get("FOPRO_TEST_ARTIFACTS", Path(__file__).parent / "artifacts"))
TERMINAL = {"succeeded", "failed", "cancelled"}
# Tiny but real: random-weight resnet18 teacher and student on 32x32 textures (test-only switch).
TEST_PARAMS: dict[str, Any] = {
    "batch_size": 8,
    "image_size": 32,
    "seed": 1,
    "allow_random_weights": True,
}


@dataclass
class LiveService:
    """A running embedded deployment and a team with an admin key and a ready dataset."""

    url: str
    team_id: str
    admin_key: str
    dataset_id: str
    processes: list[ServiceProcess]
    long_job_id: str = ""
    finished_job_id: str = ""
    _client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self._client = httpx.Client(base_url=self.url, timeout=30)

    def api(self, method: str, path: str, key: str | None = None, **kwargs: Any) -> Any:
        """Call ``/v1{path}`` with ``key`` (default the admin's); the JSON body of a 2xx."""
        response = self._client.request(
            method,
            f"/v1{path}",
            headers={"Authorization": f"Bearer {key or self.admin_key}"},
            **kwargs,
        )
        assert response.is_success, f"{method} {path}: {response.status_code} {response.text}"
        return response.json() if response.content else None

    def submit_job(self, epochs: int, method: str = "ekd") -> str:
        body = {
            "dataset_id": self.dataset_id,
            "teacher": "resnet18",
            "student": "resnet18",
            "method": method,
            "params": {**TEST_PARAMS, "epochs": epochs},
        }
        return str(self.api("POST", "/jobs", json=body)["id"])

    def finished_job(self) -> dict[str, Any]:
        """The short job once it succeeded. The long job ahead of it on the one gpu worker is
        cancelled first if it still runs (when the test that watches it was not selected)."""
        if self.api("GET", f"/jobs/{self.long_job_id}")["status"] in ("queued", "running"):
            self.api("POST", f"/jobs/{self.long_job_id}/cancel")
        return self.wait_job(
            self.finished_job_id, lambda j: j["status"] == "succeeded", "succeeded", timeout_s=150
        )

    def new_key(self, role: Role) -> tuple[str, str]:
        """A new key of ``role`` for the team (through the API); returns (id, plaintext)."""
        created = self.api("POST", "/keys", json={"role": role.value, "label": "browser test"})
        return created["id"], created["key"]

    def wait_job(
        self, job_id: str, done: Callable[[dict[str, Any]], bool], what: str, timeout_s: float
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        job: dict[str, Any] = {}
        while time.monotonic() < deadline:
            job = self.api("GET", f"/jobs/{job_id}")
            if done(job):
                return job
            if job["status"] in TERMINAL:
                break
            time.sleep(0.5)
        pytest.fail(f"job {job_id} never {what}: {job}\n{self.logs()}")

    def logs(self) -> str:
        return "\n".join(p.log_tail() for p in self.processes)


def _wait_ready(url: str, api: ServiceProcess, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if api.process.poll() is not None:
            pytest.fail(f"fopro serve exited early:\n{api.log_tail()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    pytest.fail(f"fopro serve not ready after {timeout_s} s:\n{api.log_tail()}")


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    """The embedded default with nothing else: SQLite, SQLite broker, local objects."""
    root = tmp_path_factory.mktemp("dashboard")
    env = {"FOPRO_ENV": "test", "FOPRO_DATA_DIR": str(root / "fopro")}
    settings = Settings(data_dir=root / "fopro", env="test")
    settings.ensure_dirs()
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    with ExitStack() as stack, Session(engine, expire_on_commit=False) as session:
        stack.callback(engine.dispose)
        team = create_team(session, f"radiology-{secrets.token_hex(3)}")
        _, admin_key = create_api_key(session, team, Role.admin, settings.secret_key)
        session.commit()
        # 4 classes x (4 train, 1 val, 1 test): two training steps per epoch at batch 8.
        dataset = put_ready_dataset(session, open_object_store(settings), team.id, per_class=6)
        port = free_port()
        processes = []
        for name, args in {
            "api": ["serve", "--host", "127.0.0.1", "--port", str(port)],
            # Separate queues, so an upload is validated while a job trains.
            "worker-cpu": ["worker", "--queues", "cpu", "--name", f"cpu-{port}@localhost"],
            "worker-gpu": ["worker", "--queues", "gpu", "--name", f"gpu-{port}@localhost"],
        }.items():
            process = ServiceProcess.start(args, env, root / f"{name}.log")
            stack.callback(process.stop)
            processes.append(process)
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, processes[0])
        service = LiveService(url, team.id, admin_key, dataset.id, processes)
        stack.callback(service._client.close)
        # The one gpu worker trains these in turn while the browser starts and the tests run:
        # a long job to watch and cancel, then a short one whose report the later tests read.
        service.long_job_id = service.submit_job(epochs=400, method="ce")
        service.finished_job_id = service.submit_job(epochs=2)
        yield service


# Module scope, not session: Playwright's sync API keeps an asyncio loop running in the main
# thread while it is open, and the rest of the suite (anyio.run in the upload-pipe tests) must
# not find one.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: run scripts/ensure-browser.sh (apt-get install chromium)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@dataclass
class Dashboard:
    """One browser context (its own cookies) on the live dashboard, with its console errors."""

    live: LiveService
    page: Any
    name: str
    errors: list[str] = field(default_factory=list)
    expected_error_pages: set[tuple[str, int]] = field(default_factory=set)
    shots: int = 0

    def expect_error_page(self, path: str, status: int) -> None:
        """Declare that the test shows a page answered with ``status`` at ``path``: Chromium
        logs every 4xx document as a console error, and that one is no fault of the page."""
        self.expected_error_pages.add((path, status))

    def on_console(self, message: Any) -> None:
        if message.type != "error":
            return
        failed = re.fullmatch(
            r"Failed to load resource: the server responded with a status of (\d+) .*",
            message.text,
        )
        where = urlsplit(message.location.get("url", ""))
        if failed and (where.path, int(failed.group(1))) in self.expected_error_pages:
            return
        self.errors.append(f"console: {message.text} ({message.location})")

    def goto(self, path: str) -> Any:
        return self.page.goto(f"{self.live.url}{path}")

    def sign_in(self, key: str, next_path: str = "/jobs") -> None:
        self.goto(f"/sign-in?next={next_path}")
        self.page.fill("input[name=api_key]", key)
        with self.page.expect_navigation():
            self.page.click("button[type=submit]")

    def screenshot(self, label: str) -> Path:
        """Keep a full-page screenshot of what the page shows now."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.shots += 1
        path = ARTIFACTS / f"{self.name}-{self.shots:02d}-{label}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def csrf_token(self) -> str:
        """The CSRF token the current page was rendered with (hidden in its sign-out form)."""
        return str(
            self.page.get_attribute("form[action='/sign-out'] input[name=csrf_token]", "value")
        )


@pytest.fixture
def dashboard_factory(
    live: LiveService, browser: Any, request: pytest.FixtureRequest
) -> Iterator[Callable[[], Dashboard]]:
    """New signed-out dashboards (separate cookie jars); each fails the test on console errors."""
    opened: list[tuple[Any, Dashboard]] = []
    test_name = re.sub(r"[^A-Za-z0-9_-]", "_", request.node.name)

    def open_dashboard() -> Dashboard:
        context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
        context.set_default_timeout(30_000)
        page = context.new_page()
        dashboard = Dashboard(live, page, f"{test_name}-{len(opened)}")
        page.on("console", dashboard.on_console)
        page.on("pageerror", lambda exc: dashboard.errors.append(f"page error: {exc}"))
        opened.append((context, dashboard))
        return dashboard

    yield open_dashboard
    errors = [e for _, d in opened for e in d.errors]
    for context, _ in opened:
        context.close()
    assert not errors, "the dashboard logged errors in the browser:\n" + "\n".join(errors)


@pytest.fixture
def dashboard(dashboard_factory: Callable[[], Dashboard]) -> Dashboard:
    return dashboard_factory()
