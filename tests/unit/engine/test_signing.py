"""Bundle signatures: a folder signed by the service verifies with its public key alone, and
fails when bundle.json changed, when another key signed it, or when it is not signed."""

from __future__ import annotations

import json
import multiprocessing
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from foprokd.signing import (
    SIGNATURE_FILE,
    SigningKeyInvalid,
    check_signature,
    key_id,
    load_or_create_private_key,
    public_key_pem,
    read_public_key_file,
    sign_bundle,
)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    out = tmp_path / "student"
    out.mkdir()
    bundle = {"format": "foprokd-bundle", "files": {"student.onnx": {"sha256": "ab" * 32}}}
    (out / "bundle.json").write_text(json.dumps(bundle, indent=2))
    return out


def test_a_signed_bundle_verifies_with_the_signers_public_key(folder: Path) -> None:
    key = Ed25519PrivateKey.generate()
    sign_bundle(folder, key)
    record = json.loads((folder / SIGNATURE_FILE).read_text())
    assert record["key_id"] == key_id(key.public_key())
    check = check_signature(folder, [Ed25519PrivateKey.generate().public_key(), key.public_key()])
    assert check.passed, check.detail


def test_a_changed_bundle_json_fails(folder: Path) -> None:
    key = Ed25519PrivateKey.generate()
    sign_bundle(folder, key)
    bundle = json.loads((folder / "bundle.json").read_text())
    bundle["files"]["student.onnx"]["sha256"] = "cd" * 32  # a swapped model's hash
    (folder / "bundle.json").write_text(json.dumps(bundle, indent=2))
    check = check_signature(folder, [key.public_key()])
    assert not check.passed
    assert "changed after signing" in check.detail


def test_a_bundle_re_signed_with_another_key_fails_even_though_it_carries_that_key(
    folder: Path,
) -> None:
    service, attacker = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    sign_bundle(folder, attacker)  # the embedded public key is the attacker's
    check = check_signature(folder, [service.public_key()])
    assert not check.passed
    assert "not one you trust" in check.detail


def test_an_unsigned_or_garbled_signature_fails(folder: Path) -> None:
    key = Ed25519PrivateKey.generate()
    assert "not signed" in check_signature(folder, [key.public_key()]).detail
    sign_bundle(folder, key)
    record = json.loads((folder / SIGNATURE_FILE).read_text())
    record["signature"] = "not base64!"
    (folder / SIGNATURE_FILE).write_text(json.dumps(record))
    assert not check_signature(folder, [key.public_key()]).passed


def test_the_key_is_created_once_owner_only_and_then_reused(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "signing.pem"
    first = load_or_create_private_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = load_or_create_private_key(path)
    assert key_id(first.public_key()) == key_id(again.public_key())
    assert [p.name for p in path.parent.iterdir()] == ["signing.pem"]  # no temporary left


def _create(path: str) -> str:
    return key_id(load_or_create_private_key(Path(path)).public_key())


def test_processes_racing_to_create_the_key_all_get_the_same_one(tmp_path: Path) -> None:
    path = str(tmp_path / "signing.pem")
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        ids = pool.map(_create, [path] * 8)
    assert len(set(ids)) == 1


def test_a_broken_key_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "signing.pem"
    path.write_text("not a key")
    with pytest.raises(SigningKeyInvalid, match="cannot read the signing key"):
        load_or_create_private_key(path)


def test_a_trusted_key_reads_from_pem_or_from_the_services_json(tmp_path: Path) -> None:
    public = Ed25519PrivateKey.generate().public_key()
    pem, answer = tmp_path / "key.pem", tmp_path / "key.json"
    pem.write_text(public_key_pem(public))
    answer.write_text(
        json.dumps({"key_id": key_id(public), "public_key_pem": public_key_pem(public)})
    )
    assert key_id(read_public_key_file(pem)) == key_id(public)
    assert key_id(read_public_key_file(answer)) == key_id(public)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(SigningKeyInvalid, match="public_key_pem"):
        read_public_key_file(tmp_path / "bad.json")
    (tmp_path / "bad.pem").write_text("-----BEGIN PUBLIC KEY-----\nxx\n-----END PUBLIC KEY-----\n")
    with pytest.raises(SigningKeyInvalid):
        read_public_key_file(tmp_path / "bad.pem")
