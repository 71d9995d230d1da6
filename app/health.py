"""Liveness and readiness: is the process up, and can it reach the database, broker and store."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.core.db import get_engine
from app.core.queue import get_celery
from app.core.routing import ServiceRoute
from app.deps import StoreDep

router = APIRouter(tags=["health"], route_class=ServiceRoute)


def check_database() -> None:
    with get_engine().connect() as conn:
        conn.execute(text("SELECT 1"))


def check_broker() -> None:
    with get_celery().connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=3)


def _run(check: Callable[[], None]) -> str | None:
    try:
        check()
    except Exception as exc:  # readiness reports any failure by name instead of crashing
        return f"{type(exc).__name__}: {exc}"[:500]
    return None


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is alive (no dependencies checked)."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(store: StoreDep) -> JSONResponse:
    """200 when the database, broker and object store all answer; 503 naming each that fails."""
    results: dict[str, str | None] = {
        "database": _run(check_database),
        "broker": _run(check_broker),
        "store": _run(store.ping),
    }
    failed = {name: reason for name, reason in results.items() if reason is not None}
    body: dict[str, Any] = {
        "status": "ready" if not failed else "unavailable",
        "checks": {
            name: ("ok" if reason is None else "failed") for name, reason in results.items()
        },
    }
    if failed:
        body["error"] = {
            "code": "unavailable",
            "message": "Not ready: " + ", ".join(f"{n} ({r})" for n, r in failed.items()),
        }
    return JSONResponse(body, status_code=200 if not failed else 503)
