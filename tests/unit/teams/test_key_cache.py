"""``FOPRO_KEY_CACHE_SECONDS``: a key resolved recently is answered from memory, without its row;
expiry still holds at once, a revoke or rotation through this process's API forgets the key at
once, and one made elsewhere (straight in the database, as another API process or `fopro admin`
would) is seen once the entry ages out."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event
from sqlalchemy.orm import Session

from app.core.db import get_engine, utcnow
from app.core.errors import Unauthenticated
from app.core.security import issue_api_key
from app.teams import service
from app.teams.models import ApiKey
from app.teams.service import KeyCache, authenticate
from tests.unit.teams.conftest import TeamKeys, add_key, auth, override_settings


class _KeyReads:
    """Counts the key lookups (SELECTs of api_keys by digest) on the service's engine."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "api_keys.digest =" in statement:
            self.count += 1


@pytest.fixture
def key_reads() -> Iterator[_KeyReads]:
    reads = _KeyReads()
    engine = get_engine()
    event.listen(engine, "before_cursor_execute", reads)
    yield reads
    event.remove(engine, "before_cursor_execute", reads)


@pytest.fixture
def cached(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each test starts with empty caches of its own.
    monkeypatch.setattr(service, "_caches", {})
    override_settings(monkeypatch, key_cache_seconds="30")


def test_without_the_setting_every_request_reads_the_key(
    client: TestClient, team: TeamKeys, key_reads: _KeyReads
) -> None:
    for _ in range(3):
        assert client.get("/v1/me", headers=auth(team.viewer)).status_code == 200
    assert key_reads.count == 3


def test_with_the_setting_a_key_is_read_once(
    client: TestClient, team: TeamKeys, key_reads: _KeyReads, cached: None
) -> None:
    for _ in range(3):
        assert client.get("/v1/me", headers=auth(team.viewer)).status_code == 200
    assert key_reads.count == 1
    # An unknown key is never cached: each attempt is read, and each is refused.
    for _ in range(2):
        unknown = client.get("/v1/me", headers=auth(issue_api_key("another").plaintext))
        assert unknown.status_code == 401
    assert key_reads.count == 3


def test_a_revoke_through_the_api_takes_effect_at_once(
    client: TestClient, session: Session, team: TeamKeys, cached: None
) -> None:
    key, plaintext = add_key(session, team.id)
    assert client.get("/v1/me", headers=auth(plaintext)).status_code == 200
    assert client.delete(f"/v1/keys/{key.id}", headers=auth(team.admin)).status_code == 200
    refused = client.get("/v1/me", headers=auth(plaintext))
    assert refused.status_code == 401
    assert "revoked" in refused.json()["error"]["message"]


def test_a_rotation_through_the_api_ends_the_old_key_on_time(
    client: TestClient, session: Session, team: TeamKeys, cached: None
) -> None:
    key, plaintext = add_key(session, team.id)
    assert client.get("/v1/me", headers=auth(plaintext)).status_code == 200
    rotated = client.post(
        f"/v1/keys/{key.id}/rotate", headers=auth(team.admin), json={"old_key_grace_s": 0}
    )
    assert rotated.status_code == 201, rotated.text
    refused = client.get("/v1/me", headers=auth(plaintext))
    assert refused.status_code == 401
    assert "rotated" in refused.json()["error"]["message"]
    assert client.get("/v1/me", headers=auth(rotated.json()["key"])).status_code == 200


def test_a_cached_key_that_expires_is_refused_at_once(
    session: Session, team: TeamKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.core.config import get_settings

    cache = KeyCache(ttl=60)
    ends = utcnow() + timedelta(seconds=30)
    key, plaintext = add_key(session, team.id, expires_at=ends)
    secret = get_settings().secret_key
    assert authenticate(session, plaintext, secret, cache).key_id == key.id
    monkeypatch.setattr(service, "utcnow", lambda: ends + timedelta(seconds=1))
    with pytest.raises(Unauthenticated, match="expired at"):
        authenticate(session, plaintext, secret, cache)


def test_a_revoke_made_elsewhere_is_seen_when_the_entry_ages_out(
    session: Session, team: TeamKeys
) -> None:
    from app.core.config import get_settings

    now = [0.0]
    cache = KeyCache(ttl=5, timer=lambda: now[0])
    key, plaintext = add_key(session, team.id)
    secret = get_settings().secret_key
    first = authenticate(session, plaintext, secret, cache)
    assert first.key_id == key.id

    session.get_one(ApiKey, key.id).revoked_at = utcnow()  # another process's revoke
    session.commit()
    now[0] = 4.9
    assert authenticate(session, plaintext, secret, cache).key_id == key.id  # still cached
    now[0] = 5.1
    with pytest.raises(Unauthenticated, match="revoked"):
        authenticate(session, plaintext, secret, cache)


def test_the_cache_holds_digests_not_keys_and_is_bounded(session: Session, team: TeamKeys) -> None:
    from app.core.config import get_settings

    cache = KeyCache(ttl=60, maxsize=2)
    secret = get_settings().secret_key
    plaintexts = [add_key(session, team.id)[1] for _ in range(3)]
    for plaintext in plaintexts:
        authenticate(session, plaintext, secret, cache)
    held = list(cache._entries.keys())
    assert len(held) == 2
    assert not any(plaintext in digest for plaintext in plaintexts for digest in held)
