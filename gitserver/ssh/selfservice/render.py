"""What a self-service command prints: the REST API's objects as JSON with ``--json``, else
short lines for people. Pure: a :class:`Result` in, text out.

Names a user chose are data: everything printed here is on one line per item, and text a
user wrote (a key's title, a description) has its control characters replaced, so no stored
value can forge extra lines or terminal escapes on someone's screen.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from gitserver import shapes
from gitserver.ssh.selfservice.parse import SelfServiceCommand, help_text
from gitserver.ssh.selfservice.service import Result

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SHORT_COMMIT = 12


def render(command: SelfServiceCommand, result: Result) -> str:
    """The whole of stdout for ``command``."""
    if command.json:
        return shapes.dumps(result.body) + "\n"
    return _TEXT[command.verb](result)


def clean(value: object) -> str:
    """``value`` as one safe line."""
    return _CONTROL.sub("?", "" if value is None else str(value))


def _table(rows: list[list[str]]) -> str:
    """Columns padded to their widest cell; the last column as it is."""
    if not rows:
        return ""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]]).rstrip()
             for row in rows]
    return "\n".join(lines) + "\n"


def _full_name(repo: dict[str, Any]) -> str:
    return f"{repo['tenant']}/{repo['name']}"


def _info(result: Result) -> str:
    user = result.body["user"]
    items = result.body["items"]
    who = (f"{clean(user['tenant'])}/{clean(user['name'])} ({user['role']})" if user
           else "a deploy key")
    head = f"You are {who}; you can reach {len(items)} repositor{'y' if len(items) == 1 else 'ies'}:\n"
    return head + _table([[r["permission"] or "", _full_name(r)] for r in items])


def _repo_list(result: Result) -> str:
    items = result.body["items"]
    if not items:
        return "no repositories you can read\n"
    return _table([[_full_name(r), r["visibility"], clean(r["description"])] for r in items])


def _repo(result: Result) -> str:
    repo = result.body
    fields = [("repository", _full_name(repo)), ("description", clean(repo["description"])),
              ("visibility", repo["visibility"]), ("default branch", clean(repo["default_branch"])),
              ("builds", "enabled" if repo["builds_enabled"] else "disabled"),
              ("size", f"{repo.get('size_bytes', 0)} bytes"),
              ("quota", "none" if repo["quota_bytes"] is None else f"{repo['quota_bytes']} bytes"),
              ("ssh", repo["ssh_url"]), ("http", repo["http_url"])]
    return _table([[f"{name}:", value] for name, value in fields])


def _key_row(key: dict[str, Any], current: int | None) -> list[str]:
    mark = "(this key)" if key["id"] == current else ""
    return [str(key["id"]), key["fingerprint"], key["key_type"], clean(key["title"]), mark]


def _keys_list(result: Result) -> str:
    items = result.body["items"]
    if not items:
        return "no keys\n"
    return _table([_key_row(k, result.key_id) for k in items])


def _keys_add(result: Result) -> str:
    key = result.body
    return f"added key {key['id']}: {key['fingerprint']} {clean(key['title'])}".rstrip() + "\n"


def _keys_remove(result: Result) -> str:
    key = result.body
    return f"removed key {key['id']}: {key['fingerprint']}\n"


def _token_create(result: Result) -> str:
    token = result.body
    expires = token["expires_at"].isoformat() if token["expires_at"] else "never"
    # The secret alone on the last line: TOKEN=$(ssh git@host token create | tail -1).
    return (f"token {token['id']} ({clean(token['name'])}): scopes {', '.join(token['scopes'])}; "
            f"expires {expires}; shown only once:\n{token['token']}\n")


def _pipelines(result: Result) -> str:
    items = result.body["items"]
    if not items:
        return "no pipelines\n"
    return _table([[str(p["id"]), p["status"], p["kind"], clean(p["ref"]), p["commit"][:_SHORT_COMMIT],
                    p["created_at"].isoformat(timespec="seconds")] for p in items])


def _login(result: Result) -> str:
    expires = result.body["expires_at"].isoformat(timespec="seconds")
    # The URL alone on the last line, like token create's secret.
    return f"Open this link in your browser to sign in (once, before {expires}):\n{result.body['url']}\n"


_TEXT: dict[str, Callable[[Result], str]] = {
    "help": lambda _result: help_text(), "info": _info, "repo list": _repo_list,
    "repo info": _repo, "repo create": _repo, "repo describe": _repo, "keys list": _keys_list,
    "keys add": _keys_add, "keys remove": _keys_remove, "token create": _token_create,
    "pipelines": _pipelines, "login": _login,
}
