"""One page of a listing, the same shape for every collection, and the bounds of its window."""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel

T = TypeVar("T")

# Bounds on integers a client sends: past them the database driver overflows (a 500). An offset
# beyond a 32-bit count pages past any real listing; ids are 64-bit signed integers.
MAX_OFFSET = 2**31 - 1
MAX_ROW_ID = 2**63 - 1

MaxOffset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Rows to skip.")]


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int
