"""Creating teams, issuing/revoking keys and resolving a presented key to its team."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.db import utcnow
from app.core.errors import Conflict, Forbidden, NotFound, Unauthenticated
from app.core.security import issue_api_key, key_digest, looks_like_api_key
from app.teams.models import ApiKey, Role, Team

# Writing last_used_at on every request would turn every read into a write; once a minute is enough.
_LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class Principal:
    """Who is calling: the team every query is scoped to, and the key's role."""

    team_id: str
    key_id: str
    role: Role

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


def create_api_key(
    session: Session, team: Team, role: Role, secret: str, label: str | None = None
) -> tuple[ApiKey, str]:
    """Store a new key for ``team``; returns the row and the plaintext (show it once)."""
    issued = issue_api_key(secret)
    key = ApiKey(
        team_id=team.id, role=role.value, prefix=issued.prefix, digest=issued.digest, label=label
    )
    session.add(key)
    session.flush()
    return key, issued.plaintext


def revoke_api_key(session: Session, prefix_or_id: str) -> ApiKey:
    key = session.scalar(
        select(ApiKey).where((ApiKey.prefix == prefix_or_id) | (ApiKey.id == prefix_or_id))
    )
    if key is None:
        raise NotFound(f"No API key with prefix or id {prefix_or_id!r}.")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
    return key


def authenticate(session: Session, presented: str, secret: str) -> Principal:
    """Resolve a bearer key to its principal; unknown or revoked keys raise Unauthenticated."""
    if not looks_like_api_key(presented):
        raise Unauthenticated("Malformed API key. Send `Authorization: Bearer fpk_...`.")
    key = session.scalar(select(ApiKey).where(ApiKey.digest == key_digest(presented, secret)))
    if key is None:
        raise Unauthenticated("Unknown API key. Ask your team admin for a key.")
    if key.revoked_at is not None:
        raise Unauthenticated("This API key was revoked. Ask your team admin for a new key.")
    now = utcnow()
    if key.last_used_at is None or now - key.last_used_at > _LAST_USED_RESOLUTION:
        key.last_used_at = now
        session.commit()
    return Principal(team_id=key.team_id, key_id=key.id, role=Role(key.role))
