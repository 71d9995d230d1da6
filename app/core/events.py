"""Event logs of a lifecycle (jobs, datasets): one append-only row per thing that happened.

The columns, the HTTP shape and the paged read are the same for every log; a domain adds only
the foreign key to what the events are about (``job_id``, ``dataset_id``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Query
from pydantic import BaseModel, ConfigDict
from sqlalchemy import BigInteger, Integer, Select, String, Text, func, select
from sqlalchemy.orm import InstrumentedAttribute, Mapped, Session, mapped_column

from app.core.db import utcnow
from app.core.pagination import MAX_ROW_ID, MaxOffset, Page


class EventColumns:
    """Mixin for an events table: ``id`` orders the log (and is what ``after_id`` names)."""

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    kind: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class EventOut(BaseModel):
    """One entry of an event log; ``data`` holds the details (e.g. ``from``/``to`` of a
    state change)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str
    message: str
    data: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class EventWindow:
    """Which events a listing returns: after ``after_id`` (the last one a client saw), paged."""

    after_id: int | None = None
    limit: int = 100
    offset: int = 0


def event_window(
    after_id: Annotated[int | None, Query(ge=0, le=MAX_ROW_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: MaxOffset = 0,
) -> EventWindow:
    """The ``?after_id=&limit=&offset=`` of an events route (a FastAPI dependency)."""
    return EventWindow(after_id, limit, offset)


EventWindowDep = Annotated[EventWindow, Depends(event_window)]


def read_events(
    session: Session, owner: InstrumentedAttribute[str], owner_id: str, window: EventWindow
) -> Page[EventOut]:
    """The events whose ``owner`` column (e.g. ``JobEvent.job_id``) is ``owner_id``, oldest
    first, within ``window``."""
    model = owner.class_
    query: Select[Any] = select(model).where(owner == owner_id)
    if window.after_id is not None:
        query = query.where(model.id > window.after_id)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(model.id).limit(window.limit).offset(window.offset))
    return Page[EventOut](
        items=[EventOut.model_validate(r) for r in rows],
        total=total,
        limit=window.limit,
        offset=window.offset,
    )
