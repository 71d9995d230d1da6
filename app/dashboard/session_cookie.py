"""The dashboard's signed session cookie and the CSRF tokens bound to it.

The cookie never holds the API key: only the key's id, an expiry and a random nonce, signed with
a key derived from ``FOPRO_SECRET_KEY``. Whether the key is still active is checked in the
database on every request (``app.dashboard.auth``), so a revoke takes effect at once.

A CSRF token is an HMAC of what it is bound to (the session cookie, or the sign-in form's own
nonce cookie) under a second derived key: a page can only post if it could read a token the
server rendered into it, which a cross-site page cannot.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

SESSION_COOKIE = "fopro_session"
SIGN_IN_COOKIE = "fopro_sign_in"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
# A working day; signing in again costs one paste of the key.
SESSION_TTL_S = 8 * 3600
SIGN_IN_TTL_S = 3600

_VERSION = "v1"
_MAC_BYTES = 24
_KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_NONCE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


@dataclass(frozen=True)
class SessionClaim:
    """What a valid session cookie says: the API key it was opened with and until when (Unix s)."""

    key_id: str
    expires_at: int


def _purpose_key(secret: str, purpose: str) -> bytes:
    # One derived key per use, so a MAC made for one purpose (API-key digests, download links,
    # sessions, CSRF) is never valid for another.
    return hmac.new(secret.encode(), f"fopro-dashboard:{purpose}".encode(), hashlib.sha256).digest()


def _mac(secret: str, purpose: str, message: str) -> str:
    digest = hmac.new(_purpose_key(secret, purpose), message.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:_MAC_BYTES]).decode().rstrip("=")


def sign_session(
    key_id: str, secret: str, *, ttl_s: int = SESSION_TTL_S, now: float | None = None
) -> str:
    """A cookie value ``v1.<key id>.<expires>.<nonce>.<mac>`` valid for ``ttl_s`` seconds."""
    if not _KEY_ID.match(key_id):
        raise ValueError(f"not an API key id: {key_id!r}")
    expires = int((time.time() if now is None else now) + ttl_s)
    payload = f"{_VERSION}.{key_id}.{expires}.{secrets.token_urlsafe(16)}"
    return f"{payload}.{_mac(secret, 'session', payload)}"


def read_session(value: str, secret: str, *, now: float | None = None) -> SessionClaim | None:
    """The claim of a cookie this server signed and that has not expired, else None."""
    parts = value.split(".")
    if len(parts) != 5 or parts[0] != _VERSION:
        return None
    _, key_id, expires_s, nonce, mac = parts
    if not (_KEY_ID.match(key_id) and expires_s.isdigit() and _NONCE.match(nonce)):
        return None
    payload = value.rsplit(".", 1)[0]
    if not hmac.compare_digest(mac, _mac(secret, "session", payload)):
        return None
    if int(expires_s) <= (time.time() if now is None else now):
        return None
    return SessionClaim(key_id, int(expires_s))


def new_sign_in_nonce() -> str:
    """The random value of the sign-in form's cookie, which its CSRF token is bound to."""
    return secrets.token_urlsafe(24)


def csrf_token(binding: str, secret: str) -> str:
    """The CSRF token for forms of the session (or sign-in nonce) ``binding``."""
    return _mac(secret, "csrf", binding)


def csrf_matches(presented: str | None, binding: str | None, secret: str) -> bool:
    """Whether ``presented`` is the CSRF token of ``binding`` (False when either is missing)."""
    if not presented or not binding:
        return False
    return hmac.compare_digest(presented, csrf_token(binding, secret))
