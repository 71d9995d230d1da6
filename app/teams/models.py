"""Teams (tenants) and their API keys."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.core.db import Base, new_id, utcnow


class Role(StrEnum):
    admin = "admin"
    member = "member"
    viewer = "viewer"


class Team(Base):
    __tablename__ = "teams"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("team"))
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Quota overrides (`fopro admin set-quota`); None means the setting's default.
    max_active_jobs: Mapped[int | None]
    max_stored_bytes: Mapped[int | None] = mapped_column(BigInteger)
    max_datasets: Mapped[int | None]

    api_keys: Mapped[list[ApiKey]] = relationship(back_populates="team")


class ApiKey(Base):
    """An API key; only its HMAC digest and a short display prefix are stored.

    It works until ``revoked_at`` or ``expires_at``, whichever comes first; a rotated key names
    the key that ``replaced_by`` it and keeps working until its (then shortened) expiry."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("key"))
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16), default=Role.member.value)
    prefix: Mapped[str] = mapped_column(String(24), index=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]
    replaced_by: Mapped[str | None] = mapped_column(String(32))

    team: Mapped[Team] = relationship(back_populates="api_keys")
