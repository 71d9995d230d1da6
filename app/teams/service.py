"""Creating teams, issuing, rotating and revoking keys, and resolving a presented key to its team.

``authenticate`` reads the key's row on every request, unless it is given a ``KeyCache``
(``FOPRO_KEY_CACHE_SECONDS`` > 0): then a key this process resolved in the last few seconds is
answered from memory. An expiry is checked on every request either way; a revoke or rotation
through this process's API forgets the key at once, one made elsewhere is seen when the entry
ages out."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from time import monotonic

from cachetools import TTLCache
from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from app.core.db import utcnow
from app.core.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthenticated
from app.core.security import issue_api_key, key_digest, looks_like_api_key
from app.teams.models import ApiKey, Role, Team

# Writing last_used_at on every request would turn every read into a write; once a minute is enough.
_LAST_USED_RESOLUTION = timedelta(minutes=1)


class KeyLimitReached(Conflict):
    code = "key_limit_reached"


class KeyNotRotatable(Conflict):
    code = "key_not_rotatable"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the team every query is scoped to, and the key's role."""

    team_id: str
    key_id: str
    role: Role
    key_prefix: str = ""

    def require(self, *allowed: Role) -> None:
        if self.role not in allowed:
            needed = " or ".join(r.value for r in allowed)
            raise Forbidden(f"This action needs a {needed} key; this key is {self.role.value}.")

    def require_write(self) -> None:
        self.require(Role.admin, Role.member)


def create_team(session: Session, name: str) -> Team:
    name = name.strip()
    if not name:
        raise Conflict("A team needs a non-empty name.")
    if session.scalar(select(Team).where(Team.name == name)) is not None:
        raise Conflict(f"A team named {name!r} already exists.")
    team = Team(name=name)
    session.add(team)
    session.flush()
    return team


def find_team(session: Session, name_or_id: str) -> Team:
    team = session.scalar(select(Team).where((Team.name == name_or_id) | (Team.id == name_or_id)))
    if team is None:
        raise NotFound(
            f"No team named or with id {name_or_id!r}. Create it with `fopro admin create-team`."
        )
    return team


def active_key_count(session: Session, team_id: str, *, now: datetime | None = None) -> int:
    """The team's keys that still work: neither revoked nor expired."""
    now = now or utcnow()
    query = select(func.count(ApiKey.id)).where(
        ApiKey.team_id == team_id,
        ApiKey.revoked_at.is_(None),
        or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now),
    )
    return session.scalar(query) or 0


def key_works(session: Session, key_id: str, *, now: datetime | None = None) -> bool:
    """Whether the key ``key_id`` still exists and is neither revoked nor expired."""
    now = now or utcnow()
    query = select(ApiKey.id).where(
        ApiKey.id == key_id,
        ApiKey.revoked_at.is_(None),
        or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now),
    )
    return session.scalar(query) is not None


def create_api_key(
    session: Session,
    team: Team,
    role: Role,
    secret: str,
    label: str | None = None,
    *,
    expires_at: datetime | None = None,
    max_active: int | None = None,
) -> tuple[ApiKey, str]:
    """Store a new key for ``team``; returns the row and the plaintext (show it once).

    ``expires_at`` (UTC, in the future) ends it; None keeps it until revoked. With
    ``max_active``, a team that has that many working keys is refused (409).
    """
    now = utcnow()
    if expires_at is not None and expires_at <= now:
        raise InvalidInput(f"The expiry {expires_at:%Y-%m-%d %H:%M:%S} UTC is not in the future.")
    if max_active is not None:
        active = active_key_count(session, team.id, now=now)
        if active >= max_active:
            raise KeyLimitReached(
                f"Team {team.name} has {active} of {max_active} active API keys; revoke one "
                "(DELETE /v1/keys/{id} or `fopro admin revoke-key`) before creating another.",
                details={"quota": "max_active_keys", "used": active, "limit": max_active},
            )
    issued = issue_api_key(secret)
    key = ApiKey(
        team_id=team.id,
        role=role.value,
        prefix=issued.prefix,
        digest=issued.digest,
        label=label,
        expires_at=expires_at,
    )
    session.add(key)
    session.flush()
    return key, issued.plaintext


def rotate_api_key(
    session: Session,
    old: ApiKey,
    secret: str,
    *,
    grace: timedelta,
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    """Issue ``old``'s successor (same team, role and label, expiring at ``expires_at``, else
    after as long a life as ``old`` was given, else never) and end ``old`` after ``grace``
    (sooner if it expired sooner anyway), so clients can switch over.

    Refused (409) for a key that is revoked, expired or already rotated. The cap on active keys
    does not apply: the successor replaces a key that is on its way out.
    """
    now = utcnow()
    if old.revoked_at is not None or (old.expires_at is not None and old.expires_at <= now):
        raise KeyNotRotatable(
            f"API key {old.prefix} ({old.id}) no longer works; create a new key instead."
        )
    if old.replaced_by is not None:
        raise KeyNotRotatable(
            f"API key {old.prefix} ({old.id}) was already rotated to {old.replaced_by}; rotate "
            "that one, or revoke it and create a new key.",
            details={"replaced_by": old.replaced_by},
        )
    if expires_at is None and old.expires_at is not None:
        expires_at = now + (old.expires_at - old.created_at)
    team = session.get_one(Team, old.team_id)
    new, plaintext = create_api_key(
        session, team, Role(old.role), secret, old.label, expires_at=expires_at
    )
    ends = now + grace
    old.expires_at = ends if old.expires_at is None else min(old.expires_at, ends)
    old.replaced_by = new.id
    session.flush()
    return new, plaintext


def revoke_api_key(session: Session, prefix_or_id: str) -> ApiKey:
    key = session.scalar(
        select(ApiKey).where((ApiKey.prefix == prefix_or_id) | (ApiKey.id == prefix_or_id))
    )
    if key is None:
        raise NotFound(f"No API key with prefix or id {prefix_or_id!r}.")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
    return key


@dataclass(frozen=True)
class _Resolved:
    principal: Principal
    expires_at: datetime | None


class KeyCache:
    """Keys this process resolved in the last ``ttl`` seconds, by digest (never the key itself);
    only keys that worked are kept, at most ``maxsize`` of them. Thread-safe: the API resolves
    keys in its threadpool."""

    def __init__(
        self, ttl: float, maxsize: int = 10_000, timer: Callable[[], float] = monotonic
    ) -> None:
        self._entries: TTLCache[str, _Resolved] = TTLCache(maxsize, ttl, timer=timer)
        self._lock = threading.Lock()

    def get(self, digest: str) -> _Resolved | None:
        with self._lock:
            return self._entries.get(digest)

    def put(self, digest: str, resolved: _Resolved) -> None:
        with self._lock:
            self._entries[digest] = resolved

    def forget(self, key_id: str) -> None:
        with self._lock:
            for digest in [d for d, r in self._entries.items() if r.principal.key_id == key_id]:
                del self._entries[digest]


_caches: dict[float, KeyCache] = {}
_caches_lock = threading.Lock()


def key_cache(ttl: float) -> KeyCache | None:
    """This process's cache for ``FOPRO_KEY_CACHE_SECONDS`` = ``ttl``; None when it is 0."""
    if ttl <= 0:
        return None
    with _caches_lock:
        cache = _caches.get(ttl)
        if cache is None:
            cache = _caches[ttl] = KeyCache(ttl)
        return cache


def forget_key(key_id: str) -> None:
    """Drop ``key_id`` from this process's caches: after its revoke or rotation is committed."""
    with _caches_lock:
        caches = list(_caches.values())
    for cache in caches:
        cache.forget(key_id)


def authenticate(
    session: Session, presented: str, secret: str, cache: KeyCache | None = None
) -> Principal:
    """Resolve a bearer key to its principal; unknown, revoked or expired keys raise
    Unauthenticated. Notes the key's use at most once a minute (``last_used_at``). With
    ``cache``, a key resolved in the last ``cache.ttl`` seconds is not read again."""
    if not looks_like_api_key(presented):
        raise Unauthenticated("Malformed API key. Send `Authorization: Bearer fpk_...`.")
    digest = key_digest(presented, secret)
    if cache is not None:
        known = cache.get(digest)
        if known is not None and (known.expires_at is None or known.expires_at > utcnow()):
            return known.principal
    principal, expires_at = _authenticate_row(session, digest)
    if cache is not None:
        cache.put(digest, _Resolved(principal, expires_at))
    return principal


# Built once: a statement built per request recomputes its SQLAlchemy cache key every time
# (see ``app.core.tenancy._owned_statement``), and every uncached request looks its key up.
_KEY_BY_DIGEST = select(ApiKey).where(ApiKey.digest == bindparam("digest"))


def _authenticate_row(session: Session, digest: str) -> tuple[Principal, datetime | None]:
    key = session.scalar(_KEY_BY_DIGEST, {"digest": digest})
    if key is None:
        raise Unauthenticated("Unknown API key. Ask your team admin for a key.")
    if key.revoked_at is not None:
        raise Unauthenticated("This API key was revoked. Ask your team admin for a new key.")
    now = utcnow()
    if key.expires_at is not None and key.expires_at <= now:
        successor = " (it was rotated: use the key that replaced it)" if key.replaced_by else ""
        raise Unauthenticated(
            f"This API key expired at {key.expires_at:%Y-%m-%d %H:%M:%S} UTC{successor}. Ask "
            "your team admin for a new key.",
            details={"expired_at": key.expires_at.isoformat()},
        )
    if key.last_used_at is None or now - key.last_used_at > _LAST_USED_RESOLUTION:
        # Guarded, so concurrent requests of one key (on any process) write once a minute.
        session.execute(
            update(ApiKey)
            .where(
                ApiKey.id == key.id,
                or_(
                    ApiKey.last_used_at.is_(None),
                    ApiKey.last_used_at < now - _LAST_USED_RESOLUTION,
                ),
            )
            .values(last_used_at=now)
            .execution_options(synchronize_session=False)
        )
        session.commit()
    principal = Principal(
        team_id=key.team_id, key_id=key.id, role=Role(key.role), key_prefix=key.prefix
    )
    return principal, key.expires_at
