"""Who am I, and key management for team admins."""

from __future__ import annotations

from fastapi import APIRouter, status

from app.core.db import utcnow
from app.core.tenancy import get_owned, scoped
from app.deps import CurrentPrincipal, SessionDep, SettingsDep
from app.teams.models import ApiKey, Role, Team
from app.teams.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyOut, Me
from app.teams.service import create_api_key

router = APIRouter(tags=["teams"])


@router.get("/me")
def read_me(principal: CurrentPrincipal, session: SessionDep) -> Me:
    team = session.get_one(Team, principal.team_id)
    key = session.get_one(ApiKey, principal.key_id)
    return Me(team_id=team.id, team_name=team.name, role=principal.role, key_prefix=key.prefix)


@router.get("/keys")
def list_keys(principal: CurrentPrincipal, session: SessionDep) -> list[ApiKeyOut]:
    principal.require(Role.admin)
    keys = session.scalars(scoped(ApiKey, principal.team_id).order_by(ApiKey.created_at))
    return [ApiKeyOut.model_validate(k) for k in keys]


@router.post("/keys", status_code=status.HTTP_201_CREATED)
def create_key(
    body: ApiKeyCreate, principal: CurrentPrincipal, session: SessionDep, settings: SettingsDep
) -> ApiKeyCreated:
    principal.require(Role.admin)
    team = session.get_one(Team, principal.team_id)
    key, plaintext = create_api_key(session, team, body.role, settings.secret_key, body.label)
    session.commit()
    return ApiKeyCreated(**ApiKeyOut.model_validate(key).model_dump(), key=plaintext)


@router.delete("/keys/{key_id}")
def revoke_key(key_id: str, principal: CurrentPrincipal, session: SessionDep) -> ApiKeyOut:
    principal.require(Role.admin)
    key = get_owned(session, ApiKey, key_id, principal.team_id, what="API key")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
    session.commit()
    return ApiKeyOut.model_validate(key)
