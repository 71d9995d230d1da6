"""Where the server and key come from, and the config file ``fopro login`` writes."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from fopro_client import FoproClient
from fopro_client.config import (
    DEFAULT_URL,
    ConfigFileInvalid,
    Connection,
    config_path,
    resolve_connection,
    write_config,
)


def test_the_config_file_honours_xdg_config_home(tmp_path: Path) -> None:
    assert config_path({"XDG_CONFIG_HOME": str(tmp_path)}) == tmp_path / "fopro" / "config.json"
    assert config_path({}) == Path.home() / ".config" / "fopro" / "config.json"


def test_the_saved_key_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "cfg" / "fopro" / "config.json"
    write_config(path, Connection("http://a.test", "fpk_one"))
    write_config(path, Connection("http://b.test", "fpk_two"))  # replaced, not appended
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["config.json"]  # no temp file left
    env = {"XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    assert resolve_connection(env) == Connection("http://b.test", "fpk_two")


def test_environment_overrides_the_file_and_defaults_fill_the_rest(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    assert resolve_connection(env) == Connection(DEFAULT_URL, None)
    write_config(config_path(env), Connection("http://saved.test", "fpk_saved"))
    assert resolve_connection({**env, "FOPRO_API_KEY": "fpk_env"}) == Connection(
        "http://saved.test", "fpk_env"
    )
    assert resolve_connection({**env, "FOPRO_URL": "http://saved.test/"}).api_key == "fpk_saved"


def test_a_saved_key_is_never_sent_to_another_server(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    write_config(config_path(env), Connection("http://hospital.test", "fpk_saved"))
    assert resolve_connection({**env, "FOPRO_URL": "http://elsewhere.test"}) == Connection(
        "http://elsewhere.test", None
    )


@pytest.mark.parametrize("text", ["not json", '["a"]', '{"url": 5}'])
def test_a_broken_config_file_is_a_clear_error(tmp_path: Path, text: str) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    config_path(env).parent.mkdir(parents=True)
    config_path(env).write_text(text)
    with pytest.raises(ConfigFileInvalid, match="fopro login"):
        resolve_connection(env)


def test_a_client_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.setenv("FOPRO_URL", "http://hospital.test:8000/")
    monkeypatch.setenv("FOPRO_API_KEY", "fpk_env")
    with FoproClient.from_environment() as client:
        assert client.base_url == "http://hospital.test:8000"
        assert client._http.headers["Authorization"] == "Bearer fpk_env"
