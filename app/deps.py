"""FastAPI dependencies as ``Annotated`` aliases: one session per request, the caller's team
(authenticated, then counted against its key's rate limit)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from app.audit.service import Actor
from app.core.config import Settings, get_settings
from app.core.db import get_sessionmaker
from app.core.errors import Unauthenticated
from app.core.ratelimit import STATE_KEY, key_rate_limiter
from app.core.request_id import current_request_id
from app.core.storage import ObjectStore, open_object_store
from app.teams.service import Principal, authenticate


def get_session() -> Iterator[Session]:
    """A session per request; services commit explicitly (so queued work is sent only after the
    commit), and whatever was not committed is rolled back here."""
    session = get_sessionmaker()()
    try:
        yield session
    finally:
        session.rollback()
        session.close()


async def settings_dependency() -> Settings:
    """``get_settings`` (a cached object, no I/O) as a dependency that runs on the event loop:
    FastAPI runs every sync dependency in its threadpool, a thread hop per request."""
    return get_settings()


_store_cache: dict[str, ObjectStore] = {}


def get_store(settings: Annotated[Settings, Depends(settings_dependency)]) -> ObjectStore:
    """The object store for the configured ``storage_url`` (built once per URL)."""
    store = _store_cache.get(settings.storage_url)
    if store is None:
        store = _store_cache[settings.storage_url] = open_object_store(settings)
    return store


SettingsDep = Annotated[Settings, Depends(settings_dependency)]
SessionDep = Annotated[Session, Depends(get_session)]
StoreDep = Annotated[ObjectStore, Depends(get_store)]


# Declares the scheme in the OpenAPI schema; the 401s stay ours (auto_error would answer 403).
bearer_key = HTTPBearer(
    scheme_name="ApiKey",
    bearerFormat="fpk_...",
    description="A team's API key: `Authorization: Bearer fpk_...` (`fopro admin create-key`).",
    auto_error=False,
)


def get_authenticated_principal(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_key)],
) -> Principal:
    """Resolve ``Authorization: Bearer <key>`` to the caller's team and role, or 401."""
    token = credentials.credentials.strip() if credentials is not None else ""
    if not token:
        raise Unauthenticated("Missing API key. Send `Authorization: Bearer <your key>`.")
    principal = authenticate(session, token, settings.secret_key)
    request.state.team_id = principal.team_id
    return principal


def get_principal(
    request: Request,
    principal: Annotated[Principal, Depends(get_authenticated_principal)],
    settings: SettingsDep,
) -> Principal:
    """The authenticated caller, once its key's request is counted: 429 with ``Retry-After``
    past ``FOPRO_RATE_LIMIT``. Runs once per request (an upload or an event stream is one)."""
    limiter = key_rate_limiter(settings.rate_limit, settings.rate_limit_storage_url)
    state = limiter.hit(principal.key_id)
    if state is not None:
        setattr(request.state, STATE_KEY, state)  # the response's RateLimit-* headers
    return principal


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


def client_address(request: Request) -> str | None:
    """The peer's address (uvicorn's proxy headers make it the client's behind a proxy)."""
    return request.client.host if request.client else None


def actor_for(request: Request, principal: Principal) -> Actor:
    """Who the audit trail names for ``principal``'s ``request`` (API or dashboard)."""
    return Actor(
        team_id=principal.team_id,
        key_id=principal.key_id,
        key_prefix=principal.key_prefix,
        role=principal.role.value,
        client_address=client_address(request),
        request_id=current_request_id(),
    )


def get_actor(request: Request, principal: CurrentPrincipal) -> Actor:
    return actor_for(request, principal)


ActorDep = Annotated[Actor, Depends(get_actor)]
