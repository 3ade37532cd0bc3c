"""Protected references end to end (docs/ref-rules.md): rule lists set over the API, judged
when the real git client pushes over the real OpenSSH client, with commits signed by real
git (``gpg.format=ssh`` and GPG), on SQLite and PostgreSQL; and Repour's internal pushes
held to the same rules."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.functional.conftest import GitServer, User, commit_files, make_repo, start_server

RULES = "/api/v1/tenants/{t}/repos/{r}/rules"
SIGNED_MAIN = [{"pattern": "refs/heads/main", "require_signed": True}]


def rules_url(tenant: str, repo: str) -> str:
    return RULES.format(t=tenant, r=repo)


def put_rules(server: GitServer, path: str, rules: list[dict[str, Any]], token: str | None = None) -> dict[str, Any]:
    resp = server.api("PUT", path, json=rules, token=token)
    assert resp.status_code == 200, resp.text
    return resp.json()


def set_emails(server: GitServer, user: User, *emails: str) -> None:
    resp = server.api("PATCH", f"/api/v1/tenants/{user.tenant}/users/{user.name}", json={"emails": list(emails)})
    assert resp.status_code == 200, resp.text


def signed_commit(server: GitServer, work: Path, key: Path, email: str, files: dict[str, str],
                  gpg: bool = False, env: dict[str, str] | None = None) -> str:
    """A commit by ``email`` signed by real git: SSH with ``key`` (gpg.format=ssh), or GPG."""
    for name, content in files.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(content)
    run_env = {**server.git_env, **(env or {}), "GIT_COMMITTER_EMAIL": email, "GIT_AUTHOR_EMAIL": email}
    subprocess.run(["git", "add", "-A"], cwd=work, env=run_env, check=True)
    signing = ["-c", "gpg.format=openpgp", "-c", f"user.signingkey={email}"] if gpg else \
        ["-c", "gpg.format=ssh", "-c", f"user.signingkey={key}"]
    subprocess.run(["git", *signing, "commit", "-q", "-S", "-m", "signed change"], cwd=work, env=run_env, check=True)
    return head(server, work)


def head(server: GitServer, work: Path) -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=work, env=server.git_env, check=True,
                          capture_output=True, text=True).stdout.strip()


def newest_push(server: GitServer, tenant: str, repo: str) -> dict[str, Any]:
    resp = server.api("GET", f"/api/v1/tenants/{tenant}/repos/{repo}/pushes")
    assert resp.status_code == 200, resp.text
    return resp.json()["items"][0]


def test_ssh_signed_commits_pass_and_unsigned_or_foreign_ones_are_refused(server: GitServer, tmp_path: Path) -> None:
    tenant = server.new_tenant()
    alice = server.new_user(tenant, role="admin")
    mallory = server.new_user(tenant, role="admin")
    repo = server.new_repo(tenant)
    url = server.repo_url(tenant, repo)
    set_emails(server, alice, "alice@example.org", "a.l@example.org")
    set_emails(server, mallory, "mallory@example.org")
    ruleset = put_rules(server, rules_url(tenant, repo), SIGNED_MAIN)
    assert ruleset["id"].startswith("rs-") and ruleset["rules"] == SIGNED_MAIN and ruleset["source"] == "repository"

    work = make_repo(tmp_path / "w", server.git_env)
    unsigned = head(server, work)
    refused = server.git(alice, "push", url, "main", cwd=work, check=False)
    assert refused.returncode != 0
    assert (f"! [remote rejected] main -> main (commit {unsigned[:7]} is not signed by a registered key; "
            "rule 'refs/heads/main' requires signed commits)") in refused.stderr
    assert "refs/heads/main" not in server.git(alice, "ls-remote", url).stdout

    # Alice's own login key signs as her, with her email as committer: it lands.
    subprocess.run(["git", "reset", "-q", "--hard"], cwd=work, env=server.git_env, check=True)
    work2 = tmp_path / "w2"
    subprocess.run(["git", "init", "-q", "-b", "main", str(work2)], env=server.git_env, check=True)
    good = signed_commit(server, work2, alice.key_path, "alice@example.org", {"a.txt": "1\n"})
    server.git(alice, "push", url, "main", cwd=work2)
    push = newest_push(server, tenant, repo)
    # The audit names the rule set that judged the update, and who signed each new commit.
    assert push["ref_updates"] == [{"ref": "refs/heads/main", "old": "0" * 40, "new": good, "rules": ruleset["id"],
                                    "signatures": [{"commit": good, "result": "signed", "signer": alice.name}]}]

    # Mallory's key with Alice's email, and Alice's key with Mallory's email: both refused.
    for key, email in ((mallory.key_path, "alice@example.org"), (alice.key_path, "mallory@example.org")):
        bad = signed_commit(server, work2, key, email, {"a.txt": f"{email}\n"})
        result = server.git(alice, "push", url, "main", cwd=work2, check=False)
        assert (f"(commit {bad[:7]} is not signed by a registered key; rule 'refs/heads/main' "
                "requires signed commits)") in result.stderr
        subprocess.run(["git", "reset", "-q", "--hard", "HEAD~1"], cwd=work2, env=server.git_env, check=True)

    # A signing-only key registered for Alice signs too; a branch no rule names needs nothing.
    signer, public = server.new_key("signer")
    resp = server.api("POST", f"/api/v1/tenants/{tenant}/users/{alice.name}/signing-keys",
                      json={"key": public, "title": "laptop signing"}, token=alice.token)
    assert resp.status_code == 201, resp.text
    assert resp.json()["kind"] == "ssh" and resp.json()["fingerprint"].startswith("SHA256:")
    signed_commit(server, work2, signer, "a.l@example.org", {"b.txt": "2\n"})
    server.git(alice, "push", url, "main", cwd=work2)
    commit_files(work2, server.git_env, {"c.txt": "3\n"})
    server.git(alice, "push", url, "main:refs/heads/topic", cwd=work2)
    topic = newest_push(server, tenant, repo)["ref_updates"][0]
    assert topic["ref"] == "refs/heads/topic" and topic["rules"] == ruleset["id"] and topic["signatures"] is None


@contextlib.contextmanager
def gpg_home(tmp_path: Path, email: str) -> Iterator[tuple[dict[str, str], str]]:
    """A throwaway GnuPG home with one passphrase-less ed25519 key for ``email``: the
    environment git signs with, and the armored public key. Its agent is stopped after."""
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    env = {**os.environ, "GNUPGHOME": str(home)}
    subprocess.run(["gpg", "--batch", "--passphrase", "", "--quick-gen-key", f"Alice <{email}>",
                    "ed25519", "sign", "never"], env=env, check=True, capture_output=True)
    armored = subprocess.run(["gpg", "--armor", "--export", email], env=env, check=True,
                             capture_output=True, text=True).stdout
    try:
        yield {"GNUPGHOME": str(home)}, armored
    finally:
        subprocess.run(["gpgconf", "--kill", "all"], env=env, check=False, capture_output=True)


@pytest.mark.skipif(shutil.which("gpg") is None, reason="gpg is not installed")
def test_gpg_signed_commits_are_verified_against_registered_gpg_keys(server: GitServer, tmp_path: Path) -> None:
    tenant = server.new_tenant()
    alice = server.new_user(tenant, role="admin")
    repo = server.new_repo(tenant)
    url = server.repo_url(tenant, repo)
    set_emails(server, alice, "alice@example.org")
    put_rules(server, rules_url(tenant, repo), SIGNED_MAIN)
    work = tmp_path / "w"
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], env=server.git_env, check=True)
    with gpg_home(tmp_path, "alice@example.org") as (env, armored):
        first = signed_commit(server, work, alice.key_path, "alice@example.org", {"a": "1\n"}, gpg=True, env=env)
        before = server.git(alice, "push", url, "main", cwd=work, check=False)
        assert f"(commit {first[:7]} is not signed by a registered key;" in before.stderr  # not registered yet
        resp = server.api("POST", f"/api/v1/tenants/{tenant}/users/{alice.name}/gpg-keys", json={"key": armored})
        assert resp.status_code == 201, resp.text
        assert len(resp.json()["fingerprint"]) == 40
        server.git(alice, "push", url, "main", cwd=work)
    bad = server.api("POST", f"/api/v1/tenants/{tenant}/users/{alice.name}/gpg-keys", json={"key": "nope"})
    assert bad.status_code == 400 and "armored OpenPGP public key" in bad.json()["description"]


def test_push_and_create_are_limited_to_the_named_users_and_groups(server: GitServer, tmp_path: Path) -> None:
    tenant = server.new_tenant()
    bob = server.new_user(tenant)
    rita = server.new_user(tenant)
    repo = server.new_repo(tenant, grants={bob.name: "write", rita.name: "write"})
    url = server.repo_url(tenant, repo)
    group = server.api("POST", f"/api/v1/tenants/{tenant}/groups", json={"name": "release"})
    assert group.status_code == 201, group.text
    assert server.api("PUT", f"/api/v1/tenants/{tenant}/groups/release/members/{rita.name}").status_code == 200
    put_rules(server, rules_url(tenant, repo), [
        {"pattern": "refs/tags/v*", "create": {"groups": ["release"]}},
        {"pattern": "refs/heads/main", "push": {"groups": ["release"]}}])
    work = make_repo(tmp_path / "w", server.git_env)
    refused = server.git(bob, "push", url, "main", cwd=work, check=False)
    assert (f"! [remote rejected] main -> main ({bob.name} may not push to refs/heads/main: "
            "rule 'refs/heads/main' allows group release)") in refused.stderr
    server.git(rita, "push", url, "main", cwd=work)
    server.git(bob, "push", url, "main:refs/heads/feature", cwd=work)
    subprocess.run(["git", "tag", "v1.0"], cwd=work, env=server.git_env, check=True)
    tag = server.git(bob, "push", url, "v1.0", cwd=work, check=False)
    assert f"({bob.name} may not create refs/tags/v1.0: rule 'refs/tags/v*' allows group release)" in tag.stderr
    server.git(rita, "push", url, "v1.0", cwd=work)
    # Joining the group lets bob through at his next push.
    assert server.api("PUT", f"/api/v1/tenants/{tenant}/groups/release/members/{bob.name}").status_code == 200
    commit_files(work, server.git_env, {"x": "1\n"})
    server.git(bob, "push", url, "main", cwd=work)


def test_forbidden_paths_file_sizes_and_linear_history(server: GitServer, tmp_path: Path) -> None:
    tenant = server.new_tenant()
    alice = server.new_user(tenant, role="admin")
    repo = server.new_repo(tenant)
    url = server.repo_url(tenant, repo)
    put_rules(server, f"/api/v1/tenants/{tenant}/rules", [
        {"pattern": "refs/heads/*", "forbidden_paths": ["secrets/", "*.pem"], "max_file_bytes": 2000,
         "linear": True}])
    assert server.api("GET", rules_url(tenant, repo)).json()["source"] == "tenant"  # the defaults apply
    work = make_repo(tmp_path / "w", server.git_env)
    server.git(alice, "push", url, "main", cwd=work)
    base = head(server, work)
    cases = (({"secrets/prod.pem": "k\n"}, "file secrets/prod.pem matches forbidden path 'secrets/'"),
             ({"certs/ca.pem": "k\n"}, "file certs/ca.pem matches forbidden path '*.pem'"),
             ({"assets/huge.bin": "x" * 3000}, "file assets/huge.bin is 3000 bytes, over the 2000 bytes limit"))
    for files, why in cases:
        commit_files(work, server.git_env, files)
        result = server.git(alice, "push", url, "main", cwd=work, check=False)
        assert f"! [remote rejected] main -> main ({why} of rule 'refs/heads/*')" in result.stderr, result.stderr
        subprocess.run(["git", "reset", "-q", "--hard", base], cwd=work, env=server.git_env, check=True)
    subprocess.run(["git", "checkout", "-q", "-b", "side"], cwd=work, env=server.git_env, check=True)
    commit_files(work, server.git_env, {"side.txt": "s\n"})
    subprocess.run(["git", "checkout", "-q", "main"], cwd=work, env=server.git_env, check=True)
    commit_files(work, server.git_env, {"main.txt": "m\n"})
    subprocess.run(["git", "merge", "-q", "--no-edit", "side"], cwd=work, env=server.git_env, check=True)
    merge = head(server, work)
    result = server.git(alice, "push", url, "main", cwd=work, check=False)
    assert (f"(commit {merge[:7]} is a merge commit; rule 'refs/heads/*' requires linear history)"
            in result.stderr)
    assert server.git(alice, "ls-remote", url, "refs/heads/main").stdout.split()[0] == base


def test_bad_rules_are_refused_naming_the_field_and_the_old_list_stays(server: GitServer) -> None:
    tenant = server.new_tenant()
    member = server.new_user(tenant)
    repo = server.new_repo(tenant, grants={member.name: "write"})
    path = rules_url(tenant, repo)
    first = put_rules(server, path, SIGNED_MAIN)
    cases = [
        ([{"pattern": "main"}], "rules.0.pattern"),
        ([{"pattern": "refs/heads/*"}, {"pattern": "refs/heads/*", "linear": True}], "rules.1.pattern"),
        ([{"pattern": "refs/heads/*", "push": {"users": ["nobody-here"]}}], "rules.0.push.users.0"),
        ([{"pattern": "refs/heads/*", "create": {"groups": ["nogroup"]}}], "rules.0.create.groups.0"),
        ([{"pattern": "refs/heads/*", "max_file_bytes": -1}], "rules.0.max_file_bytes"),
        ([{"pattern": "refs/heads/*", "colour": "red"}], "colour"),
        ([{"pattern": "refs/heads/*", "linear": "yes"}], "rules.0.linear"),
        ({"pattern": "refs/heads/*"}, "rules"),
    ]
    for body, field in cases:
        resp = server.api("PUT", path, json=body)
        assert resp.status_code == 400, (body, resp.text)
        assert field in resp.json()["description"] or resp.json().get("field") == field, (body, resp.json())
    now = server.api("GET", path).json()
    assert now["id"] == first["id"] and now["rules"] == SIGNED_MAIN
    # Only admins change rules; the history says who changed what, when.
    assert server.api("PUT", path, json=[], token=member.token).status_code == 403
    second = put_rules(server, path, [])
    history = server.api("GET", f"{path}/history").json()["items"]
    assert [v["id"] for v in history] == [second["id"], first["id"]]
    assert history[0]["previous"] == first["id"] and history[0]["previous_rules"] == SIGNED_MAIN
    assert history[0]["changed_by"] and history[1]["previous"] is None
    one = server.api("GET", f"/api/v1/tenants/{tenant}/rule-sets/{first['id']}")
    assert one.status_code == 200 and one.json()["rules"] == SIGNED_MAIN and one.json()["repo"] == repo


def test_repour_clone_into_a_repository_with_rules_is_refused_with_the_reason(
        server: GitServer, tmp_path: Path) -> None:
    tenant = server.new_tenant()
    alice = server.new_user(tenant, role="admin")
    repo = server.new_repo(tenant)
    put_rules(server, rules_url(tenant, repo), [{"pattern": "refs/heads/*", "forbidden_paths": ["*.pem"]}])
    origin = make_repo(tmp_path / "origin", server.git_env, {"key.pem": "secret\n"})
    spec = {"type": "git", "originRepoUrl": f"file://{origin}", "targetRepoUrl": server.repo_url(tenant, repo),
            "ref": "main"}
    resp = server.api("POST", "/clone", json=spec, token=alice.token)
    assert resp.status_code == 400, resp.text
    assert "file key.pem matches forbidden path '*.pem' of rule 'refs/heads/*'" in resp.json()["desc"]
    assert server.git(alice, "ls-remote", server.repo_url(tenant, repo)).stdout == ""


def test_deploy_keys_are_named_by_id_in_push_lists(server: GitServer, tmp_path: Path) -> None:
    tenant = server.new_tenant()
    repo = server.new_repo(tenant)
    url = server.repo_url(tenant, repo)
    key_path, public = server.new_key("deploy")
    made = server.api("POST", f"/api/v1/tenants/{tenant}/repos/{repo}/deploy-keys",
                      json={"key": public, "title": "ci", "write": True})
    assert made.status_code == 201, made.text
    deploy_id = made.json()["id"]
    put_rules(server, rules_url(tenant, repo), [
        {"pattern": "refs/heads/deploy/*", "push": {"deploy_keys": [deploy_id]}},
        {"pattern": "refs/heads/*", "push": {"users": []}}])
    work = make_repo(tmp_path / "w", server.git_env)
    server.git(key_path, "push", url, "main:refs/heads/deploy/prod", cwd=work)
    refused = server.git(key_path, "push", url, "main", cwd=work, check=False)
    assert (f"(deploy key {deploy_id} may not push to refs/heads/main: rule 'refs/heads/*' allows no one)"
            in refused.stderr)
    bad = server.api("PUT", rules_url(tenant, repo),
                     json=[{"pattern": "refs/heads/*", "push": {"deploy_keys": [999999]}}])
    assert bad.status_code == 400 and "rules.0.push.deploy_keys.0" in bad.text


def test_annotated_tags_must_be_signed_by_their_tagger(server: GitServer, tmp_path: Path) -> None:
    tenant = server.new_tenant()
    alice = server.new_user(tenant, role="admin")
    repo = server.new_repo(tenant)
    url = server.repo_url(tenant, repo)
    set_emails(server, alice, "alice@example.org")
    put_rules(server, rules_url(tenant, repo), [{"pattern": "refs/tags/*", "require_signed": True}])
    work = tmp_path / "w"
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], env=server.git_env, check=True)
    signed_commit(server, work, alice.key_path, "alice@example.org", {"a": "1\n"})
    server.git(alice, "push", url, "main", cwd=work)
    tagger = {**server.git_env, "GIT_COMMITTER_EMAIL": "alice@example.org"}
    subprocess.run(["git", "-c", "gpg.format=ssh", "-c", f"user.signingkey={alice.key_path}", "tag", "-s", "v1",
                    "-m", "release 1"], cwd=work, env=tagger, check=True)
    subprocess.run(["git", "tag", "-a", "v2", "-m", "unsigned release"], cwd=work, env=tagger, check=True)
    unsigned = subprocess.run(["git", "rev-parse", "v2"], cwd=work, env=tagger, check=True, capture_output=True,
                              text=True).stdout.strip()
    server.git(alice, "push", url, "v1", cwd=work)
    refused = server.git(alice, "push", url, "v2", cwd=work, check=False)
    assert (f"! [remote rejected] v2 -> v2 (tag {unsigned[:7]} is not signed by a registered key; "
            "rule 'refs/tags/*' requires signed commits)") in refused.stderr


def test_check_reports_a_ref_moved_outside_receive_pack_against_its_rule(
        db_url: str, git_env: dict[str, str], tmp_path: Path) -> None:
    """A server of its own: the breach it makes stays, and the shared server's check must pass."""
    server = start_server(tmp_path, db_url, git_env)
    try:
        tenant = server.new_tenant()
        alice = server.new_user(tenant, role="admin")
        repo = server.new_repo(tenant)
        put_rules(server, rules_url(tenant, repo), [{"pattern": "refs/heads/*", "forbidden_paths": ["*.pem"]}])
        work = make_repo(tmp_path / "w", server.git_env)
        server.git(alice, "push", server.repo_url(tenant, repo), "main", cwd=work)
        assert server.cli("check", check=False).returncode == 0
        bad = commit_files(work, server.git_env, {"key.pem": "secret\n"})
        # Written straight into the repository (a fetch runs no hooks), then recorded by the repair.
        subprocess.run(["git", "--git-dir", str(server.repo_path(tenant, repo)), "fetch", "-q", str(work),
                        "main:refs/heads/main"], env=server.git_env, check=True)
        server.cli("check", "--repair", check=False)
        checked = server.cli("check", check=False)
        assert checked.returncode == 1
        assert (f"{tenant}/{repo} refs/heads/main: moved to {bad[:7]} outside receive-pack, judged by no rule "
                f"(rule 'refs/heads/*'); file key.pem matches forbidden path '*.pem' of rule 'refs/heads/*'"
                in checked.stdout), checked.stdout + checked.stderr
    finally:
        server.stop()


def test_the_cli_shows_and_sets_rule_lists(server: GitServer, tmp_path: Path) -> None:
    import json

    tenant = server.new_tenant()
    repo = server.new_repo(tenant)
    listing = tmp_path / "rules.json"
    listing.write_text(json.dumps(SIGNED_MAIN))
    server.cli("rules", "update", tenant, repo, "--file", str(listing))
    shown = json.loads(server.cli("rules", "show", tenant, repo, "--json").stdout)
    assert shown["rules"] == SIGNED_MAIN and shown["source"] == "repository"
    assert server.api("GET", rules_url(tenant, repo)).json()["id"] == shown["id"]
    defaults = json.loads(server.cli("rules", "show", tenant, "--json").stdout)
    assert (defaults["id"], defaults["rules"], defaults["source"]) == (None, [], "none")
    listing.write_text(json.dumps([{"pattern": "main", "linear": True}]))
    bad = server.cli("rules", "update", tenant, repo, "--file", str(listing), check=False)
    assert bad.returncode == 1 and "rules.0.pattern 'main' must match refs under refs/heads/" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert json.loads(server.cli("rules", "show", tenant, repo, "--json").stdout)["id"] == shown["id"]
