from __future__ import annotations

from datetime import datetime, timedelta
from typing import Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from app.core.db import utcnow
from app.teams.models import Role

MAX_KEY_LIFETIME_DAYS = 3650


class QuotaUseOut(BaseModel):
    used: int
    limit: int


class QuotasOut(BaseModel):
    """The team's use against each quota (limits: settings, or the team's own overrides)."""

    active_jobs: QuotaUseOut = Field(description="Queued and running jobs.")
    stored_bytes: QuotaUseOut = Field(description="Datasets, artifacts and teachers, in bytes.")
    datasets: QuotaUseOut
    active_keys: QuotaUseOut = Field(description="API keys neither revoked nor expired.")


class Me(BaseModel):
    team_id: str
    team_name: str
    role: Role
    key_id: str
    key_prefix: str
    key_expires_at: datetime | None
    rate_limit: str = Field(description="Requests allowed per API key, e.g. 600/minute.")
    quotas: QuotasOut


class ApiKeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    prefix: str
    role: Role
    label: str | None
    created_at: datetime
    last_used_at: datetime | None = Field(description="Updated at most once a minute.")
    revoked_at: datetime | None
    expires_at: datetime | None
    replaced_by: str | None = Field(description="The key this one was rotated to.")


class KeyExpiry(BaseModel):
    """When a new key stops working: at ``expires_at``, or ``expires_in_days`` from now; give at
    most one (neither: it works until revoked)."""

    expires_at: AwareDatetime | None = Field(
        default=None, description="UTC offset required, e.g. 2027-01-31T00:00:00Z."
    )
    expires_in_days: int | None = Field(default=None, ge=1, le=MAX_KEY_LIFETIME_DAYS)

    @model_validator(mode="after")
    def _one_expiry(self) -> Self:
        if self.expires_at is not None and self.expires_in_days is not None:
            raise ValueError("give expires_at or expires_in_days, not both")
        if self.expires_at is not None and self.expires_at <= utcnow():
            raise ValueError("expires_at must be in the future")
        return self

    def expiry(self) -> datetime | None:
        if self.expires_in_days is not None:
            return utcnow() + timedelta(days=self.expires_in_days)
        return self.expires_at


class ApiKeyCreate(KeyExpiry):
    role: Role = Role.member
    label: str | None = Field(default=None, max_length=100)


class ApiKeyRotate(KeyExpiry):
    """Rotate a key: the new one gets its role and label (and the expiry given here); the old
    keeps working for ``old_key_grace_s`` seconds (default ``FOPRO_KEY_ROTATION_GRACE_S``)."""

    old_key_grace_s: int | None = Field(default=None, ge=0, le=30 * 24 * 3600)


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The key itself. It is shown only now; store it safely.")


class ApiKeyRotated(ApiKeyCreated):
    replaced: ApiKeyOut = Field(description="The old key, now ending at its expires_at.")
