"""Teams' own teachers (the built-in zoo lives in the engine's registry, not here)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, new_id, utcnow


class Teacher(Base):
    __tablename__ = "teachers"
    __table_args__ = (UniqueConstraint("team_id", "name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("tch"))
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    arch: Mapped[str] = mapped_column(String(100))
    feature_dim: Mapped[int] = mapped_column(Integer)
    input_size: Mapped[int] = mapped_column(Integer)
    mean: Mapped[list[Any]] = mapped_column(default=list)
    std: Mapped[list[Any]] = mapped_column(default=list)
    num_params: Mapped[int] = mapped_column(BigInteger, default=0)
    weights_key: Mapped[str] = mapped_column(String(512))
    weights_sha256: Mapped[str] = mapped_column(String(64))
    weights_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
