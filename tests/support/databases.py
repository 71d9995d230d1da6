"""Throw-away PostgreSQL databases and Redis DB numbers: parallel or repeated runs never collide."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

PG_ADMIN_URL = os.environ.get(
    "FOPRO_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_HOST_URL = os.environ.get("FOPRO_TEST_REDIS", "redis://127.0.0.1:6379")


@contextmanager
def temporary_postgres_database() -> Iterator[str]:
    """Create ``fopro_test_<random>`` and yield its SQLAlchemy URL; drop it afterwards."""
    import psycopg

    name = f"fopro_test_{secrets.token_hex(6)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def temporary_redis_db() -> Iterator[str]:
    """Claim a free Redis DB number (1..15) with a lock key in DB 0; flush and release it after."""
    import redis

    admin = redis.Redis.from_url(f"{REDIS_HOST_URL}/0")
    token = secrets.token_hex(8)
    for number in range(1, 16):
        if admin.set(f"fopro-test-lock:{number}", token, nx=True, ex=3600):
            break
    else:
        raise RuntimeError("all Redis test DB numbers 1..15 are in use; wait or flush the locks")
    url = f"{REDIS_HOST_URL}/{number}"
    db = redis.Redis.from_url(url)
    db.flushdb()
    try:
        yield url
    finally:
        db.flushdb()
        if admin.get(f"fopro-test-lock:{number}") == token.encode():
            admin.delete(f"fopro-test-lock:{number}")
