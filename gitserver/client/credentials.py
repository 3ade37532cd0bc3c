"""Tokens stored by ``gitserver login``: one per server URL, in the user's config dir (XDG).

The file is ``$XDG_CONFIG_HOME/gitserver/credentials.json`` (``~/.config/…`` without the
variable), mode 0600 in a 0700 directory, written to a temporary file and renamed so a crash
never leaves half a file or a moment where another user could read it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from gitserver.client.errors import ClientError

APP_DIR = "gitserver"
FILE_NAME = "credentials.json"
FILE_MODE = 0o600
DIR_MODE = 0o700


def config_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME/gitserver``; the XDG spec says a relative value is to be ignored."""
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path(env.get("HOME") or Path.home()) / ".config"
    return root / APP_DIR


def credentials_path(env: Mapping[str, str] | None = None) -> Path:
    return config_dir(env) / FILE_NAME


def load_all(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ClientError(f"cannot read {path}: {exc}; remove it and log in again") from exc
    servers = data.get("servers") if isinstance(data, dict) else None
    if not isinstance(servers, dict):
        raise ClientError(f"{path} is not a gitserver credentials file; remove it and log in again")
    return {url: entry["token"] for url, entry in servers.items()
            if isinstance(entry, dict) and isinstance(entry.get("token"), str)}


def token_for(url: str, path: Path | None = None) -> str | None:
    return load_all(path or credentials_path()).get(url)


def write_all(path: Path, tokens: Mapping[str, str]) -> None:
    path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.chmod(path.parent, DIR_MODE)  # mkdir's mode is cut by the umask, and an older dir kept its own
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{FILE_NAME}.")
    try:
        os.fchmod(fd, FILE_MODE)  # mkstemp makes it 0600 already; say so, whatever the umask
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"servers": {url: {"token": token} for url, token in sorted(tokens.items())}}, fh, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(url: str, token: str, path: Path | None = None) -> Path:
    path = path or credentials_path()
    write_all(path, {**load_all(path), url: token})
    return path


def forget(url: str, path: Path | None = None) -> bool:
    """Drop ``url``'s token; False when there was none."""
    path = path or credentials_path()
    tokens = load_all(path)
    if url not in tokens:
        return False
    del tokens[url]
    write_all(path, tokens)
    return True
