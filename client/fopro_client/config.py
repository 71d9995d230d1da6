"""Where the client finds the server and its API key: ``FOPRO_URL`` / ``FOPRO_API_KEY``, else the
config file ``fopro login`` writes (``$XDG_CONFIG_HOME/fopro/config.json``, ``~/.config`` when
unset), else the embedded service's default address and no key."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV = "FOPRO_URL"
KEY_ENV = "FOPRO_API_KEY"


class ConfigFileInvalid(ValueError):
    """The config file exists but is not what ``fopro login`` writes."""


@dataclass(frozen=True)
class Connection:
    """A server address and the API key to send it (None: not configured)."""

    url: str
    api_key: str | None


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME/fopro/config.json`` (``~/.config/fopro/config.json`` by default)."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "fopro" / "config.json"


def read_config(path: Path) -> dict[str, str]:
    """The saved ``url`` and ``api_key`` (an empty dict when there is no file)."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigFileInvalid(
            f"{path} is not a readable JSON config ({exc}); run `fopro login` again."
        ) from exc
    if not isinstance(saved, dict) or not all(isinstance(v, str) for v in saved.values()):
        raise ConfigFileInvalid(f"{path} must hold a JSON object of strings; run `fopro login`.")
    return {k: v for k, v in saved.items() if k in ("url", "api_key")}


def write_config(path: Path, connection: Connection) -> None:
    """Save ``connection`` to ``path`` readable by its owner only (0600, folder 0700), replacing
    the old file atomically so a crash never leaves half a key behind."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    body = json.dumps({"url": connection.url, "api_key": connection.api_key}, indent=2) + "\n"
    # mkstemp creates the file 0600 from the start: the key is never readable by others.
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".config.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(body)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def resolve_connection(environ: Mapping[str, str] | None = None) -> Connection:
    """The environment's ``FOPRO_URL``/``FOPRO_API_KEY`` over the config file over defaults.

    A saved key goes only to the server it was saved for, never to another ``FOPRO_URL``.
    """
    env = os.environ if environ is None else environ
    saved = read_config(config_path(env))
    saved_url = saved.get("url", "").rstrip("/")
    url = (env.get(URL_ENV) or saved_url or DEFAULT_URL).rstrip("/")
    key = env.get(KEY_ENV) or (saved.get("api_key") if url == saved_url else None) or None
    return Connection(url, key)
