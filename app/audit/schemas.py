from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class AuditRecordOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    created_at: datetime
    key_id: str | None = Field(description="None for a signed download link (no key).")
    key_prefix: str | None
    role: str | None
    action: str = Field(description="e.g. job.create, artifact.download, key.revoke.")
    object_type: str
    object_id: str | None
    client_address: str | None
    request_id: str | None
    details: dict[str, Any]
