"""API keys (shown once, stored as an HMAC digest) and signed, expiring download tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

KEY_SCHEME = "fpk"
_PREFIX_CHARS = 8
_MAC_BYTES = 20


@dataclass(frozen=True)
class IssuedKey:
    """A freshly generated key: ``plaintext`` is shown to the user once and never stored."""

    plaintext: str
    prefix: str
    digest: str


def key_digest(plaintext: str, secret: str) -> str:
    """HMAC-SHA256 of the key under the server secret (hex); the only form stored at rest."""
    return hmac.new(secret.encode(), plaintext.encode(), hashlib.sha256).hexdigest()


def issue_api_key(secret: str) -> IssuedKey:
    """A new key ``fpk_<8 display chars>_<43 secret chars>`` and what the database keeps of it."""
    display = secrets.token_hex(_PREFIX_CHARS // 2)
    plaintext = f"{KEY_SCHEME}_{display}_{secrets.token_urlsafe(32)}"
    return IssuedKey(plaintext, f"{KEY_SCHEME}_{display}", key_digest(plaintext, secret))


def looks_like_api_key(value: str) -> bool:
    parts = value.split("_", 2)
    return len(parts) == 3 and parts[0] == KEY_SCHEME and len(parts[1]) == _PREFIX_CHARS


def sign_download(grant: str, secret: str, ttl_s: int, *, now: float | None = None) -> str:
    """A URL-safe token granting a GET of ``grant`` (an artifact id) until ``now + ttl_s``
    (seconds)."""
    expires = int((now if now is not None else time.time()) + ttl_s)
    payload = f"{expires}:{grant}"
    mac = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest()[:_MAC_BYTES]
    raw = payload.encode() + mac
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def verify_download(token: str, secret: str, *, now: float | None = None) -> str | None:
    """What a valid, unexpired token grants, else None."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        # The MAC is binary and may hold any byte, so it is found by its fixed length,
        # never by searching for a separator.
        payload, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        if len(mac) != _MAC_BYTES or not payload:
            return None
        expected = hmac.new(secret.encode(), payload, hashlib.sha256).digest()[:_MAC_BYTES]
        if not hmac.compare_digest(mac, expected):
            return None
        expires_s, grant = payload.decode().split(":", 1)
    except (ValueError, UnicodeDecodeError):
        return None
    if int(expires_s) < (now if now is not None else time.time()):
        return None
    return grant
