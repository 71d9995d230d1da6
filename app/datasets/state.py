"""The dataset state machine, in one place.

``uploading → validating → ready | invalid``; any live dataset (``uploading`` included: a direct
upload deleted, or abandoned and expired) ``→ deleting → deleted``, where ``deleted`` is the
record kept for finished jobs trained on it (a dataset no job refers to loses its row instead).
Every transition is one guarded UPDATE (``WHERE id = :id AND status = :from``) plus one
``DatasetEvent`` row, committed together: a validation finishing and a delete racing it can
never both win, because the second UPDATE matches no row.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from app.core.db import utcnow
from app.core.lifecycle import check_allowed
from app.datasets.models import Dataset, DatasetEvent, DatasetStatus

ALLOWED: Mapping[DatasetStatus, frozenset[DatasetStatus]] = {
    DatasetStatus.uploading: frozenset({DatasetStatus.validating, DatasetStatus.deleting}),
    DatasetStatus.validating: frozenset(
        {DatasetStatus.ready, DatasetStatus.invalid, DatasetStatus.deleting}
    ),
    DatasetStatus.ready: frozenset({DatasetStatus.deleting}),
    DatasetStatus.invalid: frozenset({DatasetStatus.deleting}),
    DatasetStatus.deleting: frozenset({DatasetStatus.deleted}),
    DatasetStatus.deleted: frozenset(),
}


class EventKind(StrEnum):
    """What a ``DatasetEvent`` records: the row's creation, or a change of status."""

    created = "created"
    state = "state"


def check_transition(source: DatasetStatus | str, target: DatasetStatus | str) -> None:
    """Raise ``IllegalTransition`` (HTTP 409) unless ``source → target`` is allowed."""
    check_allowed(
        ALLOWED,
        DatasetStatus(source),
        DatasetStatus(target),
        noun="dataset",
        when_final="it is deleted",
    )


def add_created_event(session: Session, dataset: Dataset, message: str) -> DatasetEvent:
    """Stage the ``created`` event of a new row (the caller commits it with the row)."""
    event = DatasetEvent(
        dataset_id=dataset.id,
        kind=EventKind.created.value,
        message=message,
        data={"to": dataset.status},
    )
    session.add(event)
    return event


def transition(
    session: Session,
    dataset_id: str,
    *,
    source: DatasetStatus,
    target: DatasetStatus,
    message: str,
    values: Mapping[str, Any] | None = None,
    data: Mapping[str, Any] | None = None,
) -> bool:
    """Move dataset ``dataset_id`` from ``source`` to ``target`` and log one state event, in one
    commit.

    ``values`` sets more columns with the same UPDATE. Returns False when the dataset is no
    longer ``source`` (another request or worker moved it first): the session is then rolled
    back. Raises ``IllegalTransition`` for a move the state machine forbids.
    """
    check_transition(source, target)
    fields: dict[str, Any] = {"status": target.value, "updated_at": utcnow(), **(values or {})}
    statement = (
        update(Dataset)
        .where(Dataset.id == dataset_id, Dataset.status == source.value)
        .values(**fields)
        .execution_options(synchronize_session=False)
    )
    if session.execute(statement).rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        return False
    session.add(
        DatasetEvent(
            dataset_id=dataset_id,
            kind=EventKind.state.value,
            message=message,
            data={"from": source.value, "to": target.value, **(data or {})},
        )
    )
    session.commit()
    cached = session.identity_map.get(identity_key(Dataset, dataset_id))
    if cached is not None:
        # The next read must see what the bulk UPDATE wrote, not the session's old copy.
        session.expire(cached)
    return True
