"""Database engine, sessions and the declarative base shared by every domain's models."""

from __future__ import annotations

import secrets
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import JSON, Connection, DateTime, Engine, MetaData, create_engine, event
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.orm import (
    DeclarativeBase,
    ORMExecuteState,
    Session,
    SessionTransaction,
    sessionmaker,
)
from sqlalchemy.types import TypeDecorator

from app.core.config import get_settings

# Stable constraint names so Alembic migrations are identical on PostgreSQL and SQLite.
# Threads that may query at once in one process: anyio's default threadpool (40, where FastAPI
# runs sync routes and dependencies) and the event loop's own.
SQLITE_POOL_SIZE = 41

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    """A prefixed random id such as ``job_3k9x...`` (prefix says what it is; 80 random bits)."""
    return f"{prefix}_{secrets.token_hex(10)}"


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on every backend (SQLite drops the zone; we restore it)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; use datetime.now(UTC)")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}  # noqa: RUF012


def make_engine(url: str, *, pool_size: int = 5, max_overflow: int = 10) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout, enforced foreign keys and a pool of
    ``SQLITE_POOL_SIZE`` kept connections (``pool_size`` is for servers); a server
    database a pool of ``pool_size`` (+ ``max_overflow``) pre-pinged connections."""
    if url.startswith("sqlite"):
        pooling: dict[str, Any] = {}
        if make_url(url).database not in (None, "", ":memory:"):
            # Keep a connection for every thread that may run a query at once. SQLAlchemy's
            # default for a file (5 + 10 overflow) closes each overflow connection on return, so
            # under 20 concurrent requests most of them opened a connection and ran the pragmas
            # below: a third of GET /v1/jobs/{id}'s time (py-spy, BENCHMARKS.md). A SQLite
            # connection is a file handle, not a server's process.
            pooling = {"pool_size": SQLITE_POOL_SIZE, "max_overflow": SQLITE_POOL_SIZE}
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **pooling
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        _writers_take_turns(engine)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=pool_size, max_overflow=max_overflow)


# What makes Python's sqlite3 open a write transaction (its legacy transaction control).
_SQLITE_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")
SQLITE_WRITER_WAIT_S = 30.0  # as long as the busy timeout


def _writers_take_turns(engine: Engine) -> None:
    """Let this process's writers to a SQLite file take the database's one write lock in turn.

    SQLite's busy handler polls with sleeps that grow to 100 ms, so a writer that has waited long
    polls least often and is overtaken by newcomers: under 50 concurrent job submits the median
    waited 0.3 s and the slowest 3.6-5.6 s, and the file sat unlocked while sleepers slept
    (``bench.api_load``, BENCHMARKS.md). Here a transaction's first write first takes a lock of
    this process, whose waiters block without polling and are woken as soon as it is free; it
    is given back once that connection's transaction has ended (after the commit or rollback
    returns: given back before, the next writer found the file still locked and slept in the
    busy handler), or with the connection. Writers of other processes (a second API worker,
    job workers) still meet it through the busy handler, one per process at a time.
    """
    turn = threading.Lock()
    holders: set[int] = set()  # id() of the sqlite3 connections whose transaction has the turn

    def _end_turn(dbapi_connection: Any) -> None:
        raw = getattr(dbapi_connection, "dbapi_connection", dbapi_connection)  # or a pool proxy
        if id(raw) in holders:
            holders.discard(id(raw))
            turn.release()

    @event.listens_for(engine, "before_cursor_execute")
    def _wait_for_turn(_conn: Connection, cursor: Any, statement: str, *_args: Any) -> None:
        raw = cursor.connection
        if id(raw) in holders or not statement.lstrip()[:7].upper().startswith(_SQLITE_WRITES):
            return
        if not turn.acquire(timeout=SQLITE_WRITER_WAIT_S):
            raise sqlite3.OperationalError("database is locked (waited for this process's writers)")
        holders.add(id(raw))

    dialect: Any = engine.dialect  # this engine's own instance
    commit, rollback = dialect.do_commit, dialect.do_rollback

    def _do_commit(dbapi_connection: Any) -> None:
        try:
            commit(dbapi_connection)
        finally:
            _end_turn(dbapi_connection)

    def _do_rollback(dbapi_connection: Any) -> None:
        try:
            rollback(dbapi_connection)
        finally:
            _end_turn(dbapi_connection)

    dialect.do_commit, dialect.do_rollback = _do_commit, _do_rollback

    # Or with the connection itself, when it is invalidated or closed.
    @event.listens_for(engine.pool, "invalidate")
    def _invalidated(dbapi_connection: Any, _record: Any, _exc: Any) -> None:
        _end_turn(dbapi_connection)

    @event.listens_for(engine.pool, "soft_invalidate")
    def _soft_invalidated(dbapi_connection: Any, _record: Any, _exc: Any) -> None:
        _end_turn(dbapi_connection)

    @event.listens_for(engine.pool, "close")
    def _closed(dbapi_connection: Any, _record: Any) -> None:
        _end_turn(dbapi_connection)


@lru_cache
def get_engine() -> Engine:
    """The process-wide engine for the configured database."""
    settings = get_settings()
    if settings.uses_sqlite:
        settings.ensure_dirs()
    return make_engine(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
    )


@lru_cache
def get_sessionmaker() -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(), expire_on_commit=False)


@contextmanager
def session_scope() -> Iterator[Session]:
    """A session that commits on success and rolls back on error (workers, CLI)."""
    session = get_sessionmaker()()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


# Set in ``Session.info`` while the session's transaction has written (or may have: any
# statement that is not a SELECT), so ``end_read_transaction`` leaves it to its owner.
_WROTE = "fopro_wrote"


@event.listens_for(Session, "after_flush")
def _note_flush(session: Session, _context: Any) -> None:
    session.info[_WROTE] = True


@event.listens_for(Session, "do_orm_execute")
def _note_statement(state: ORMExecuteState) -> None:
    if not state.is_select:
        state.session.info[_WROTE] = True


@event.listens_for(Session, "after_transaction_end")
def _forget_writes(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session.info.pop(_WROTE, None)


def end_read_transaction(session: Session) -> None:
    """Give the connection of ``session``'s transaction back to the pool if the transaction
    only read: a commit, which writes nothing and leaves loaded objects usable
    (``expire_on_commit=False``). A transaction that wrote, or holds unflushed changes, is left
    as it is, for its owner to commit or roll back."""
    if not session.in_transaction() or session.info.get(_WROTE):
        return
    if session.new or session.dirty or session.deleted:
        return
    session.commit()
