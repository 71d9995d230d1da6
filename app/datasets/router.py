"""Datasets as the API sees them (reads; uploads arrive with the datasets issue)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import func, select

from app.core.deps import CurrentPrincipal, SessionDep
from app.core.pagination import Page
from app.core.tenancy import get_owned, scoped
from app.datasets.models import Dataset, DatasetStatus
from app.datasets.schemas import DatasetOut

router = APIRouter(prefix="/datasets", tags=["datasets"])


@router.get("")
def list_datasets(
    principal: CurrentPrincipal,
    session: SessionDep,
    status: DatasetStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Page[DatasetOut]:
    query = scoped(Dataset, principal.team_id)
    if status is not None:
        query = query.where(Dataset.status == status.value)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(
        query.order_by(Dataset.created_at.desc(), Dataset.id).limit(limit).offset(offset)
    )
    return Page[DatasetOut](
        items=[DatasetOut.model_validate(r) for r in rows], total=total, limit=limit, offset=offset
    )


@router.get("/{dataset_id}")
def read_dataset(dataset_id: str, principal: CurrentPrincipal, session: SessionDep) -> DatasetOut:
    return DatasetOut.model_validate(
        get_owned(session, Dataset, dataset_id, principal.team_id, what="dataset")
    )
