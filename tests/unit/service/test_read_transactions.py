"""``end_read_transaction`` gives back the connection of a transaction that only read, and
leaves one that wrote (flushed, executed, or still pending) to its owner."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import String, insert, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from app.core.db import end_read_transaction, make_engine


class _Base(DeclarativeBase):
    pass


class Note(_Base):
    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    body: Mapped[str] = mapped_column(String(20))


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    engine = make_engine(f"sqlite:///{tmp_path / 'notes.db'}")
    _Base.metadata.create_all(engine)
    with Session(engine) as setup:
        setup.add(Note(id=1, body="kept"))
        setup.commit()
    with sessionmaker(bind=engine, expire_on_commit=False)() as session:
        yield session
    engine.dispose()


def test_a_read_is_ended_and_what_it_loaded_stays_usable(session: Session) -> None:
    note = session.scalar(select(Note))
    assert session.in_transaction()
    end_read_transaction(session)
    assert not session.in_transaction()
    assert note is not None
    assert note.body == "kept"  # no reload, no new transaction
    assert not session.in_transaction()


@pytest.mark.parametrize("write", ["flushed", "executed", "pending", "raw sql"])
def test_a_transaction_that_wrote_is_left_to_its_owner(session: Session, write: str) -> None:
    session.scalar(select(Note))
    if write == "flushed":
        session.add(Note(id=2, body="flushed"))
        session.flush()
    elif write == "executed":
        session.execute(insert(Note).values(id=3, body="executed"))
    elif write == "pending":
        session.add(Note(id=4, body="pending"))
    else:
        session.execute(text("INSERT INTO notes (id, body) VALUES (5, 'raw')"))
    end_read_transaction(session)
    assert session.in_transaction()
    session.rollback()  # the owner's choice, still possible
    assert session.scalars(select(Note.id)).all() == [1]


def test_a_new_transaction_after_one_that_wrote_is_a_read_again(session: Session) -> None:
    session.add(Note(id=6, body="committed"))
    session.commit()
    session.scalar(select(Note))
    end_read_transaction(session)
    assert not session.in_transaction()
