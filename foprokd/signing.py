"""Signed bundles: an Ed25519 signature over ``bundle.json``, so clinic IT can prove a student
folder is the one the service produced, not only that its files are intact.

``bundle.json`` already lists every file's size and sha256 (``foprokd.bundle``), so signing that
one file covers them all. The signature lives beside it in ``bundle.sig.json``; it names the key
(``key_id``, the first 16 hex digits of the sha256 of the raw public key) and carries the public
key for convenience, but verification uses only keys the verifier already trusts (fetched from
the service over TLS, or handed over by its operator): a key inside the folder proves nothing,
since whoever changed the files could have re-signed them with a key of their own.

The private key is a PEM file the service creates on first use (owner-only permissions) in its
data directory, shared by the API (which publishes the public key) and the workers (which sign).
Built on `cryptography`; nothing here is hand-rolled cryptography.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from foprokd.atomic import write_json_atomic
from foprokd.errors import EngineError

SIGNATURE_FILE = "bundle.sig.json"
SIGNATURE_FORMAT = "foprokd-bundle-signature"
ALGORITHM = "ed25519"
SIGNED_FILE = "bundle.json"


class SigningKeyInvalid(EngineError):
    """A signing or public key file that is unreadable or not an Ed25519 key."""


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_pem(public_key: Ed25519PublicKey) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def load_public_key(pem: str | bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM text; ``SigningKeyInvalid`` for anything else."""
    try:
        key = serialization.load_pem_public_key(pem.encode() if isinstance(pem, str) else pem)
    except ValueError as exc:
        raise SigningKeyInvalid(f"not a PEM public key ({exc})") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyInvalid(f"a {type(key).__name__}, not an Ed25519 public key")
    return key


def load_or_create_private_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 key in the PEM file ``path``, created (mode 0600) when there is none.

    Creation is safe against processes racing on a shared data directory: the key is written
    to a temporary file and hard-linked into place, so exactly one key wins and every process
    then reads that one.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".signing-key-")
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, pem)
            os.fsync(fd)
            os.close(fd)
            # Another process may have created it first: then its key is the one.
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise SigningKeyInvalid(f"cannot read the signing key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyInvalid(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def sign_bundle(folder: Path, private_key: Ed25519PrivateKey) -> Path:
    """Sign ``folder/bundle.json`` and write ``folder/bundle.sig.json``; returns its path."""
    content = (folder / SIGNED_FILE).read_bytes()
    public_key = private_key.public_key()
    signature: dict[str, Any] = {
        "format": SIGNATURE_FORMAT,
        "version": 1,
        "algorithm": ALGORITHM,
        "signed_file": SIGNED_FILE,
        "signed_sha256": hashlib.sha256(content).hexdigest(),
        "key_id": key_id(public_key),
        "public_key": public_key_pem(public_key),
        "signature": base64.b64encode(private_key.sign(content)).decode(),
    }
    return write_json_atomic(folder / SIGNATURE_FILE, signature)


@dataclass(frozen=True)
class SignatureCheck:
    passed: bool
    detail: str


def check_signature(folder: Path, trusted: list[Ed25519PublicKey]) -> SignatureCheck:
    """Whether ``bundle.sig.json`` is a valid signature of ``bundle.json`` by one of
    ``trusted`` (the key the signature names). Missing, unreadable, by another key or over
    other content: not passed, with the reason."""
    try:
        record = json.loads((folder / SIGNATURE_FILE).read_text())
    except FileNotFoundError:
        return SignatureCheck(False, "missing: the folder is not signed")
    except (OSError, ValueError) as exc:
        return SignatureCheck(False, f"cannot read it: {exc}")
    if record.get("format") != SIGNATURE_FORMAT or record.get("algorithm") != ALGORITHM:
        return SignatureCheck(False, f"not a {SIGNATURE_FORMAT} file with an {ALGORITHM} key")
    by_id = {key_id(key): key for key in trusted}
    key = by_id.get(str(record.get("key_id")))
    if key is None:
        return SignatureCheck(
            False,
            f"signed by key {record.get('key_id')}, which is not one you trust "
            f"({', '.join(sorted(by_id)) or 'none given'})",
        )
    try:
        content = (folder / SIGNED_FILE).read_bytes()
        key.verify(base64.b64decode(record["signature"], validate=True), content)
    except FileNotFoundError:
        return SignatureCheck(False, f"{SIGNED_FILE} is missing")
    except (InvalidSignature, KeyError, ValueError):
        return SignatureCheck(
            False, f"does not match {SIGNED_FILE}: it was changed after signing, or forged"
        )
    return SignatureCheck(True, f"valid signature of {SIGNED_FILE} by trusted key {key_id(key)}")


def read_public_key_file(path: Path) -> Ed25519PublicKey:
    """A trusted key from ``path``: PEM, or the JSON the service's
    ``GET /.well-known/fopro-signing-key`` answers (``curl ... > key.json``)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise SigningKeyInvalid(f"cannot read the public key {path}: {exc}") from exc
    if text.lstrip().startswith("{"):
        try:
            text = str(json.loads(text)["public_key_pem"])
        except (ValueError, KeyError, TypeError) as exc:
            raise SigningKeyInvalid(f"{path} is JSON without a public_key_pem") from exc
    try:
        return load_public_key(text)
    except SigningKeyInvalid as exc:
        raise SigningKeyInvalid(f"{path}: {exc}") from exc
