"""Team scoping in one place: every read of a team-owned row goes through these two functions."""

from __future__ import annotations

import functools
from typing import Any, Protocol, TypeVar

from sqlalchemy import Select, bindparam, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from app.core.errors import NotFound


class TeamOwned(Protocol):
    id: Any
    team_id: Any


T = TypeVar("T", bound=TeamOwned)


def scoped(model: type[T], team_id: str) -> Select[T]:
    """``SELECT model WHERE team_id = :team_id``: the only way to list a team's rows."""
    column: InstrumentedAttribute[str] = model.team_id
    return select(model).where(column == team_id)


@functools.cache
def _owned_statement(model: type[Any]) -> Select[Any]:
    """``SELECT model WHERE team_id = :team_id AND id = :object_id``, built once per model.

    SQLAlchemy memoises a statement's cache key on the statement object; a statement built per
    call recomputes it over every mapped column, which cost about as much as the query itself
    on SQLite (``bench.api_load``'s GET /v1/jobs/{id}; BENCHMARKS.md)."""
    return select(model).where(
        model.team_id == bindparam("team_id"), model.id == bindparam("object_id")
    )


def get_owned(session: Session, model: type[T], object_id: str, team_id: str, *, what: str) -> T:
    """The row with ``object_id`` if it belongs to ``team_id``; otherwise 404 (never 403, so
    another team's ids are indistinguishable from ids that do not exist)."""
    row: T | None = session.scalar(
        _owned_statement(model), {"team_id": team_id, "object_id": object_id}
    )
    if row is None:
        raise NotFound(f"No {what} with id {object_id!r} in your team.")
    return row


def team_object_key(team_id: str, *parts: str) -> str:
    """Object-store key under the team's prefix: ``teams/<team_id>/<parts...>``."""
    return "/".join(("teams", team_id, *parts))
