"""The routes dashboards poll do their blocking work in one thread hop: each hop through the
threadpool cost about 0.5 ms on 2 busy cores (``bench.api_load``), and a sync route with a sync
key lookup took six. Counted by wrapping ``anyio.to_thread.run_sync``, which every hop goes
through (Starlette's ``run_in_threadpool`` and FastAPI's sync dependencies alike)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import anyio.to_thread
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

import app.deps
from app.deps import in_one_hop
from tests.unit.jobs.conftest import Team, add_job
from tests.unit.jobs.ready_dataset import auth, make_team_key


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    original = anyio.to_thread.run_sync

    async def counting(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        seen.append(getattr(func, "__qualname__", repr(func)))
        return await original(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counting)
    return seen


@pytest.mark.parametrize("route", ["one", "page"])
def test_a_polled_job_route_takes_one_thread_hop(
    client: TestClient, session: Session, team: Team, hops: list[str], route: str
) -> None:
    job = add_job(session, team)
    path = f"/v1/jobs/{job.id}" if route == "one" else "/v1/jobs?limit=50"
    client.get(path, headers=auth(team.viewer))  # warm: first-use caches
    hops.clear()
    response = client.get(path, headers=auth(team.viewer))
    assert response.status_code == 200
    body = response.json()
    assert (body["id"] if route == "one" else body["items"][0]["id"]) == job.id
    assert "RateLimit-Limit" in response.headers  # the one hop still counts the request
    assert len(hops) == 1, hops


def test_the_one_hop_routes_still_scope_and_authenticate(
    client: TestClient, session: Session, team: Team
) -> None:
    job = add_job(session, team)
    _, other = make_team_key(session)
    assert client.get(f"/v1/jobs/{job.id}", headers=auth(other)).status_code == 404
    assert client.get("/v1/jobs", headers=auth(other)).json()["total"] == 0
    unknown = "fpk_00000000_" + "x" * 43
    for path in (f"/v1/jobs/{job.id}", "/v1/jobs"):
        assert client.get(path).status_code == 401
        assert client.get(path, headers=auth(unknown)).status_code == 401


def test_a_sync_route_no_longer_pays_for_the_sessions_start_or_the_actor(
    client: TestClient, team: Team, hops: list[str]
) -> None:
    """Every route: the session starts on the event loop, the key lookup and its rate limit
    share one hop, and the audit actor is built on the loop."""
    client.get("/v1/me", headers=auth(team.viewer))
    hops.clear()
    assert client.get("/v1/me", headers=auth(team.viewer)).status_code == 200
    names = " ".join(hops)
    assert "_GeneratorContextManager" not in names  # no sync generator dependency
    assert "get_actor" not in names
    # The key (and its rate limit), the route, and its answer's validation. It was six; the
    # session's end took a fourth while a read left its transaction open (``ServiceRoute``).
    assert len(hops) == 3, hops


def test_the_one_hop_reads_run_on_at_most_read_threads_threads_at_once(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ``client`` configures the database the sessions open on.
    settings = app.deps.get_settings().model_copy(update={"read_threads": 2})
    monkeypatch.setattr(app.deps, "get_settings", lambda: settings)
    running, most, lock = 0, 0, threading.Lock()

    def work(session: Session) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return threading.get_ident()

    async def many() -> list[int]:
        return await asyncio.gather(*(in_one_hop(work) for _ in range(8)))

    threads = asyncio.run(many())
    assert most == 2
    assert len(threads) == 8
