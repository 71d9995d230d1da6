from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.core.config import DEV_SECRET, Settings


def test_embedded_defaults_live_in_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "d")
    root = (tmp_path / "d").resolve()
    assert settings.database_url == f"sqlite:///{root / 'fopro.db'}"
    assert settings.broker_url == f"sqla+sqlite:///{root / 'broker.db'}"
    assert settings.storage_url == f"file://{root / 'objects'}"
    assert settings.weights_dir == root / "weights"
    assert settings.uses_sqlite
    assert settings.broker_is_embedded


def test_environment_variables_use_the_fopro_prefix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FOPRO_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("FOPRO_BROKER_URL", "redis://127.0.0.1:6379/3")
    monkeypatch.setenv("FOPRO_MAX_IMAGES", "1234")
    settings = Settings()
    assert settings.broker_url == "redis://127.0.0.1:6379/3"
    assert not settings.broker_is_embedded
    assert settings.max_images == 1234


def test_production_refuses_the_development_secret(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="FOPRO_SECRET_KEY"):
        Settings(env="production", data_dir=tmp_path, secret_key=DEV_SECRET)
    with pytest.raises(ValidationError, match="at least 32"):
        Settings(env="production", data_dir=tmp_path, secret_key="short")
    with pytest.raises(ValidationError, match="FOPRO_GROUP_SALT"):
        Settings(env="production", data_dir=tmp_path, secret_key="x" * 40)
    ok = Settings(env="production", data_dir=tmp_path, secret_key="x" * 40, group_salt="s" * 40)
    assert ok.secret_key == "x" * 40


def test_s3_storage_needs_an_endpoint_and_unknown_schemes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="FOPRO_S3_ENDPOINT"):
        Settings(data_dir=tmp_path, storage_url="s3://bucket")
    with pytest.raises(ValidationError, match="file:// or s3://"):
        Settings(data_dir=tmp_path, storage_url="ftp://host/x")
    Settings(data_dir=tmp_path, storage_url="s3://bucket", s3_endpoint="127.0.0.1:9000")
