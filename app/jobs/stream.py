"""Server-Sent Events for one job: its events and progress as they happen, until it finishes.

The stream polls the database (about once a second) instead of subscribing to the broker, so it
works the same on SQLite and PostgreSQL and needs no extra moving part. Event ids are JobEvent
ids, so a reconnecting browser (``Last-Event-ID``) continues where it stopped. Each poll also
re-reads the caller's API key, so a revoked or expired key ends its streams within a poll.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from app.core.db import get_sessionmaker
from app.core.events import EventOut
from app.core.tenancy import scoped
from app.jobs.models import Job, JobEvent, JobStatus
from app.jobs.schemas import JobOut
from app.jobs.state import TERMINAL
from app.teams.service import key_works

POLL_SECONDS = 1.0
# Proxies drop idle connections; a comment line every so often keeps the stream open.
KEEPALIVE_SECONDS = 15.0
EVENTS_PER_POLL = 500


@dataclass(frozen=True)
class _Snapshot:
    job: JobOut | None
    events: list[EventOut]
    key_works: bool = True


def _read(job_id: str, team_id: str, after_id: int, key_id: str) -> _Snapshot:
    """The job (None if gone) and its next events, the job read first so a terminal status
    is never seen before the event that records it; nothing once ``key_id`` stopped working."""
    with get_sessionmaker()() as session:
        if not key_works(session, key_id):
            return _Snapshot(None, [], key_works=False)
        job = session.scalar(scoped(Job, team_id).where(Job.id == job_id))
        if job is None:
            return _Snapshot(None, [])
        events = session.scalars(
            select(JobEvent)
            .where(JobEvent.job_id == job_id, JobEvent.id > after_id)
            .order_by(JobEvent.id)
            .limit(EVENTS_PER_POLL)
        )
        return _Snapshot(JobOut.model_validate(job), [EventOut.model_validate(e) for e in events])


def sse(event: str, data: dict[str, Any], event_id: int | None = None) -> str:
    """One SSE message: ``id`` (optional), ``event`` name and a one-line JSON ``data``."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, default=str)}\n\n"


def _progress(job: JobOut) -> dict[str, Any]:
    return {
        "status": job.status.value,
        "phase": job.phase,
        "attempt": job.attempt,
        "progress": job.progress,
        "checkpoint_epoch": job.checkpoint_epoch,
        "checkpoint_step": job.checkpoint_step,
        "cancel_requested": job.cancel_requested,
    }


async def job_stream(
    job_id: str,
    team_id: str,
    *,
    key_id: str,
    after_id: int,
    is_disconnected: Callable[[], Awaitable[bool]],
) -> AsyncIterator[str]:
    """Yield ``job_event`` messages (with ids) for new events, a ``progress`` message whenever
    status/phase/progress change, and a final ``end`` message once the job is terminal, or at
    once when the key ``key_id`` is revoked or expires."""
    last_progress: dict[str, Any] | None = None
    idle = 0.0
    while True:
        snapshot = await run_in_threadpool(_read, job_id, team_id, after_id, key_id)
        if not snapshot.key_works:
            yield sse("end", {"status": None, "reason": "the API key was revoked or expired"})
            return
        if snapshot.job is None:
            yield sse("end", {"status": None, "reason": "job not found"})
            return
        sent = False
        for event in snapshot.events:
            yield sse("job_event", event.model_dump(mode="json"), event.id)
            after_id, sent = event.id, True
        progress = _progress(snapshot.job)
        if progress != last_progress:
            yield sse("progress", progress)
            last_progress, sent = progress, True
        caught_up = len(snapshot.events) < EVENTS_PER_POLL
        if caught_up and JobStatus(snapshot.job.status) in TERMINAL:
            yield sse("end", {"status": snapshot.job.status.value})
            return
        idle = 0.0 if sent else idle + POLL_SECONDS
        if idle >= KEEPALIVE_SECONDS:
            yield ": keep-alive\n\n"
            idle = 0.0
        if await is_disconnected():
            return
        if caught_up:
            await anyio.sleep(POLL_SECONDS)
