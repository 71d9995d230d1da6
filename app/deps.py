"""FastAPI dependencies as ``Annotated`` aliases: one session per request, the caller's team
(authenticated, then counted against its key's rate limit)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Annotated, TypeVar

import anyio
import anyio.to_thread
from anyio.lowlevel import RunVar
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from app.audit.service import Actor
from app.core.config import Settings, get_settings
from app.core.db import end_read_transaction, get_sessionmaker
from app.core.errors import Unauthenticated
from app.core.ratelimit import STATE_KEY, key_rate_limiter
from app.core.request_id import current_request_id
from app.core.storage import ObjectStore, open_object_store
from app.teams.service import Principal, authenticate, key_cache

T = TypeVar("T")


def _end_session(session: Session) -> None:
    session.rollback()
    session.close()


async def get_session() -> AsyncIterator[Session]:
    """A session per request; services commit explicitly (so queued work is sent only after the
    commit), and whatever was not committed is rolled back here.

    Async on purpose: FastAPI runs a sync generator's start and its end each in the threadpool,
    two thread hops per request (``bench.api_load`` measured six hops on ``GET /v1/jobs/{id}``).
    Building a ``Session`` does no I/O, so it happens on the event loop; ending it returns the
    connection (a rollback, I/O) and so still runs in the threadpool."""
    session = get_sessionmaker()()
    try:
        yield session
    finally:
        if session.in_transaction():
            # Threads of their own: a session that still holds a connection must be able to
            # give it back while every threadpool thread waits for one (see ``get_principal``).
            await anyio.to_thread.run_sync(_end_session, session, limiter=_ending_limiter())
        else:
            session.close()  # committed or ended already: no connection, no I/O


_ending: RunVar[anyio.CapacityLimiter] = RunVar("fopro_session_ending_limiter")


def _ending_limiter() -> anyio.CapacityLimiter:
    try:
        return _ending.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(8)
        _ending.set(limiter)
        return limiter


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


def _bearer_token(credentials: HTTPAuthorizationCredentials | None) -> str:
    token = credentials.credentials.strip() if credentials is not None else ""
    if not token:
        raise Unauthenticated("Missing API key. Send `Authorization: Bearer <your key>`.")
    return token


def resolve_principal(
    request: Request, session: Session, settings: Settings, token: str
) -> Principal:
    """Resolve a bearer key to the caller's team and role (or 401), then count the key's
    request: 429 with ``Retry-After`` past ``FOPRO_RATE_LIMIT``. Blocks: the key lookup, and the
    limiter when its storage is Redis."""
    cache = key_cache(settings.key_cache_seconds)
    principal = authenticate(session, token, settings.secret_key, cache)
    request.state.team_id = principal.team_id
    limiter = key_rate_limiter(settings.rate_limit, settings.rate_limit_storage_url)
    state = limiter.hit(principal.key_id)
    if state is not None:
        setattr(request.state, STATE_KEY, state)  # the response's RateLimit-* headers
    return principal


def get_principal(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_key)],
) -> Principal:
    """``Authorization: Bearer <key>`` resolved and counted (``resolve_principal``) in one thread
    hop. Runs once per request (an upload or an event stream is one).

    The key lookup's transaction ends here, so the connection goes back to the pool before the
    thread does. Held across the hop to the route, it deadlocked the API under a burst: 50
    submits on 15 connections per process, the threadpool's 40 threads all waiting in the
    pool for a connection, and the requests holding the 15 waiting for a thread to go on with;
    nothing moved until the pool's 30 s timeout failed the waiters (bench.api_load, cache 0)."""
    principal = resolve_principal(request, session, settings, _bearer_token(credentials))
    end_read_transaction(session)
    return principal


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


@dataclass(frozen=True)
class Caller:
    """A request's bearer key, present but not yet looked up: for the routes dashboards poll,
    which open their session, do the lookup and their own queries in one thread hop
    (``in_one_hop``).

    Each hop through the threadpool cost about 0.5 ms on 2 busy cores (``bench.api_load``); a
    sync read route with ``CurrentPrincipal`` takes three (the key, the route, its answer's
    validation). The caller holds no session: a session dependency is an
    async generator, whose exit stack FastAPI builds for every request (py-spy under wrk)."""

    request: Request
    token: str

    def principal(self, session: Session) -> Principal:
        return resolve_principal(self.request, session, get_settings(), self.token)


async def get_caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_key)],
) -> Caller:
    return Caller(request, _bearer_token(credentials))


CallerDep = Annotated[Caller, Depends(get_caller)]

# Per event loop, as anyio keeps its own default limiter (a TestClient runs its own loop).
_read_limiter: RunVar[anyio.CapacityLimiter] = RunVar("fopro_read_limiter")


def read_limiter() -> anyio.CapacityLimiter:
    """The threads ``in_one_hop`` may use at once in this process (``FOPRO_READ_THREADS``)."""
    try:
        return _read_limiter.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(get_settings().read_threads)
        _read_limiter.set(limiter)
        return limiter


async def in_one_hop(work: Callable[[Session], T]) -> T:
    """Open a session, run ``work`` with it and end it, all in one trip to the threadpool, on
    one of ``read_threads`` threads: a request that finds them busy waits on the event loop.

    Not anyio's default 40: 20 requests at once in 20 threads spent their time handing the GIL
    to each other. With 2 or 4 threads GET /v1/jobs/{id} served 35 % more requests per second
    on 2 cores than with 8, 16 or 40 (BENCHMARKS.md)."""

    def run() -> T:
        session = get_sessionmaker()()
        try:
            return work(session)
        finally:
            _end_session(session)

    return await anyio.to_thread.run_sync(run, limiter=read_limiter())


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


async def get_actor(request: Request, principal: CurrentPrincipal) -> Actor:
    # Async: no I/O, so no thread hop.
    return actor_for(request, principal)


ActorDep = Annotated[Actor, Depends(get_actor)]
