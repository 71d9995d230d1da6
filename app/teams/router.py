"""Who am I (with the team's use of its quotas), and key management for team admins."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, status

from app.audit.service import AuditAction, record
from app.core.db import utcnow
from app.core.routing import ServiceRoute
from app.core.tenancy import get_owned, scoped
from app.deps import ActorDep, CurrentPrincipal, SessionDep, SettingsDep
from app.teams.models import ApiKey, Role, Team
from app.teams.quotas import team_usage
from app.teams.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyOut,
    ApiKeyRotate,
    ApiKeyRotated,
    Me,
    QuotasOut,
    QuotaUseOut,
)
from app.teams.service import active_key_count, create_api_key, forget_key, rotate_api_key

router = APIRouter(tags=["teams"], route_class=ServiceRoute)


@router.get("/me")
def read_me(principal: CurrentPrincipal, session: SessionDep, settings: SettingsDep) -> Me:
    """The caller's team, role and key, and the team's use against each quota."""
    team = session.get_one(Team, principal.team_id)
    key = session.get_one(ApiKey, principal.key_id)
    usage = team_usage(session, team, settings)
    quotas = QuotasOut(
        active_jobs=QuotaUseOut(**vars(usage.active_jobs)),
        stored_bytes=QuotaUseOut(**vars(usage.stored_bytes)),
        datasets=QuotaUseOut(**vars(usage.datasets)),
        active_keys=QuotaUseOut(
            used=active_key_count(session, team.id), limit=settings.max_active_keys
        ),
    )
    return Me(
        team_id=team.id,
        team_name=team.name,
        role=principal.role,
        key_id=key.id,
        key_prefix=key.prefix,
        key_expires_at=key.expires_at,
        rate_limit=settings.rate_limit,
        quotas=quotas,
    )


@router.get("/keys")
def list_keys(principal: CurrentPrincipal, session: SessionDep) -> list[ApiKeyOut]:
    principal.require(Role.admin)
    keys = session.scalars(scoped(ApiKey, principal.team_id).order_by(ApiKey.created_at))
    return [ApiKeyOut.model_validate(k) for k in keys]


@router.post("/keys", status_code=status.HTTP_201_CREATED)
def create_key(
    body: ApiKeyCreate,
    principal: CurrentPrincipal,
    actor: ActorDep,
    session: SessionDep,
    settings: SettingsDep,
) -> ApiKeyCreated:
    """A new key (shown once), optionally expiring; 409 when the team has its quota of active
    keys."""
    principal.require(Role.admin)
    team = session.get_one(Team, principal.team_id)
    key, plaintext = create_api_key(
        session,
        team,
        body.role,
        settings.secret_key,
        body.label,
        expires_at=body.expiry(),
        max_active=settings.max_active_keys,
    )
    record(session, actor, AuditAction.key_create, key.id, details={"role": key.role})
    session.commit()
    return ApiKeyCreated(**ApiKeyOut.model_validate(key).model_dump(), key=plaintext)


@router.post("/keys/{key_id}/rotate", status_code=status.HTTP_201_CREATED)
def rotate_key(
    key_id: str,
    body: ApiKeyRotate,
    principal: CurrentPrincipal,
    actor: ActorDep,
    session: SessionDep,
    settings: SettingsDep,
) -> ApiKeyRotated:
    """A successor key (same role and label, shown once); the old key keeps working for
    ``old_key_grace_s`` seconds, then ends."""
    principal.require(Role.admin)
    old = get_owned(session, ApiKey, key_id, principal.team_id, what="API key")
    grace_s = body.old_key_grace_s
    if grace_s is None:
        grace_s = settings.key_rotation_grace_s
    new, plaintext = rotate_api_key(
        session,
        old,
        settings.secret_key,
        grace=timedelta(seconds=grace_s),
        expires_at=body.expiry(),
    )
    record(session, actor, AuditAction.key_rotate, old.id, details={"replaced_by": new.id})
    session.commit()
    forget_key(old.id)  # its cached entry holds the expiry from before the rotation
    return ApiKeyRotated(
        **ApiKeyOut.model_validate(new).model_dump(),
        key=plaintext,
        replaced=ApiKeyOut.model_validate(old),
    )


@router.delete("/keys/{key_id}")
def revoke_key(
    key_id: str, principal: CurrentPrincipal, actor: ActorDep, session: SessionDep
) -> ApiKeyOut:
    principal.require(Role.admin)
    key = get_owned(session, ApiKey, key_id, principal.team_id, what="API key")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        record(session, actor, AuditAction.key_revoke, key.id)
    session.commit()
    forget_key(key.id)
    return ApiKeyOut.model_validate(key)
