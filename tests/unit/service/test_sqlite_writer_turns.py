"""A process's writers to a SQLite file wait for each other on a lock of the process, not in
SQLite's busy handler (which lets a long waiter be overtaken, and leaves the file idle while it
sleeps); the turn comes back however the writing transaction ends."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import OperationalError

import app.core.db
from app.core.db import make_engine

HOLD_S = 0.6


@pytest.fixture
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    # A turn that is never given back fails the waiter in 3 s rather than 30.
    monkeypatch.setattr(app.core.db, "SQLITE_WRITER_WAIT_S", 3.0)
    made = make_engine(f"sqlite:///{tmp_path / 'turns.db'}")
    with made.begin() as conn:
        conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
    yield made
    made.dispose()


def write_in_thread(engine: Engine, value: str, busy_ms: int = 100) -> Callable[[], float]:
    """Start a thread writing ``value`` in a transaction whose SQLite busy timeout is
    ``busy_ms``; returns a join that gives the seconds the write took (raising its error)."""
    outcome: dict[str, object] = {}

    def run() -> None:
        start = time.monotonic()
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql(f"PRAGMA busy_timeout={busy_ms}")
                conn.execute(text("INSERT INTO t (v) VALUES (:v)"), {"v": value})
                conn.commit()
                conn.exec_driver_sql("PRAGMA busy_timeout=30000")
        except Exception as exc:  # handed to the test's thread
            outcome["error"] = exc
        outcome["took"] = time.monotonic() - start

    thread = threading.Thread(target=run)
    thread.start()

    def join() -> float:
        thread.join(10)
        assert not thread.is_alive()
        if "error" in outcome:
            raise outcome["error"]  # type: ignore[misc]
        return float(outcome["took"])  # type: ignore[arg-type]

    return join


def held_write(conn: Connection) -> None:
    conn.execute(text("INSERT INTO t (v) VALUES ('held')"))


def test_a_second_writer_waits_for_its_turn_not_in_the_busy_handler(engine: Engine) -> None:
    with engine.connect() as first:
        held_write(first)
        # SQLite alone would fail this writer after its 100 ms busy timeout: the file is locked
        # for HOLD_S. Waiting on the process's turn, it writes as soon as the first commits.
        join = write_in_thread(engine, "second")
        time.sleep(HOLD_S)
        first.commit()
    assert join() >= HOLD_S - 0.05
    with engine.connect() as conn:
        assert conn.execute(text("SELECT v FROM t ORDER BY id")).scalars().all() == [
            "held",
            "second",
        ]


@pytest.mark.parametrize("ending", ["rollback", "returned to the pool", "invalidated"])
def test_the_turn_comes_back_however_the_transaction_ends(engine: Engine, ending: str) -> None:
    first = engine.connect()
    held_write(first)
    join = write_in_thread(engine, "next", busy_ms=2000)
    time.sleep(0.2)
    if ending == "rollback":
        first.rollback()
        first.close()
    elif ending == "returned to the pool":
        first.close()  # the pool's reset rolls it back
    else:
        first.invalidate()
        first.close()
    assert join() < 2.5  # not the 3 s wait for a turn that never came back
    with engine.connect() as conn:
        assert conn.execute(text("SELECT v FROM t")).scalars().all() == ["next"]


def test_reads_and_later_statements_of_the_same_transaction_take_no_turn(engine: Engine) -> None:
    with engine.connect() as first:
        held_write(first)
        held_write(first)  # its own second write does not wait for itself
        with engine.connect() as reader:  # WAL: a reader is not blocked by the writer
            assert reader.execute(text("SELECT count(*) FROM t")).scalar() == 0
        first.commit()


def test_a_turn_never_given_back_fails_the_waiter_clearly(engine: Engine) -> None:
    first = engine.connect()
    held_write(first)
    join = write_in_thread(engine, "stuck", busy_ms=30000)
    with pytest.raises(OperationalError, match="database is locked"):
        join()
    first.rollback()
    first.close()
