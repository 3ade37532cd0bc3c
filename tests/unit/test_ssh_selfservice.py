"""The self-service command parser, its output and its rules, as tables (no sockets)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any

import pytest

from gitserver.config import Config
from gitserver.policy.errors import Forbidden, InvalidInput
from gitserver.ssh.commands import is_git_request
from gitserver.ssh.selfservice import SelfService, help_hint, parse
from gitserver.ssh.selfservice.parse import SCOPES, SelfServiceCommand, help_text
from gitserver.ssh.selfservice.render import clean, render
from gitserver.ssh.selfservice.service import LogPiece, Result, check_key_removable, expiry

C = SelfServiceCommand


@pytest.mark.parametrize(("text", "expected"), [
    ("help", C("help")),
    ("info", C("info")),
    ("info --json", C("info", json=True)),
    ("repo list", C("repo list")),
    ("repo list acme --json", C("repo list", json=True, tenant="acme")),
    ("repo info acme/widgets", C("repo info", tenant="acme", repo="widgets")),
    ("repo info '/acme/widgets.git'", C("repo info", tenant="acme", repo="widgets")),
    ("repo info acme/widgets/", C("repo info", tenant="acme", repo="widgets")),
    ("repo create acme/w --visibility public --description 'Our widgets'",
     C("repo create", tenant="acme", repo="w", visibility="public", text="Our widgets")),
    ("repo describe acme/w Our widgets", C("repo describe", tenant="acme", repo="w", text="Our widgets")),
    ("repo describe acme/w -- --not-an-option", C("repo describe", tenant="acme", repo="w", text="--not-an-option")),
    ("repo describe acme/w '$(id); `id`'", C("repo describe", tenant="acme", repo="w", text="$(id); `id`")),
    ("repo describe acme/w ''", C("repo describe", tenant="acme", repo="w", text="")),
    ("keys list --json", C("keys list", json=True)),
    ("keys add --title laptop", C("keys add", text="laptop")),
    ("keys remove 7", C("keys remove", number=7)),
    ("token create", C("token create")),
    ("token create --expires 30 --scope write,read --name ci",
     C("token create", expires_days=30, scopes=("read", "write"), text="ci")),
    ("pipelines acme/w --limit 5 --json", C("pipelines", tenant="acme", repo="w", limit=5, json=True)),
    ("log 12", C("log", number=12)),
    ("login", C("login")),
    ("login --json", C("login", json=True)),
    ("log -f 12", C("log", number=12, follow=True)),
    ("  log   12   -f  ", C("log", number=12, follow=True)),
])
def test_parse_accepts(text: str, expected: SelfServiceCommand) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("", "no command given; try 'help'"),
    ("ls", "unknown command 'ls'; 'help' lists the commands"),
    ("info; id", "unknown command 'info;'; 'help' lists the commands"),
    ("login now", "usage: login [--json]"),
    ("info extra", "usage: info [--json]"),
    ("info\nid", "the command contains a control character"),
    ("info\x00", "the command contains a control character"),
    ("repo info 'acme/w", "cannot split the command: no closing quotation"),
    ("repo", "'repo' needs one of list, info, create, describe"),
    ("repo drop acme/w", "'repo' needs one of list, info, create, describe, not 'drop'"),
    ("repo info $(id)", "'$(id)' is not TENANT/REPO: the repository path must be '<tenant>/<repo>'"),
    ("repo info ../x", "'../x' is not TENANT/REPO: invalid tenant name in path"),
    ("repo info a/b/c", "'a/b/c' is not TENANT/REPO"),
    ("repo info tënant/w", "'tënant/w' is not TENANT/REPO: invalid tenant name"),
    ("repo create acme/w --visibility secret", "--visibility must be one of private, internal, public"),
    ("repo create acme/w --description", "repo create: --description needs a value (TEXT)"),
    ("repo create acme/w --visibility public --visibility private", "repo create: --visibility given twice"),
    ("repo describe acme/w", "usage: repo describe TENANT/REPO TEXT… [--json]"),
    ("keys remove", "usage: keys remove ID [--json]"),
    ("keys remove x", "a key id must be a whole number from 1 to 2147483647, not 'x'"),
    ("keys remove 0", "a key id must be a whole number"),
    ("keys remove 2147483648", "a key id must be a whole number"),
    ("keys remove ١٢", "a key id must be a whole number"),
    ("keys remove 1 2", "usage: keys remove ID [--json]"),
    ("token create --expires 3651", "--expires: a number of days must be a whole number from 1 to 3650"),
    ("token create --scope root", "--scope must be one of read, write, admin, not 'root'"),
    ("token create --scope read,", "--scope must be one of read, write, admin, not ''"),
    ("pipelines acme/w --limit 101", "--limit: a number of pipelines must be a whole number from 1 to 100"),
    ("log 1 --json", "log: unknown option '--json'"),
    ("log --follow 1", "log: unknown option '--follow'"),
    ("help --json", "help: unknown option '--json'"),
    ("repo list " + "x" * 5000, "command too long (5010 characters; at most 4096)"),
])
def test_parse_refuses_with_one_line_naming_the_problem(text: str, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse(text)
    assert caught.value.message.startswith(message)
    assert "\n" not in caught.value.message and len(caught.value.message) < 300


def test_a_long_bad_word_is_named_by_its_start() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse("x" * 1000)
    assert caught.value.message == f"unknown command '{'x' * 40}…'; 'help' lists the commands"


@pytest.mark.parametrize(("text", "git"), [
    ("git-upload-pack 'a/b'", True), ("git upload-pack 'a/b'", True), ("git", True),
    ("git-shell -c id", True), ("gitk", False), ("info", False), ("help", False), ("", False),
])
def test_git_requests_are_told_from_self_service_commands(text: str, git: bool) -> None:
    assert is_git_request(text) is git


def test_help_lists_every_command() -> None:
    text = help_text()
    for verb in ("help", "info", "repo list", "repo info", "repo create", "repo describe",
                 "keys list", "keys add", "keys remove ID", "token create", "pipelines", "log", "login"):
        assert f"\n  {verb}" in text


@pytest.mark.parametrize(("url", "hint"), [
    ("ssh://git@127.0.0.1:2222", "Run 'ssh -p 2222 git@127.0.0.1 help' for the commands you can use here."),
    ("ssh://git@git.example.com", "Run 'ssh git@git.example.com help' for the commands you can use here."),
    ("ssh://git@git.example.com:22/", "Run 'ssh git@git.example.com help' for the commands you can use here."),
])
def test_help_hint_names_the_public_host(url: str, hint: str) -> None:
    assert help_hint(Config(public_ssh_url=url)) == hint


@pytest.mark.parametrize(("key_id", "logged_in", "left", "allowed"), [
    (1, 1, 1, False),  # the key you are logged in with, and your last: never
    (1, 1, 2, True),   # another key remains
    (2, 1, 2, True),   # another key than yours
    (2, None, 1, True),
])
def test_the_last_key_you_are_logged_in_with_stays(key_id: int, logged_in: int | None, left: int,
                                                   allowed: bool) -> None:
    if allowed:
        check_key_removable(key_id, logged_in, left)
    else:
        with pytest.raises(Forbidden, match="logged in with and your last key"):
            check_key_removable(key_id, logged_in, left)


def test_expiry_in_days() -> None:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert expiry(now, None) is None
    assert expiry(now, 30) == dt.datetime(2026, 1, 31, tzinfo=dt.UTC)


def test_text_output_keeps_stored_values_on_one_line() -> None:
    assert clean("a\nb\x1b[2Jc\x00") == "a?b?[2Jc?"
    key = {"id": 3, "fingerprint": "SHA256:x", "key_type": "ssh-ed25519", "title": "evil\nline"}
    out = render(parse("keys list"), Result({"items": [key]}, key_id=3))
    assert out == "3  SHA256:x  ssh-ed25519  evil?line  (this key)\n"


def test_json_output_is_the_api_encoding() -> None:
    when = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    out = render(parse("keys list --json"), Result({"items": [{"id": 1, "created_at": when}]}))
    assert json.loads(out) == {"items": [{"id": 1, "created_at": "2026-01-01T00:00:00+00:00"}]}


def test_token_secret_is_alone_on_the_last_line() -> None:
    body = {"id": 4, "name": "ci", "scopes": list(SCOPES), "expires_at": None, "token": "gst_secret"}
    out = render(parse("token create"), Result(body))
    assert out.splitlines()[-1] == "gst_secret"


class _Stream:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    async def drain(self) -> None:
        return None


class _Channel:
    async def wait_closed(self) -> None:
        await asyncio.get_running_loop().create_future()  # the client never hangs up


class _Process:
    def __init__(self, command: str) -> None:
        self.command = command
        self.stdout = _Stream()
        self.stderr = _Stream()
        self.channel = _Channel()


class _Logs(SelfService):
    """The log as a worker writes it: its last line lands just after the final status."""

    def __init__(self, pieces: list[LogPiece]) -> None:
        super().__init__(runtime=None, follow_interval=0.001)  # type: ignore[arg-type]
        self.pieces = pieces
        self.reads = 0

    def _read_log(self, principal: Any, pipeline_id: int, offset: int) -> LogPiece:
        self.reads += 1
        return self.pieces.pop(0) if len(self.pieces) > 1 else self.pieces[0]


def test_log_follow_reads_once_more_after_the_final_status() -> None:
    service = _Logs([LogPiece(b"line\n", 5, "running"), LogPiece(b"", 5, "running"),
                     LogPiece(b"", 5, "succeeded"), LogPiece(b"*** pipeline succeeded\n", 28, "succeeded"),
                     LogPiece(b"", 28, "succeeded")])
    process = _Process("log 1 -f")
    assert asyncio.run(service.serve(process, None)) == 0  # type: ignore[arg-type]
    assert process.stdout.data == b"line\n*** pipeline succeeded\n" and process.stderr.data == b""


def test_log_without_follow_prints_what_is_there() -> None:
    service = _Logs([LogPiece(b"line\n", 5, "running"), LogPiece(b"", 5, "running")])
    process = _Process("log 1")
    assert asyncio.run(service.serve(process, None)) == 0  # type: ignore[arg-type]
    assert process.stdout.data == b"line\n" and service.reads == 2


def test_a_refusal_is_one_error_line_and_status_1() -> None:
    process = _Process("log x")
    assert asyncio.run(_Logs([]).serve(process, None)) == 1  # type: ignore[arg-type]
    assert process.stderr.data == b"error: a pipeline id must be a whole number from 1 to 2147483647, not 'x'\n"
