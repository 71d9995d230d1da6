"""``GET /v1/audit``: the team's audit trail, for its admins. No route changes or deletes it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AwareDatetime

from app.audit.schemas import AuditRecordOut
from app.audit.service import AuditAction, AuditFilter, list_records
from app.core.pagination import MaxOffset, Page
from app.core.routing import ServiceRoute
from app.deps import CurrentPrincipal, SessionDep
from app.teams.models import Role

router = APIRouter(prefix="/audit", tags=["audit"], route_class=ServiceRoute)


@router.get("")
def read_audit_trail(
    principal: CurrentPrincipal,
    session: SessionDep,
    actor: Annotated[
        str | None, Query(max_length=32, description="A key id or key prefix.")
    ] = None,
    action: AuditAction | None = None,
    object_type: Annotated[str | None, Query(max_length=24)] = None,
    object_id: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[AwareDatetime | None, Query(description="From this time (UTC).")] = None,
    until: Annotated[AwareDatetime | None, Query(description="Before this time.")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: MaxOffset = 0,
) -> Page[AuditRecordOut]:
    """Who did what to which object, when, from where, newest first (admin keys only)."""
    principal.require(Role.admin)
    where = AuditFilter(actor, action, object_type, object_id, since, until)
    return list_records(session, principal.team_id, where, limit=limit, offset=offset)
