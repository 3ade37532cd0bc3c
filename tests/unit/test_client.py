"""The CLI's REST client without a server: exit codes, rendering, the command table against
the API's own OpenAPI document, credentials on disk, and argument handling."""

from __future__ import annotations

import argparse
import json
import re
import stat
from pathlib import Path
from typing import Any

import pytest

from gitserver.api import openapi
from gitserver.cli import build_parser
from gitserver.client import commands, credentials, render
from gitserver.client.errors import ClientError, error_message, exit_code
from gitserver.client.repositories import quota_bytes
from gitserver.client.spec import API, BODY_METHODS, Command, Context, resolve_path, run
from gitserver.client.transport import Reply
from gitserver.cmd import wiring


@pytest.mark.parametrize(("status", "code"), [
    (200, 0), (201, 0), (204, 0), (400, 1), (405, 1), (409, 1), (422, 1), (500, 1), (503, 1),
    (404, 3), (401, 4), (403, 4)])
def test_exit_codes(status: int, code: int) -> None:
    assert exit_code(status) == code
    assert ClientError("x", status).exit_code == (code or 0)


def test_error_message_prefers_the_description_and_never_shows_html() -> None:
    assert error_message(404, {"title": "Not Found", "description": "user a/b not found"}, "") == "user a/b not found"
    assert error_message(403, {"title": "Forbidden"}, "") == "Forbidden"
    assert error_message(502, None, "<html>bad gateway</html>") == "HTTP 502 Bad Gateway"
    assert error_message(500, None, "boom\nmore") == "HTTP 500 Internal Server Error: boom"


def test_table_aligns_columns_and_marks_empty_cells() -> None:
    items = [{"id": 1, "name": "alice", "disabled": False, "scopes": ["read", "write"], "note": None},
             {"id": 12, "name": "bo", "disabled": True, "scopes": [], "note": "line\nbreak"}]
    assert render.table(items, ("id", "name", "disabled", "scopes", "note")).splitlines() == [
        "ID  NAME   DISABLED  SCOPES      NOTE",
        "1   alice  no        read,write  -",
        "12  bo     yes       -           line break"]


def test_table_cells_are_cut_but_fields_are_whole() -> None:
    long = "x" * 100
    row = render.table([{"d": long, "e": 1}], ("d", "e")).splitlines()[1]
    assert len(row.split()[0]) == render.MAX_CELL and row.split()[0].endswith("…")
    assert render.fields({"description": long, "id": 3}) == f"description: {long}\nid:          3"
    assert render.fields({"ref_updates": [{"ref": "r"}]}) == 'ref_updates: [{"ref": "r"}]'


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return openapi.OpenApiDocument(wiring.route_modules()).document()


def operation(doc: dict[str, Any], method: str, path: str) -> dict[str, Any] | None:
    """The OpenAPI operation whose path template matches the concrete ``path``."""
    for template, item in doc["paths"].items():
        if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", template), path):
            return item.get(method.lower())
    return None


@pytest.mark.parametrize("cmd", [c for c in commands.COMMANDS if c.resource != "rules"],
                         ids=lambda c: f"{c.resource} {c.verb}")
def test_every_command_is_an_operation_of_the_api_and_sends_only_its_fields(
        cmd: Command, document: dict[str, Any]) -> None:
    # rules: its endpoint lands separately; the functional test checks it when it is there.
    args = argparse.Namespace(**{a.name: "x" for a in cmd.args})
    vars(args).update(owner="x/x")
    if cmd.resource == "grant":
        args.group = None  # --user or --group: the user's form
    path = resolve_path(cmd, args)
    found = operation(document, cmd.method, path)
    assert found is not None, f"{cmd.method} {path} is not in the OpenAPI document"
    fields = {a.field for a in cmd.args if a.field}
    if cmd.method in BODY_METHODS and fields:
        ref = found["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        schema = document["components"]["schemas"][ref.rsplit("/", 1)[1]]
        assert fields <= set(schema["properties"]), fields - set(schema["properties"])


@pytest.mark.parametrize(("text", "value"), [("1048576", 1 << 20), ("500M", 500 << 20), ("10G", 10 << 30),
                                             ("2k", 2048), ("1GiB", 1 << 30), ("none", None)])
def test_quota_sizes(text: str, value: int | None) -> None:
    assert quota_bytes(text) == value


@pytest.mark.parametrize("text", ["", "-1", "10X", "1.5G", "lots"])
def test_bad_quota_sizes_are_usage_errors(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        quota_bytes(text)


def test_path_segments_are_quoted_whole() -> None:
    cmd = next(c for c in commands.COMMANDS if (c.resource, c.verb) == ("user", "show"))
    args = argparse.Namespace(tenant="acme", user="../../x?y#z")
    assert resolve_path(cmd, args) == f"{API}/tenants/acme/users/..%2F..%2Fx%3Fy%23z"


def test_the_verbless_grant_is_grant_create() -> None:
    assert commands.legacy_argv(["grant", "t", "r", "write", "--user", "u"])[:2] == ["grant", "create"]
    assert commands.legacy_argv(["--url", "http://x", "grant", "list", "t", "r"]) == \
        ["--url", "http://x", "grant", "list", "t", "r"]
    args = build_parser().parse_args(commands.legacy_argv(["grant", "t", "r", "write", "--user", "u"]))
    assert (args.command_spec.verb, args.permission, args.user) == ("create", "write", "u")


def test_every_resource_of_the_contract_has_its_verbs() -> None:
    verbs = {(c.resource, c.verb) for c in commands.COMMANDS}
    assert {c.resource for c in commands.COMMANDS} == set(commands.RESOURCES)
    for resource in set(commands.RESOURCES) - {"push", "quota", "rules"}:
        assert {(resource, "list"), (resource, "show")} <= verbs, resource
    assert ("repo", "remove") not in verbs  # repositories are never deleted


def test_credentials_are_0600_in_a_0700_dir_under_xdg(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path / "cfg"), "HOME": str(tmp_path / "home")}
    path = credentials.credentials_path(env)
    assert path == tmp_path / "cfg" / "gitserver" / "credentials.json"
    assert credentials.credentials_path({"XDG_CONFIG_HOME": "relative", "HOME": str(tmp_path)}) == \
        tmp_path / ".config" / "gitserver" / "credentials.json"
    credentials.save("https://a", "gst_1", path)
    credentials.save("https://b", "gst_2", path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert credentials.token_for("https://a", path) == "gst_1"
    assert credentials.forget("https://a", path) and not credentials.forget("https://a", path)
    assert credentials.load_all(path) == {"https://b": "gst_2"}
    path.write_text("[]")
    with pytest.raises(ClientError, match="not a gitserver credentials file"):
        credentials.load_all(path)


def test_a_credentials_dir_made_open_by_someone_else_is_closed_on_save(tmp_path: Path) -> None:
    """``mkdir -p ~/.config/gitserver`` under a 022 umask leaves it 0755: the next save makes
    it 0700 (the file inside is 0600 anyway, but its name and age would show)."""
    path = tmp_path / "gitserver" / "credentials.json"
    path.parent.mkdir(mode=0o755)
    credentials.save("https://a", "gst_1", path)
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


class FakeApi:
    """An in-memory :class:`~gitserver.client.transport.Transport`: answers by (method, path),
    and records every request."""

    def __init__(self, answers: dict[tuple[str, str], list[Reply]]) -> None:
        self.answers = answers
        self.sent: list[tuple[str, str, Any, dict[str, str]]] = []

    def request(self, method: str, path: str, *, body: Any = None, params: Any = None) -> Reply:
        self.sent.append((method, path, body, dict(params or {})))
        return self.answers[(method, path)].pop(0)

    def close(self) -> None:
        pass


def _json(status: int, value: Any) -> Reply:
    return Reply(status, {"content-type": "application/json"}, json.dumps(value))


def _run(argv: list[str], api: FakeApi, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    args = build_parser().parse_args(argv)
    args.url = None
    code = run(args.command_spec, args, Context(connect=lambda: api, remote=True))
    return code, capsys.readouterr().out


def test_a_listing_follows_the_cursor_to_the_end(capsys: pytest.CaptureFixture[str]) -> None:
    path = f"{API}/tenants/acme/users"
    api = FakeApi({("GET", path): [_json(200, {"items": [{"name": "b"}], "next": "c1"}),
                                   _json(200, {"items": [{"name": "a"}], "next": None})]})
    code, out = _run(["user", "list", "acme", "--json"], api, capsys)
    assert code == 0 and json.loads(out) == {"items": [{"name": "b"}, {"name": "a"}], "next": None}
    assert [sent[3] for sent in api.sent] == [{"limit": "100"}, {"limit": "100", "cursor": "c1"}]


def test_a_listing_stops_at_the_limit(capsys: pytest.CaptureFixture[str]) -> None:
    path = f"{API}/tenants/acme/users"
    api = FakeApi({("GET", path): [_json(200, {"items": [{"name": "b"}, {"name": "a"}], "next": "c1"})]})
    code, out = _run(["user", "list", "acme", "--limit", "2"], api, capsys)
    assert code == 0 and out.splitlines()[1:] == ["b     -     -         -", "a     -     -         -"]
    assert api.sent[0][3] == {"limit": "2"}


def test_an_update_sends_only_what_was_given_and_refuses_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    path = f"{API}/tenants/acme/users/bob"
    api = FakeApi({("PATCH", path): [_json(200, {"name": "bob", "disabled": True})]})
    code, out = _run(["user", "update", "acme", "bob", "--disable"], api, capsys)
    assert code == 0 and api.sent[0][2] == {"disabled": True}
    assert out == "name:     bob\ndisabled: yes\n"
    with pytest.raises(ClientError, match="nothing to change; give --role, --disable, --enable"):
        _run(["user", "update", "acme", "bob"], api, capsys)


def test_an_error_answer_is_a_client_error_with_its_status(capsys: pytest.CaptureFixture[str]) -> None:
    path = f"{API}/tenants/acme/repos/nope"
    error = {"title": "Not Found", "description": "repository acme/nope not found"}
    api = FakeApi({("GET", path): [_json(404, error)]})
    with pytest.raises(ClientError) as caught:
        _run(["repo", "show", "acme", "nope"], api, capsys)
    assert (caught.value.message, caught.value.exit_code) == ("repository acme/nope not found", 3)
