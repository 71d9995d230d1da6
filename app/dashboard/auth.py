"""Who is looking at the dashboard: the session cookie resolved to an active API key, and the
CSRF check every state-changing form passes.

Browsers cannot be trusted with a bearer header the way API clients are (and EventSource cannot
send one), so the dashboard authenticates by cookie; what a signed-in person may do is still
decided by the key's ``Principal`` inside the domain services, exactly as for the API.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from app.core.db import utcnow
from app.core.errors import Forbidden, Unauthenticated
from app.dashboard.session_cookie import (
    CSRF_FIELD,
    CSRF_HEADER,
    SESSION_COOKIE,
    csrf_matches,
    csrf_token,
    read_session,
)
from app.deps import SessionDep, SettingsDep
from app.teams.models import ApiKey, Role, Team
from app.teams.service import Principal

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class SignInRequired(Unauthenticated):
    code = "sign_in_required"


class CsrfRejected(Forbidden):
    code = "csrf_rejected"


@dataclass(frozen=True)
class SignedIn:
    """The signed-in key: its principal (what services check), the page's CSRF token, and what
    the header shows."""

    principal: Principal
    csrf: str
    team_name: str
    key_prefix: str

    @property
    def can_write(self) -> bool:
        return self.principal.role in (Role.admin, Role.member)

    @property
    def is_admin(self) -> bool:
        return self.principal.role is Role.admin


def active_key(session: Session, key_id: str) -> ApiKey | None:
    """The API key ``key_id`` if it still exists, is not revoked and has not expired."""
    key = session.get(ApiKey, key_id)
    if key is None or key.revoked_at is not None:
        return None
    if key.expires_at is not None and key.expires_at <= utcnow():
        return None
    return key


def signed_in(request: Request, session: SessionDep, settings: SettingsDep) -> SignedIn:
    """The session cookie's key, re-checked in the database; ``SignInRequired`` (401) when the
    cookie is missing, forged or expired, or its key was revoked since."""
    cookie = request.cookies.get(SESSION_COOKIE)
    claim = read_session(cookie, settings.secret_key) if cookie else None
    if cookie is None or claim is None:
        raise SignInRequired("Sign in with your team's API key to use the dashboard.")
    key = active_key(session, claim.key_id)
    if key is None:
        raise SignInRequired("The API key of this session was revoked. Sign in with an active key.")
    user = SignedIn(
        principal=Principal(
            team_id=key.team_id, key_id=key.id, role=Role(key.role), key_prefix=key.prefix
        ),
        csrf=csrf_token(cookie, settings.secret_key),
        team_name=session.get_one(Team, key.team_id).name,
        key_prefix=key.prefix,
    )
    request.state.team_id = key.team_id
    request.state.signed_in = user  # an error page later in the request still shows who it is
    return user


SignedInDep = Annotated[SignedIn, Depends(signed_in)]


def check_csrf(request: Request, presented: str | None, secret: str) -> None:
    """Refuse (403) a state change whose token does not belong to this session's cookie."""
    if not csrf_matches(presented, request.cookies.get(SESSION_COOKIE), secret):
        raise CsrfRejected(
            "This form has no valid CSRF token (it was not sent from a dashboard page, or "
            "your session changed since the page loaded). Reload the page and try again."
        )


async def csrf_from_form(request: Request, user: SignedInDep, settings: SettingsDep) -> SignedIn:
    """A form post: the token from the ``X-CSRF-Token`` header or the ``csrf_token`` field."""
    presented = request.headers.get(CSRF_HEADER)
    if presented is None and request.headers.get("content-type", "").startswith(FORM_TYPES):
        value = (await request.form()).get(CSRF_FIELD)
        presented = value if isinstance(value, str) else None
    check_csrf(request, presented, settings.secret_key)
    return user


def csrf_from_header(request: Request, user: SignedInDep, settings: SettingsDep) -> SignedIn:
    """A streamed upload: the token from the header only, since reading form fields would
    consume the body the upload streams to the store."""
    check_csrf(request, request.headers.get(CSRF_HEADER), settings.secret_key)
    return user


CsrfCheckedDep = Annotated[SignedIn, Depends(csrf_from_form)]
CsrfCheckedUploadDep = Annotated[SignedIn, Depends(csrf_from_header)]
