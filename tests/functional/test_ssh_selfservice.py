"""The self-service commands (``ssh git@host help``) through the real OpenSSH client and the
real ``gitserver serve``, on both databases; their ``--json`` against the REST API's answers."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.functional.conftest import GitServer, User
from tests.functional.test_pipelines import push, setup_repo, wait_pipeline
from tests.functional.test_pipelines_build import full_log

FAILED = 1
PWNED = Path("/tmp/pwned-selfservice")


def ssh(server: GitServer, user: User | Path, command: str, stdin: str = "",
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``ssh git@host COMMAND`` with ``stdin`` (the command is one argument: the client sends
    it to the server as it is, and the server splits it)."""
    key = user.key_path if isinstance(user, User) else user
    argv = [*server.ssh_command(key), "-p", str(server.ssh_port), "git@127.0.0.1", command]
    return subprocess.run(argv, input=stdin, text=True, capture_output=True, timeout=timeout,
                          env=server.git_env)


def ok(server: GitServer, user: User | Path, command: str, stdin: str = "") -> str:
    result = ssh(server, user, command, stdin)
    assert result.returncode == 0 and result.stderr == "", (command, result.returncode, result.stderr)
    return result.stdout


def refused(server: GitServer, user: User | Path, command: str, stdin: str = "") -> str:
    """The one ``error:`` line of a refused command (exit 1, nothing on stdout)."""
    result = ssh(server, user, command, stdin)
    assert result.returncode == FAILED, (command, result.returncode, result.stdout, result.stderr)
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    return result.stderr


def api_items(server: GitServer, path: str, token: str) -> list[dict[str, Any]]:
    response = server.api("GET", path, token=token)
    assert response.status_code == 200, response.text
    return response.json()["items"]


def without(obj: dict[str, Any], *fields: str) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in fields}


def test_help_lists_every_command_and_a_bare_login_names_it(server: GitServer) -> None:
    user = server.new_user(server.new_tenant())
    text = ok(server, user, "help")
    for verb in ("info", "repo list", "repo info", "repo create", "repo describe", "keys list",
                 "keys add", "keys remove", "token create", "pipelines", "log", "login"):
        assert f"\n  {verb}" in text, verb
    greeting = server.ssh(user).stdout.splitlines()
    assert greeting[0].startswith(f"Hi {user.name}!") and "help" in greeting[1] and len(greeting) == 2


def test_a_member_sees_only_what_it_can_read(server: GitServer) -> None:
    tenant = server.new_tenant()
    member = server.new_user(tenant)
    granted = server.new_repo(tenant, grants={member.name: "write"})
    internal = server.new_repo(tenant, visibility="internal")
    hidden = server.new_repo(tenant)
    other = server.new_tenant()
    foreign = server.new_repo(other)
    public = server.new_repo(other, visibility="public")
    info = ok(server, member, "info")
    assert info.splitlines()[0] == f"You are {tenant}/{member.name} (member); you can reach 2 repositories:"
    lines = [line.split() for line in info.splitlines()[1:]]
    assert lines == [["write", f"{tenant}/{granted}"], ["read", f"{tenant}/{internal}"]]
    assert hidden not in info and other not in info
    as_json = json.loads(ok(server, member, "info --json"))
    assert as_json["user"] == server.api("GET", f"/api/v1/tenants/{tenant}/users/{member.name}",
                                         token=member.token).json()
    assert [(r["name"], r["permission"]) for r in as_json["items"]] == [(granted, "write"), (internal, "read")]
    # repo list --json is the API's list, item for item.
    listed = json.loads(ok(server, member, "repo list --json"))
    assert listed == {"items": api_items(server, f"/api/v1/tenants/{tenant}/repos?limit=100", member.token)}
    assert [r["name"] for r in listed["items"]] == [granted, internal]
    assert ok(server, member, "repo list").split()[0] == f"{tenant}/{granted}"
    # Another tenant, a hidden repository: the answers of missing ones.
    assert refused(server, member, f"repo list {other}") == f"error: tenant '{other}' not found\n"
    assert refused(server, member, "repo list nosuchtenant") == "error: tenant 'nosuchtenant' not found\n"
    seen = refused(server, member, f"repo info {tenant}/{hidden}")
    assert seen == f"error: repository {tenant}/{hidden} not found\n"
    assert refused(server, member, f"repo info {tenant}/nosuch").replace("nosuch", hidden) == seen
    assert refused(server, member, f"repo info {other}/{foreign}") == (
        f"error: repository {other}/{foreign} not found\n")
    # A public repository is readable by anyone, as over git and the API (but listed only
    # in its own tenant).
    assert json.loads(ok(server, member, f"repo info {other}/{public} --json"))["name"] == public
    one = json.loads(ok(server, member, f"repo info '/{tenant}/{granted}.git/' --json"))
    assert one == server.api("GET", f"/api/v1/tenants/{tenant}/repos/{granted}", token=member.token).json()
    assert ok(server, member, f"pipelines {tenant}/{granted}") == "no pipelines\n"
    assert refused(server, member, f"pipelines {tenant}/{hidden}") == seen


def test_repo_create_and_describe_follow_the_roles(server: GitServer) -> None:
    tenant = server.new_tenant()
    boss = server.new_user(tenant, role="admin")
    reader = server.new_user(tenant)
    created = json.loads(ok(server, boss, f"repo create {tenant}/widgets --visibility internal "
                                          "--description 'Our widgets' --json"))
    api = server.api("GET", f"/api/v1/tenants/{tenant}/repos/widgets", token=boss.token).json()
    assert created == api and api["visibility"] == "internal" and api["description"] == "Our widgets"
    assert refused(server, boss, f"repo create {tenant}/widgets").startswith("error: repository ")
    assert refused(server, reader, f"repo create {tenant}/mine") == (
        f"error: only the admins of tenant '{tenant}' may create repositories\n")
    assert refused(server, reader, f"repo describe {tenant}/widgets new text") == (
        f"error: you have read access to {tenant}/widgets; this needs admin\n")
    text = ok(server, boss, f"repo describe {tenant}/widgets 'ünïcødé ✓' and $(id) `id`; ls")
    assert "ünïcødé ✓ and $(id) `id`; ls" in text
    api = server.api("GET", f"/api/v1/tenants/{tenant}/repos/widgets", token=boss.token).json()
    assert api["description"] == "ünïcødé ✓ and $(id) `id`; ls"
    info = ok(server, boss, f"repo info {tenant}/widgets")
    assert f"repository:      {tenant}/widgets" in info and "ssh:" in info


def test_keys_add_list_remove_and_the_last_key_stays(server: GitServer) -> None:
    tenant = server.new_tenant()
    user = server.new_user(tenant)
    stranger = server.new_user(tenant)
    keys_path = f"/api/v1/tenants/{tenant}/users/{user.name}/keys?limit=100"
    first_id = json.loads(ok(server, user, "keys list --json"))["items"][0]["id"]
    # last_used_at moves with every login (the listing's own one included): compare the rest.
    listed = json.loads(ok(server, user, "keys list --json"))["items"]
    assert [without(k, "last_used_at") for k in listed] == [
        without(k, "last_used_at") for k in api_items(server, keys_path, user.token)]
    assert "(this key)" in ok(server, user, "keys list")
    assert refused(server, user, f"keys remove {first_id}") == (
        f"error: key {first_id} is the one you are logged in with and your last key; add another "
        "first (keys add), or you would lock yourself out\n")
    new_path, new_public = server.new_key("laptop")
    added = json.loads(ok(server, user, "keys add --title laptop --json", stdin=new_public + "\n"))
    assert added["title"] == "laptop" and added == without(
        server.api("GET", f"/api/v1/tenants/{tenant}/users/{user.name}/keys/{added['id']}",
                   token=user.token).json(), "last_used_at") | {"last_used_at": None}
    assert "laptop" in ok(server, new_path, "keys list")
    assert refused(server, user, "keys add", stdin=new_public).startswith("error: key SHA256:")
    assert refused(server, user, "keys add", stdin=stranger.public_key).endswith(
        "(another user's key); one key is one identity\n")
    assert refused(server, user, "keys add", stdin="ssh-ed25519 AAAAnotakey x\n").startswith("error: ")
    assert refused(server, user, "keys add", stdin="").startswith("error: keys add reads one public key")
    # Another user's key id is "not found", like a missing one.
    stranger_key = api_items(server, f"/api/v1/tenants/{tenant}/users/{stranger.name}/keys", stranger.token)[0]
    assert refused(server, user, f"keys remove {stranger_key['id']}") == (
        f"error: key {stranger_key['id']} of {tenant}/{user.name} not found\n")
    # With a second key, the one logged in with may go; then the other is the last.
    assert ok(server, user, f"keys remove {first_id}").startswith(f"removed key {first_id}: ")
    assert ssh(server, user, "keys list").returncode == 255  # that key no longer logs in
    assert refused(server, new_path, f"keys remove {added['id']}").startswith(
        f"error: key {added['id']} is the one you are logged in with and your last key")
    assert [k["id"] for k in api_items(server, keys_path, user.token)] == [added["id"]]


def test_token_create_prints_the_token_alone_on_the_last_line(server: GitServer) -> None:
    tenant = server.new_tenant()
    user = server.new_user(tenant)
    out = ok(server, user, "token create --expires 7 --scope read --name laptop")
    secret = out.splitlines()[-1]
    assert secret.startswith("gst_") and " " not in secret
    me = server.api("GET", f"/api/v1/tenants/{tenant}/users/{user.name}", token=secret)
    assert me.status_code == 200
    created = json.loads(ok(server, user, "token create --json"))
    listed = {t["id"]: t for t in api_items(server, f"/api/v1/tenants/{tenant}/users/{user.name}/tokens",
                                            user.token)}
    assert without(created, "token") == listed[created["id"]]
    assert created["scopes"] == ["read", "write", "admin"] and created["expires_at"] is None
    read_only = next(t for t in listed.values() if t["name"] == "laptop")
    assert read_only["scopes"] == ["read"] and read_only["expires_at"] is not None
    # The read-only token cannot change anything.
    denied = server.api("POST", f"/api/v1/tenants/{tenant}/users/{user.name}/tokens", json={}, token=secret)
    assert denied.status_code == 403
    assert refused(server, user, "token create --expires 0").startswith("error: --expires: a number of days")
    assert refused(server, user, "token create --scope root") == (
        "error: --scope must be one of read, write, admin, not 'root'\n")


def test_log_follows_a_running_pipeline_to_its_end(server: GitServer, git_env: dict[str, str],
                                                   tmp_path: Path) -> None:
    toml = ('[[steps]]\nname = "slow"\n'
            'command = "for i in 1 2 3 4 5 6; do echo line-$i; sleep 0.5; done"\n')
    tenant, repo, user, work = setup_repo(server, git_env, tmp_path, builds=True,
                                          files={".gitserver/pipeline.toml": toml})
    outsider = server.new_user(server.new_tenant())
    pid = push(server, user, work, "main")
    t0 = time.monotonic()
    followed = ssh(server, user, f"log {pid} -f", timeout=120)
    elapsed = time.monotonic() - t0
    assert followed.returncode == 0, followed.stderr
    pipeline = wait_pipeline(server, pid, timeout=1)  # already final when log -f returned
    assert pipeline.status == "succeeded"
    lines = followed.stdout.splitlines()
    assert [line for line in lines if line.startswith("line-")] == [f"line-{i}" for i in range(1, 7)]
    assert followed.stdout == full_log(server, pid)
    assert followed.stdout.endswith("*** pipeline succeeded\n")  # written after the final status
    assert elapsed >= 2.0  # it waited for the steps, rather than printing what was there
    print(f"\nlog -f followed pipeline {pid} for {elapsed:.1f} s")
    assert ok(server, user, f"log {pid}") == followed.stdout
    # pipelines --json: the API's list, newest first.
    listed = json.loads(ok(server, user, f"pipelines {tenant}/{repo} --json"))
    assert listed["items"] == api_items(server, f"/api/v1/tenants/{tenant}/repos/{repo}/pipelines",
                                        user.token)
    assert ok(server, user, f"pipelines {tenant}/{repo}").split()[:2] == [str(pid), "succeeded"]
    # Someone who cannot read the repository: the answer of a pipeline that does not exist.
    assert refused(server, outsider, f"log {pid}") == f"error: pipeline {pid} not found\n"
    assert refused(server, outsider, "log 2147483647") == "error: pipeline 2147483647 not found\n"


@pytest.mark.parametrize("command", [
    "ls", "sh -c id", "bash", "scp -t /tmp/pwned-selfservice", "info; touch /tmp/pwned-selfservice",
    "info && touch /tmp/pwned-selfservice", "info | touch /tmp/pwned-selfservice",
    "repo info $(touch /tmp/pwned-selfservice)", "repo info `touch /tmp/pwned-selfservice`",
    "repo info '../../etc'", "info\ntouch /tmp/pwned-selfservice", "info\x1b[2J", "repo info 'unclosed",
    "repo list " + "x" * 10_000, "repo info " + "a/" + "b" * 10_000, "repo info tënant/répo",
    "lög", "keys remove ١٢", "keys remove 99999999999999999999", "log -1", "repo", "repo frob",
    "info --frob", "log 1 --json", "pipelines", "repo describe", "token create --expires",
])
def test_hostile_or_bad_arguments_get_one_line_and_status_1(server: GitServer, command: str) -> None:
    user = server.new_user(server.new_tenant(), role="admin")
    line = refused(server, user, command)
    assert len(line) < 400, line  # a 10 kB argument is not echoed back
    assert not PWNED.exists()


def test_a_deploy_key_reads_its_repository_and_manages_nothing(server: GitServer) -> None:
    from gitserver.admin import deploy_keys as admin_deploy_keys
    from gitserver.admin import repos as admin_repos
    from gitserver.admin import tenants as admin_tenants

    tenant = server.new_tenant()
    repo = server.new_repo(tenant)
    other = server.new_repo(tenant, visibility="internal")
    key_path, public = server.new_key("deploy")
    with server.db() as session:
        row = admin_repos.get_repo(session, admin_tenants.get_tenant(session, tenant), repo)
        admin_deploy_keys.add_deploy_key(session, row, public, "ci")
    info = ok(server, key_path, "info")
    assert info.splitlines() == ["You are a deploy key; you can reach 1 repository:", f"read  {tenant}/{repo}"]
    assert json.loads(ok(server, key_path, f"repo info {tenant}/{repo} --json"))["name"] == repo
    assert refused(server, key_path, f"repo info {tenant}/{other}") == f"error: repository {tenant}/{other} not found\n"
    for command in ("keys list", "keys remove 1", "token create"):
        assert refused(server, key_path, command) == (
            "error: a deploy key has no keys or tokens of its own; use a user's key\n")
    assert refused(server, key_path, f"repo describe {tenant}/{repo} x") == (
        f"error: you have read access to {tenant}/{repo}; this needs admin\n")


def test_a_disabled_user_stops_at_the_next_command_of_a_multiplexed_connection(server: GitServer) -> None:
    import tempfile

    tenant = server.new_tenant()
    user = server.new_user(tenant)
    control = Path(tempfile.mkdtemp(prefix="cm", dir="/tmp")) / "s"
    options = ["-o", "ControlMaster=auto", "-o", f"ControlPath={control}", "-o", "ControlPersist=60"]
    base = [*server.ssh_command(user.key_path), *options, "-p", str(server.ssh_port), "git@127.0.0.1"]

    def run(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*base, command], text=True, capture_output=True, timeout=60,
                              stdin=subprocess.DEVNULL, env=server.git_env)

    try:
        assert run("keys list").returncode == 0
        server.api("DELETE", f"/api/v1/tenants/{tenant}/users/{user.name}")
        result = run("token create")
        assert result.returncode == FAILED and result.stdout == ""
        assert result.stderr == ("error: this key is no longer valid (removed, or its user disabled); "
                                 "reconnect to authenticate again\n")
    finally:
        subprocess.run([*base[:-1], "-O", "exit", "git@127.0.0.1"], capture_output=True, timeout=30)
