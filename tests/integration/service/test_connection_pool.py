"""More requests at once than one API process has database connections and threadpool threads:
they wait their turn, and none waits for the pool's timeout. A request that kept its
connection between two thread hops deadlocked the process under a burst (bench.api_load)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import anyio.to_thread
import httpx
import pytest
from sqlalchemy.orm import Session

from app.core.config import get_settings
from app.core.db import get_engine
from app.core.migrate import upgrade
from app.main import create_app
from app.teams.models import Role
from app.teams.service import create_api_key, create_team
from tests.support.service import configure_service, reset_service_caches

pytestmark = pytest.mark.integration

THREADS = 2  # anyio's default is 40 per process; the deadlock needs them all waiting
REQUESTS = 6


def test_a_burst_beyond_the_pool_and_the_threads_is_served_without_waiting_for_a_timeout(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure_service(
        monkeypatch,
        tmp_path / "fopro",
        database_url=pg_url,
        db_pool_size="1",
        db_max_overflow="0",
        key_cache_seconds="0",  # every request reads its key: the hop that held a connection
    )
    upgrade(pg_url)
    with Session(get_engine()) as session:
        team = create_team(session, f"pool-{time.monotonic_ns()}")
        _, key = create_api_key(session, team, Role.admin, get_settings().secret_key)
        session.commit()
    app = create_app()

    async def burst() -> list[httpx.Response]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = THREADS
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            calls = [
                client.get("/v1/me", headers={"Authorization": f"Bearer {key}"})
                for _ in range(REQUESTS)
            ]
            # The pool's own timeout is 30 s: a deadlock would only end there.
            return await asyncio.wait_for(asyncio.gather(*calls), timeout=20)

    try:
        started = time.monotonic()
        responses = asyncio.run(burst())
        assert [r.status_code for r in responses] == [200] * REQUESTS, responses[0].text
        assert time.monotonic() - started < 20
    finally:
        reset_service_caches()
