"""Signing in with an API key (which only this form ever sees) and signing out.

The sign-in form is CSRF-protected too (a nonce cookie it is bound to), so no other site can
sign a browser into an account of its choosing.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import RedirectResponse

from app.core.errors import Unauthenticated
from app.dashboard.auth import CsrfRejected, csrf_from_form
from app.dashboard.pages import DashboardRoute, page
from app.dashboard.session_cookie import (
    CSRF_FIELD,
    SESSION_COOKIE,
    SESSION_TTL_S,
    SIGN_IN_COOKIE,
    SIGN_IN_TTL_S,
    csrf_matches,
    csrf_token,
    new_sign_in_nonce,
    sign_session,
)
from app.deps import SessionDep, SettingsDep
from app.teams.service import authenticate

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)

DEFAULT_LANDING = "/jobs"


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a path on this site only (no ``//host`` or scheme)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return DEFAULT_LANDING
    return value


def _set_cookie(
    request: Request, response: Response, name: str, value: str, max_age: int, path: str = "/"
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=path,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def _sign_in_form(
    request: Request,
    secret: str,
    next_path: str,
    *,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    nonce = new_sign_in_nonce()
    response = page(
        request,
        "sign_in.html",
        None,
        {
            "next": next_path,
            "csrf_token": csrf_token(nonce, secret),
            "error": error,
        },
        status_code=status_code,
    )
    _set_cookie(request, response, SIGN_IN_COOKIE, nonce, SIGN_IN_TTL_S)
    return response


@router.get("/")
def home() -> RedirectResponse:
    return RedirectResponse(DEFAULT_LANDING, status_code=303)


@router.get("/sign-in")
def sign_in_form(request: Request, settings: SettingsDep, next: str | None = None) -> Response:
    return _sign_in_form(request, settings.secret_key, safe_next(next))


@router.post("/sign-in")
async def sign_in(request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    """Check the key like the API does, then open a session cookie naming only its id."""
    form = await request.form()
    next_path = safe_next(str(form.get("next", "")))
    presented = form.get(CSRF_FIELD)
    if not csrf_matches(
        presented if isinstance(presented, str) else None,
        request.cookies.get(SIGN_IN_COOKIE),
        settings.secret_key,
    ):
        raise CsrfRejected(
            "The sign-in form expired or did not come from this dashboard; reload it and sign "
            "in again."
        )
    key = str(form.get("api_key", "")).strip()
    try:
        principal = authenticate(session, key, settings.secret_key)
    except Unauthenticated as exc:
        return _sign_in_form(
            request, settings.secret_key, next_path, error=exc.message, status_code=401
        )
    response = RedirectResponse(next_path, status_code=303)
    _set_cookie(
        request,
        response,
        SESSION_COOKIE,
        sign_session(principal.key_id, settings.secret_key),
        SESSION_TTL_S,
    )
    response.delete_cookie(SIGN_IN_COOKIE, path="/")
    return response


@router.post("/sign-out", dependencies=[Depends(csrf_from_form)])
def sign_out() -> Response:
    response = RedirectResponse("/sign-in", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response
