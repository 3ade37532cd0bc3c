"""The ``gitserver`` CLI as a REST client: the real command, as a subprocess with ``--url``,
against a real server (SQLite and PostgreSQL), and its local form on the same data dir."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.functional.conftest import GitServer, unique
from tests.functional.test_pipelines import push, setup_repo, wait_pipeline

EXIT_ERROR, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_NOT_ALLOWED = 1, 2, 3, 4


class Remote:
    """``gitserver --url URL …`` from an environment without the server's settings: what it
    knows of the server is the URL and the token (``GITSERVER_TOKEN``, or a stored login)."""

    def __init__(self, server: GitServer, home: Path, token: str | None) -> None:
        self.server = server
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("GITSERVER_")}
        self.env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / "config"), PYTHONPATH=server.env.get(
            "PYTHONPATH", ""))
        if token is not None:
            self.env["GITSERVER_TOKEN"] = token

    def run(self, *args: str, input: str | None = None, url: str | None = None) -> subprocess.CompletedProcess[str]:
        argv = [self.server.python, "-m", "gitserver", "--url", url or self.server.http_url, *args]
        result = subprocess.run(argv, env=self.env, text=True, capture_output=True, input=input, timeout=120,
                                cwd=self.server.cwd)
        assert "Traceback" not in result.stderr, result.stderr
        return result

    def ok(self, *args: str, input: str | None = None) -> str:
        result = self.run(*args, input=input)
        assert result.returncode == 0, f"gitserver {' '.join(args)}: {result.returncode} {result.stderr}"
        return result.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json"))

    def fails(self, code: int, *args: str, input: str | None = None, url: str | None = None) -> str:
        result = self.run(*args, input=input, url=url)
        assert result.returncode == code, f"gitserver {' '.join(args)}: {result.returncode} {result.stderr}"
        assert result.stdout == "" and len(result.stderr.splitlines()) == 1, result.stderr
        return result.stderr


@pytest.fixture
def remote(server: GitServer, tmp_path: Path) -> Remote:
    return Remote(server, tmp_path / "home", server.admin_token)


def test_login_stores_the_token_0600_and_logout_forgets_it(server: GitServer, tmp_path: Path) -> None:
    cli = Remote(server, tmp_path / "home", token=None)
    assert "not logged in" in cli.fails(EXIT_NOT_ALLOWED, "tenant", "list")
    # A token the server refuses is not stored.
    assert "token" in cli.fails(EXIT_NOT_ALLOWED, "login", server.http_url, input="gst_wrong\n")
    stored = tmp_path / "home" / "config" / "gitserver" / "credentials.json"
    assert not stored.exists()

    assert "logged in" in cli.ok("login", server.http_url + "/", input=server.admin_token + "\n")
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert stat.S_IMODE(stored.parent.stat().st_mode) == 0o700
    tenant = server.new_tenant()
    assert tenant in cli.ok("tenant", "list")
    assert cli.ok("logout") == f"logged out of {server.http_url}\n"
    assert "not logged in" in cli.fails(EXIT_NOT_ALLOWED, "tenant", "list")


def test_people_resources_every_verb(server: GitServer, remote: Remote, tmp_path: Path) -> None:
    tenant = unique("t")
    assert remote.ok("tenant", "create", tenant, "--description", "Remote") == f"tenant {tenant} created\n"
    assert remote.json("tenant", "show", tenant)["description"] == "Remote"
    remote.ok("tenant", "update", tenant, "--description", "Changed")
    assert tenant in remote.ok("tenant", "list") and "Changed" in remote.ok("tenant", "show", tenant)

    assert remote.ok("user", "create", tenant, "ann", "--role", "admin") == f"user {tenant}/ann created (admin)\n"
    remote.ok("user", "create", tenant, "bob")
    table = remote.ok("user", "list", tenant).splitlines()
    assert table[0].split() == ["NAME", "ROLE", "DISABLED", "CREATED_AT"]
    assert [row.split()[:3] for row in table[1:]] == [["ann", "admin", "no"], ["bob", "member", "no"]]
    assert remote.json("user", "update", tenant, "bob", "--disable")["disabled"] is True
    assert remote.json("user", "update", tenant, "bob", "--enable")["disabled"] is False
    assert remote.ok("user", "remove", tenant, "bob") == f"user {tenant}/bob disabled\n"
    assert remote.json("user", "show", tenant, "bob")["disabled"] is True

    key_path, public = server.new_key()
    line = remote.ok("key", "add", tenant, "ann", str(key_path.with_suffix(".pub")))
    keys = remote.json("key", "list", tenant, "ann")["items"]
    assert keys[0]["fingerprint"] in line and keys[0]["key"] == public
    assert remote.json("key", "show", tenant, "ann", str(keys[0]["id"])) == keys[0]
    assert "already registered" in remote.fails(EXIT_ERROR, "key", "create", tenant, "ann", "-", input=public)
    authorized = tmp_path / "authorized_keys"
    authorized.write_text(server.new_key()[1] + "\nssh-rsa AAAAB3NzaC1yc2E= short\n")
    imported = remote.run("key", "import", tenant, "ann", str(authorized))
    assert imported.returncode == EXIT_ERROR and f"{authorized}:2: refused" in imported.stderr
    assert remote.ok("key", "import", tenant, "ann", "-", input=server.new_key()[1]) == \
        f"imported 1 of 1 keys for {tenant}/ann\n"
    assert remote.ok("key", "remove", tenant, "ann", str(keys[0]["id"])) == \
        f"key {keys[0]['id']} of {tenant}/ann removed\n"
    assert "not found" in remote.fails(EXIT_NOT_FOUND, "key", "show", tenant, "ann", str(keys[0]["id"]))

    remote.ok("group", "create", tenant, "devs", "--description", "Developers")
    remote.ok("group", "update", tenant, "devs", "--description", "Devs")
    assert remote.json("group", "show", tenant, "devs")["description"] == "Devs"
    remote.ok("group", "add-member", tenant, "devs", "ann")
    assert [u["name"] for u in remote.json("group", "members", tenant, "devs")["items"]] == ["ann"]
    remote.ok("group", "remove-member", tenant, "devs", "ann")
    assert remote.json("group", "members", tenant, "devs")["items"] == []
    assert [g["name"] for g in remote.json("group", "list", tenant)["items"]] == ["devs"]
    remote.ok("group", "remove", tenant, "devs")
    assert remote.ok("group", "list", tenant) == "no groups\n"

    secret = remote.ok("token", "create", "--tenant", tenant, "--user", "ann", "--name", "ci", "--scope", "read",
                       "--expires", "2").strip()
    assert secret.startswith("gst_") and len(secret.splitlines()) == 1
    token = remote.json("token", "list", tenant, "ann")["items"][0]
    assert token["name"] == "ci" and token["scopes"] == ["read"] and token["expires_at"]
    assert remote.json("token", "show", tenant, "ann", str(token["id"]))["revoked_at"] is None
    remote.ok("token", "remove", tenant, "ann", str(token["id"]))
    assert remote.json("token", "show", tenant, "ann", str(token["id"]))["revoked_at"] is not None
    assert server.api("GET", "/api/v1/tenants", token=secret).status_code == 401
    assert "server host" in remote.fails(EXIT_ERROR, "token", "create", "--site-admin")


def test_repository_resources_every_verb(server: GitServer, remote: Remote, git_env: dict[str, str],
                                         tmp_path: Path) -> None:
    tenant, repo, user, work = setup_repo(server, git_env, tmp_path)
    pid = push(server, user, work, "HEAD:refs/heads/main")
    wait_pipeline(server, pid)
    other = remote.ok("repo", "create", tenant, "tools", "--description", "Tools", "--visibility", "internal")
    assert other == f"repository {tenant}/tools created: {server.ssh_base}/{tenant}/tools.git\n"
    assert {r["name"] for r in remote.json("repo", "list", tenant)["items"]} == {repo, "tools"}
    changed = remote.json("repo", "update", tenant, "tools", "--description", "New", "--builds")
    assert changed["description"] == "New" and changed["builds_enabled"] is True
    assert remote.json("repo", "show", tenant, "tools") | {"size_bytes": 0} == changed | {"size_bytes": 0}
    assert "nothing to change" in remote.fails(EXIT_ERROR, "repo", "update", tenant, "tools")
    assert remote.run("repo", "remove", tenant, "tools").returncode == EXIT_USAGE  # never: history is kept

    member = server.new_user(tenant)
    # The form before the verbs still works.
    assert remote.ok("grant", tenant, "tools", "read", "--user", member.name) == \
        f"user {member.name} has read on {tenant}/tools\n"
    remote.ok("grant", "update", tenant, "tools", "write", "--user", member.name)
    assert remote.json("grant", "show", tenant, "tools", "--user", member.name)["permission"] == "write"
    assert [g["permission"] for g in remote.json("grant", "list", tenant, "tools")["items"]] == ["write"]
    remote.ok("grant", "remove", tenant, "tools", "--user", member.name)
    assert remote.fails(EXIT_NOT_FOUND, "grant", "show", tenant, "tools", "--user", member.name)

    _key, public = server.new_key()
    deploy = remote.json("deploy-key", "create", tenant, repo, public, "--title", "ci", "--write")
    assert deploy["write"] is True and deploy["title"] == "ci"
    assert remote.json("deploy-key", "show", tenant, repo, str(deploy["id"])) == deploy
    assert [k["id"] for k in remote.json("deploy-key", "list", tenant, repo)["items"]] == [deploy["id"]]
    remote.ok("deploy-key", "remove", tenant, repo, str(deploy["id"]))
    assert remote.ok("deploy-key", "list", tenant, repo) == "no deploy-keys\n"

    for owner in (tenant, f"{tenant}/{repo}"):
        hook = remote.json("webhook", "create", owner, "http://127.0.0.1:9/hook", "--secret", "s3", "--inactive")
        assert hook["active"] is False and hook["has_secret"] is True
        remote.ok("webhook", "update", owner, str(hook["id"]), "--active", "--url", "http://127.0.0.1:9/other")
        assert remote.json("webhook", "show", owner, str(hook["id"]))["url"] == "http://127.0.0.1:9/other"
        assert [h["id"] for h in remote.json("webhook", "list", owner)["items"]] == [hook["id"]]
        assert remote.json("webhook", "deliveries", owner, str(hook["id"]))["items"] == []
        remote.ok("webhook", "remove", owner, str(hook["id"]))
        assert remote.fails(EXIT_NOT_FOUND, "webhook", "show", owner, str(hook["id"]))
    assert "expected TENANT or TENANT/REPO" in remote.fails(EXIT_ERROR, "webhook", "list", f"{tenant}/a/b")

    pipelines = remote.json("pipeline", "list", tenant, repo)["items"]
    assert [p["id"] for p in pipelines] == [pid]
    assert remote.json("pipeline", "show", str(pid))["status"] == "succeeded"
    assert "pipeline succeeded" in remote.ok("pipeline", "log", str(pid), "-f")
    assert remote.ok("pipeline", "cancel", str(pid)) == f"pipeline {pid}: succeeded\n"
    pushes = remote.json("push", "list", tenant, repo)["items"]
    assert pushes[0]["user"] == user.name and pushes[0]["ref_updates"][0]["ref"] == "refs/heads/main"
    assert remote.ok("push", "list", tenant, repo).splitlines()[0].split()[:3] == ["ID", "USER", "STATE"]

    assert remote.ok("quota", "update", tenant, repo, "10M").startswith(f"{tenant}/{repo}: quota 10485760 bytes")
    assert remote.json("quota", "show", tenant, repo)["quota_bytes"] == 10 << 20
    remote.ok("quota", "update", tenant, "1G")
    assert remote.json("quota", "show", tenant)["quota_bytes"] == 1 << 30
    assert remote.ok("quota", "update", tenant, "none").startswith(f"{tenant}: quota none")


def test_exit_codes_tell_not_found_not_allowed_and_bad_input_apart(server: GitServer, tmp_path: Path) -> None:
    tenant = server.new_tenant()
    member = server.new_user(tenant)
    cli = Remote(server, tmp_path / "home", member.token)
    assert "not found" in cli.fails(EXIT_NOT_FOUND, "repo", "show", tenant, "nothing-here")
    assert cli.fails(EXIT_NOT_ALLOWED, "tenant", "create", unique("t"))
    assert cli.fails(EXIT_NOT_ALLOWED, "user", "create", tenant, "eve")
    admin = Remote(server, tmp_path / "admin", server.admin_token)
    assert "must match" in admin.fails(EXIT_ERROR, "repo", "create", tenant, "../x")
    assert "pipeline" in admin.fails(EXIT_NOT_FOUND, "pipeline", "show", "2147483647")
    assert admin.run("user", "list").returncode == EXIT_USAGE  # argparse's: TENANT is missing
    assert admin.run("quota", "update", tenant, "lots").returncode == EXIT_USAGE
    # Hostile names are one path segment each, refused by the API, never another path.
    for name in ("a/../../tenants", "x?limit=1", "a%2Fb", "ü" * 3):
        assert admin.run("user", "show", tenant, name).returncode == EXIT_NOT_FOUND
    revoked = Remote(server, tmp_path / "revoked", "gst_not_a_token")
    assert "token" in revoked.fails(EXIT_NOT_ALLOWED, "tenant", "list")
    assert "--url" in admin.fails(EXIT_ERROR, "check")
    assert "cannot reach http://127.0.0.1:9" in Remote(server, tmp_path / "x", "gst_x").fails(
        EXIT_ERROR, "tenant", "list", url="http://127.0.0.1:9")


# (argv of a read command, fields that differ between two reads by nature)
SAME_ANSWERS = [
    (("tenant", "show", "{t}"), ()), (("user", "list", "{t}"), ()), (("user", "show", "{t}", "{u}"), ()),
    (("key", "list", "{t}", "{u}"), ("last_used_at",)), (("repo", "list", "{t}"), ()),
    (("repo", "show", "{t}", "{r}"), ()), (("grant", "list", "{t}", "{r}"), ()),
    (("pipeline", "list", "{t}", "{r}"), ()), (("push", "list", "{t}", "{r}"), ()),
    (("token", "list", "{t}", "{u}"), ("last_used_at",)), (("quota", "show", "{t}", "{r}"), ()),
    (("webhook", "list", "{t}/{r}"), ()), (("group", "list", "{t}"), ()),
]


def test_the_local_and_remote_forms_give_the_same_answer(server: GitServer, remote: Remote,
                                                         git_env: dict[str, str], tmp_path: Path) -> None:
    tenant, repo, user, work = setup_repo(server, git_env, tmp_path)
    wait_pipeline(server, push(server, user, work, "HEAD:refs/heads/main"))
    names = {"t": tenant, "u": user.name, "r": repo}

    def strip(value: Any, volatile: tuple[str, ...]) -> Any:
        items = value.get("items", [value])
        for item in items:
            for key in volatile:
                item.pop(key, None)
        return value

    for argv, volatile in SAME_ANSWERS:
        words = [w.format(**names) for w in argv]
        local = json.loads(server.cli(*words, "--json").stdout)
        assert strip(remote.json(*words), volatile) == strip(local, volatile), words
    # A change made locally is the remote form's too, and the other way round.
    server.cli("group", "create", tenant, "ops")
    remote.ok("group", "add-member", tenant, "ops", user.name)
    assert [m["name"] for m in json.loads(server.cli("group", "members", tenant, "ops", "--json").stdout)["items"]] \
        == [user.name]
    missing = server.cli("repo", "show", tenant, "nope", check=False)
    assert missing.returncode == EXIT_NOT_FOUND and missing.stderr == remote.fails(EXIT_NOT_FOUND, "repo", "show",
                                                                                   tenant, "nope")


def test_rules_show_and_update(server: GitServer, remote: Remote) -> None:
    paths = server.api("GET", "/api/v1/openapi.json").json()["paths"]
    if "/api/v1/tenants/{tenant}/repos/{repo}/rules" not in paths:
        pytest.skip("the server has no rules endpoint yet (protected-reference rules land separately)")
    tenant = server.new_tenant()
    repo = server.new_repo(tenant)
    rules = [{"pattern": "refs/heads/main", "linear": True}]
    remote.ok("rules", "update", tenant, repo, "--file", "-", input=json.dumps(rules))
    answer = remote.json("rules", "show", tenant, repo)
    assert answer["rules"][0]["pattern"] == "refs/heads/main" and answer["id"]
    assert remote.ok("rules", "show", tenant, repo).startswith(f"rule set {answer['id']}: 1 rule\n")
    bad = remote.run("rules", "update", tenant, repo, "--file", "-", input='[{"pattern": 3}]')
    assert bad.returncode == EXIT_ERROR and remote.json("rules", "show", tenant, repo) == answer
    remote.ok("rules", "update", tenant, "--file", "-", input=json.dumps(rules))
    assert remote.json("rules", "show", tenant)["rules"][0]["pattern"] == "refs/heads/main"
