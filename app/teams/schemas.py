from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.teams.models import Role


class Me(BaseModel):
    team_id: str
    team_name: str
    role: Role
    key_prefix: str


class ApiKeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    prefix: str
    role: Role
    label: str | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreate(BaseModel):
    role: Role = Role.member
    label: str | None = Field(default=None, max_length=100)


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The key itself. It is shown only now; store it safely.")
