from __future__ import annotations

from app.core.security import (
    issue_api_key,
    key_digest,
    looks_like_api_key,
    sign_download,
    verify_download,
)


def test_issued_key_is_stored_only_as_a_keyed_digest() -> None:
    issued = issue_api_key("server-secret")
    assert looks_like_api_key(issued.plaintext)
    assert issued.plaintext.startswith(issued.prefix + "_")
    assert issued.digest == key_digest(issued.plaintext, "server-secret")
    assert issued.plaintext not in issued.digest
    # The digest depends on the server secret: a stolen table is useless without it.
    assert key_digest(issued.plaintext, "other-secret") != issued.digest
    assert issue_api_key("server-secret").plaintext != issued.plaintext


def test_download_tokens_expire_and_resist_tampering() -> None:
    token = sign_download("teams/t1/jobs/j1/student.onnx", "s3cret", ttl_s=60, now=1000.0)
    assert verify_download(token, "s3cret", now=1059.0) == "teams/t1/jobs/j1/student.onnx"
    assert verify_download(token, "s3cret", now=1061.0) is None
    assert verify_download(token, "wrong", now=1001.0) is None
    forged = sign_download("teams/t2/secret.bin", "guess", ttl_s=60, now=1000.0)
    assert verify_download(forged, "s3cret", now=1001.0) is None
    assert verify_download("not-a-token", "s3cret") is None


def test_every_download_token_verifies_whatever_bytes_its_mac_holds() -> None:
    # The MAC is binary; about one token in thirteen holds a byte that looks like a separator.
    # A failed CI run came from such a token, so check many of them, including those.
    for n in range(2000):
        grant = f"art_{n:020x}"
        token = sign_download(grant, "s3cret", ttl_s=60, now=1000.0 + n)
        assert verify_download(token, "s3cret", now=1000.0 + n) == grant, (n, token)


def test_truncated_or_padded_tokens_are_refused() -> None:
    token = sign_download("art_1", "s3cret", ttl_s=60, now=1000.0)
    assert verify_download(token[:-4], "s3cret", now=1001.0) is None
    assert verify_download(token + "AAAA", "s3cret", now=1001.0) is None
    assert verify_download("", "s3cret", now=1001.0) is None
    assert verify_download("AAAA", "s3cret", now=1001.0) is None
