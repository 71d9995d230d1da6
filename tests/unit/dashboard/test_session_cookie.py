"""The dashboard's session cookie (signed key id + expiry) and its CSRF tokens, without a server."""

from __future__ import annotations

import pytest

from app.dashboard.session_cookie import (
    SESSION_TTL_S,
    csrf_matches,
    csrf_token,
    new_sign_in_nonce,
    read_session,
    sign_session,
)

SECRET = "s" * 40
NOW = 1_800_000_000.0


def test_a_signed_session_names_its_key_until_it_expires() -> None:
    cookie = sign_session("key_0123abcd", SECRET, now=NOW)
    claim = read_session(cookie, SECRET, now=NOW)
    assert claim is not None
    assert claim.key_id == "key_0123abcd"
    assert claim.expires_at == NOW + SESSION_TTL_S
    assert read_session(cookie, SECRET, now=NOW + SESSION_TTL_S - 1) == claim
    assert read_session(cookie, SECRET, now=NOW + SESSION_TTL_S) is None


def test_the_ttl_is_the_callers() -> None:
    cookie = sign_session("key_1", SECRET, ttl_s=60, now=NOW)
    assert read_session(cookie, SECRET, now=NOW + 59) is not None
    assert read_session(cookie, SECRET, now=NOW + 60) is None


def _with_part(cookie: str, index: int, value: str) -> str:
    parts = cookie.split(".")
    parts[index] = value
    return ".".join(parts)


@pytest.mark.parametrize(
    ("index", "value"),
    [(1, "key_someone_else"), (2, str(int(NOW) + 10 * SESSION_TTL_S)), (3, "A" * 22), (0, "v2")],
    ids=["key-id", "expiry", "nonce", "version"],
)
def test_a_changed_cookie_is_refused(index: int, value: str) -> None:
    cookie = sign_session("key_0123abcd", SECRET, now=NOW)
    assert read_session(_with_part(cookie, index, value), SECRET, now=NOW) is None


@pytest.mark.parametrize(
    "value",
    [
        "",
        "v1",
        "v1.key.1.2",
        "v1.key_1.notanumber.AAAAAAAAAAAAAAAAAAAAAA.mac",
        "....",
        "v1.a.b.c.d.e",
    ],
)
def test_malformed_cookies_are_refused(value: str) -> None:
    assert read_session(value, SECRET, now=NOW) is None


def test_a_cookie_signed_under_another_secret_is_refused() -> None:
    cookie = sign_session("key_0123abcd", "t" * 40, now=NOW)
    assert read_session(cookie, SECRET, now=NOW) is None


def test_only_key_ids_can_be_signed() -> None:
    with pytest.raises(ValueError, match="not an API key id"):
        sign_session("key.with.dots", SECRET)
    with pytest.raises(ValueError, match="not an API key id"):
        sign_session("", SECRET)


def test_each_session_has_its_own_csrf_token() -> None:
    first = sign_session("key_0123abcd", SECRET, now=NOW)
    second = sign_session("key_0123abcd", SECRET, now=NOW)
    assert first != second  # a nonce per sign-in
    assert csrf_matches(csrf_token(first, SECRET), first, SECRET)
    assert not csrf_matches(csrf_token(second, SECRET), first, SECRET)


@pytest.mark.parametrize("presented", [None, "", "x" * 32])
def test_a_missing_or_wrong_csrf_token_does_not_match(presented: str | None) -> None:
    cookie = sign_session("key_0123abcd", SECRET, now=NOW)
    assert not csrf_matches(presented, cookie, SECRET)


def test_a_csrf_token_needs_its_binding_and_secret() -> None:
    cookie = sign_session("key_0123abcd", SECRET, now=NOW)
    token = csrf_token(cookie, SECRET)
    assert not csrf_matches(token, None, SECRET)  # no session cookie sent
    assert not csrf_matches(token, cookie, "t" * 40)


def test_session_and_csrf_macs_are_not_interchangeable() -> None:
    cookie = sign_session("key_0123abcd", SECRET, now=NOW)
    payload, mac = cookie.rsplit(".", 1)
    assert csrf_token(payload, SECRET) != mac
    forged = f"{payload}.{csrf_token(payload, SECRET)}"
    assert read_session(forged, SECRET, now=NOW) is None


def test_sign_in_nonces_are_random() -> None:
    nonces = {new_sign_in_nonce() for _ in range(20)}
    assert len(nonces) == 20
