"""Point the service's process-wide singletons at a test configuration."""

from __future__ import annotations

from pathlib import Path

import pytest


def reset_service_caches() -> None:
    """Forget cached settings, engine, Celery client and object stores (read env again)."""
    from app import deps
    from app.core import config, db, queue

    config.get_settings.cache_clear()
    if db.get_engine.cache_info().currsize:
        db.get_engine().dispose()
    db.get_engine.cache_clear()
    db.get_sessionmaker.cache_clear()
    queue.get_celery.cache_clear()
    deps._store_cache.clear()


def configure_service(monkeypatch: pytest.MonkeyPatch, data_dir: Path, **env: str) -> None:
    """Set ``FOPRO_*`` variables (data dir + overrides, names without prefix); reset caches."""
    monkeypatch.setenv("FOPRO_ENV", "test")
    monkeypatch.setenv("FOPRO_DATA_DIR", str(data_dir))
    for key, value in env.items():
        monkeypatch.setenv(f"FOPRO_{key.upper()}", value)
    reset_service_caches()
