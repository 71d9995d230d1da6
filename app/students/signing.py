"""``GET /.well-known/fopro-signing-key``: the public half of the key workers sign each job's
``bundle.json`` with, so clinic IT can check a downloaded student folder came from this service
(``fopro verify-bundle DIR --public-key key.json``). Public by nature, so no API key: it lives
under ``/.well-known/`` (RFC 8615), outside ``/v1``, whose routes all take one."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter
from pydantic import BaseModel, Field

from app.core.routing import ServiceRoute
from app.deps import SettingsDep
from foprokd.signing import (
    ALGORITHM,
    SIGNATURE_FILE,
    key_id,
    load_or_create_private_key,
    public_key_pem,
)

router = APIRouter(tags=["artifacts"], route_class=ServiceRoute)


class SigningKeyOut(BaseModel):
    algorithm: str = Field(examples=[ALGORITHM])
    key_id: str = Field(description="first 16 hex digits of the sha256 of the raw public key")
    public_key_pem: str = Field(description="SubjectPublicKeyInfo PEM")
    signature_file: str = Field(
        examples=[SIGNATURE_FILE], description="the artifact holding a job's bundle signature"
    )


@lru_cache(maxsize=4)
def signing_key_out(path: Path) -> SigningKeyOut:
    public_key = load_or_create_private_key(path).public_key()
    return SigningKeyOut(
        algorithm=ALGORITHM,
        key_id=key_id(public_key),
        public_key_pem=public_key_pem(public_key),
        signature_file=SIGNATURE_FILE,
    )


@router.get("/.well-known/fopro-signing-key")
def read_signing_key(settings: SettingsDep) -> SigningKeyOut:
    """The service's bundle-signing public key (created with the private key on first use)."""
    assert settings.bundle_signing_key is not None  # filled by Settings
    return signing_key_out(settings.bundle_signing_key)
