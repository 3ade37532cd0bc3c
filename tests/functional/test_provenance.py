"""Verifiable history with real git, OpenSSH and the real server, on SQLite and PostgreSQL:
pushes and archives land in the signed reference log, ``git verify-tag``/``verify-commit``
accept the server's signatures with the published allowed-signers file, ``gitserver verify``
passes on an untouched repository, and each tamper is caught by ``gitserver verify`` and by
``gitserver check``, naming the ref.

The impostor ("a second server with its own key") is a copy of the repository whose log and
archive tags were re-signed with another key, served from a ``file://`` URL: what a second
server would serve, without starting one more server per database."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path

import pygit2
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gitserver.provenance import gitsign
from gitserver.provenance.signer import FileSigner
from tests.functional.conftest import GitServer, User, commit_files, make_repo
from tests.functional.test_pipelines import pushed_pipeline_id, wait_pipeline

LOG = "refs/gitserver/log"


def _setup(server: GitServer, tmp_path: Path, name: str) -> tuple[User, str, str, Path]:
    tenant = server.new_tenant()
    user = server.new_user(tenant)
    repo = server.new_repo(tenant, name=name, visibility="public", grants={user.name: "write"})
    work = make_repo(tmp_path / f"work-{name}", server.git_env)
    server.git(user, "remote", "add", "origin", server.repo_url(tenant, repo), cwd=work)
    return user, tenant, repo, work


def _push(server: GitServer, user: User, work: Path, *refspecs: str) -> None:
    result = server.git(user, "push", "-q", "origin", *refspecs, cwd=work)
    assert wait_pipeline(server, pushed_pipeline_id(result.stderr)).status == "succeeded", server.logs()


def _http_url(server: GitServer, tenant: str, repo: str) -> str:
    return f"{server.http_url}/git/{tenant}/{repo}.git"


def _verify(server: GitServer, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return server.cli("verify", url, *args, check=False)


def _check_lines(server: GitServer, tenant: str, repo: str) -> list[str]:
    """``gitserver check``'s lines about this repository (the shared server holds others)."""
    out = server.cli("check", check=False).stdout
    return [line for line in out.splitlines() if line.startswith(f"{tenant}/{repo} ")]


def _entries(git_dir: Path) -> list[dict[str, object]]:
    """The log's entries, oldest first."""
    out = subprocess.run(["git", "--git-dir", str(git_dir), "log", "--reverse", "--format=%B%x00", LOG],
                         capture_output=True, text=True, check=True).stdout
    return [json.loads(text) for text in out.split("\0") if text.strip()]


def test_pushes_and_archives_are_logged_signed_and_verify(server: GitServer, tmp_path: Path) -> None:
    user, tenant, repo, work = _setup(server, tmp_path, "prov")
    _push(server, user, work, "main")
    second = commit_files(work, server.git_env, {"b.txt": "b\n"})
    server.git(user, "tag", "-a", "-m", "v1", "v1", cwd=work)
    _push(server, user, work, "main", "v1")
    allowed = tmp_path / "allowed_signers"
    resp = requests.get(server.http_url + "/api/v1/signing-keys/allowed_signers", timeout=10)
    assert resp.status_code == 200
    allowed.write_text(resp.text)
    # A plain mirror, as any reader gets it: the log is advertised and fetched with the rest.
    mirror = tmp_path / "mirror.git"
    subprocess.run(["git", "clone", "-q", "--mirror", _http_url(server, tenant, repo), str(mirror)], check=True)
    git = ["git", "--git-dir", str(mirror), "-c", "gpg.format=ssh", "-c", f"gpg.ssh.allowedSignersFile={allowed}"]
    tags = subprocess.run([*git, "tag", "-l", "repour-*"], capture_output=True, text=True).stdout.split()
    assert len(tags) == 2  # two trees: main's two commits (v1 tags the second: the same tree)
    for tag in tags:
        result = subprocess.run([*git, "verify-tag", tag], capture_output=True, text=True)
        assert result.returncode == 0 and 'Good "git" signature' in result.stderr, result.stderr
    result = subprocess.run([*git, "verify-commit", LOG], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    entries = _entries(mirror)
    pushed = [e for e in entries if e["protocol"] == "ssh"]
    assert [(e["ref"], e["pusher"], e["key_fingerprint"], e["rules"]) for e in pushed] == [
        ("refs/heads/main", user.name, user.fingerprint, None), ("refs/heads/main", user.name, user.fingerprint, None),
        ("refs/tags/v1", user.name, user.fingerprint, None)]
    assert next(e for e in reversed(entries) if e["ref"] == "refs/heads/main")["new"] == second
    assert {e["ref"] for e in entries if e["protocol"] == "server"} >= {f"refs/tags/{t}" for t in tags}
    assert _verify(server, _http_url(server, tenant, repo)).returncode == 0
    _check_attestations(server, tenant, repo, mirror, second, user)
    ssh = _verify(server, server.repo_url(tenant, repo), "--keys", str(allowed))
    assert ssh.returncode != 0 and "cannot fetch" in ssh.stderr  # verify has no key for SSH here
    assert _check_lines(server, tenant, repo) == []
    # Nobody pushes the log.
    refused = server.git(user, "push", "--force", "origin", f"main:{LOG}", cwd=work, check=False)
    assert refused.returncode != 0 and "reserved" in refused.stderr


def _check_attestations(server: GitServer, tenant: str, repo: str, mirror: Path, commit: str, user: User) -> None:
    """The commit's bundle from the API equals its note; every envelope verifies with
    securesystemslib (not our code) against the published key; the VSA and the provenance say
    what §8 says."""
    from securesystemslib.dsse import Envelope
    from securesystemslib.signer import SSlibKey

    resp = server.api("GET", f"/api/v1/tenants/{tenant}/repos/{repo}/attestations/{commit}", token="")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("application/vnd.in-toto.bundle")
    note = subprocess.run(["git", "--git-dir", str(mirror), "notes", "--ref=refs/notes/attestations", "show", commit],
                          capture_output=True, text=True, check=True).stdout
    assert resp.text == note
    [published] = requests.get(server.http_url + "/api/v1/signing-keys", timeout=10).json()["keys"][-1:]
    raw = base64.b64decode(published["public_key"].split()[1])[-32:]
    key = SSlibKey(published["fingerprint"], "ed25519", "ed25519", {"public": raw.hex()})
    statements = []
    for line in resp.text.splitlines():
        envelope = Envelope.from_dict(json.loads(line))
        assert envelope.payload_type == "application/vnd.in-toto+json"
        assert list(envelope.verify([key], 1)) == [published["fingerprint"]]
        statements.append(json.loads(envelope.payload))
    kinds = {s["predicateType"]: s for s in statements}
    provenance = kinds["https://github.com/slsa-framework/source-tool/source-provenance/v1"]
    vsa = kinds["https://slsa.dev/verification_summary/v1"]
    tag = kinds["https://github.com/slsa-framework/source-tool/tag-provenance/v1"]  # v1 tags the same commit
    for statement in (provenance, vsa, tag):
        assert statement["_type"] == "https://in-toto.io/Statement/v1"
        assert statement["subject"] == [{"digest": {"gitCommit": commit}}]
    assert provenance["predicate"]["actor"] == user.name and provenance["predicate"]["branch"] == "refs/heads/main"
    assert {c["name"] for c in provenance["predicate"]["controls"]} == {
        "CONTINUITY_ENFORCED", "TAG_HYGIENE", "PROVENANCE_AVAILABLE"}
    assert tag["predicate"]["tag"] == "refs/tags/v1"
    assert vsa["predicate"]["verificationResult"] == "PASSED"
    assert [lvl for lvl in vsa["predicate"]["verifiedLevels"] if lvl.startswith("SLSA_SOURCE_LEVEL_")] == [
        "SLSA_SOURCE_LEVEL_3"]
    missing = server.api("GET", f"/api/v1/tenants/{tenant}/repos/{repo}/attestations/{'0' * 40}", token="")
    assert missing.status_code == 404
    bad = server.api("GET", f"/api/v1/tenants/{tenant}/repos/{repo}/attestations/HEAD", token="")
    assert bad.status_code == 400 and "commit" in bad.text


def test_each_tamper_is_caught_by_verify_and_check(server: GitServer, tmp_path: Path) -> None:
    user, tenant, repo, work = _setup(server, tmp_path, "tamper")
    first = commit_files(work, server.git_env, {"a.txt": "1\n"})
    server.git(user, "tag", "v1", cwd=work)
    _push(server, user, work, "main", "v1")
    state = tmp_path / "state.json"
    url = _http_url(server, tenant, repo)
    assert _verify(server, url, "--since", str(state)).returncode == 0 and state.is_file()
    path = server.repo_path(tenant, repo)
    backup = tmp_path / "backup.git"
    shutil.copytree(path, backup)
    commit_files(work, server.git_env, {"a.txt": "2\n"})
    _push(server, user, work, "main")
    assert _verify(server, url, "--since", str(state)).returncode == 0  # the log grew: fine

    # An old backup restored over the newer state: only --since can tell.
    live = tmp_path / "live.git"
    shutil.move(path, live)
    shutil.copytree(backup, path)
    restored = _verify(server, url, "--since", str(state))
    assert restored.returncode == 1 and "refs/gitserver/log: the log no longer holds entry" in restored.stdout
    shutil.rmtree(path)
    shutil.move(live, path)

    # A second server with its own key, serving a copy whose history it re-signed.
    allowed = tmp_path / "allowed"
    allowed.write_text(requests.get(server.http_url + "/api/v1/signing-keys/allowed_signers", timeout=10).text)
    impostor = _impostor_copy(path, tmp_path / "impostor.git")
    faked = _verify(server, f"file://{impostor}", "--keys", str(allowed))
    assert faked.returncode == 1 and "which is not a trusted key" in faked.stdout
    assert any(line.startswith("refs/tags/repour-") for line in faked.stdout.splitlines())

    # A branch moved backwards and a tag re-pointed on disk.
    git = ["git", "--git-dir", str(path)]
    subprocess.run([*git, "update-ref", "refs/heads/main", first], check=True)
    other = subprocess.run([*git, "rev-parse", "main~1"], capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run([*git, "update-ref", "refs/tags/v1", other], check=True)
    # Until the reconciler's next pass the served refs differ from the log; after it, the log
    # itself holds the backwards move and the moved tag (as recovered entries), for ever.
    moved = {"refs/heads/main": ("served at", "moved backwards"), "refs/tags/v1": ("served at", "tag moved")}
    lines = _verify(server, url).stdout.splitlines()
    found = _check_lines(server, tenant, repo)
    for ref, whats in moved.items():
        assert any(line.startswith(f"{ref}: ") and any(w in line for w in whats) for line in lines), lines
        assert any(line.startswith(f"{tenant}/{repo} {ref}: ") and any(w in line for w in whats)
                   for line in found), found

    # A log entry rewritten (its message changed, its signature kept).
    _rewrite_tip(path)
    lines = _verify(server, url).stdout.splitlines()
    assert any(line.startswith(f"{LOG}: entry ") and "bad signature" in line for line in lines), lines
    found = _check_lines(server, tenant, repo)
    assert any(f"{LOG}: entry " in line and "bad signature" in line for line in found), found


def _impostor_copy(path: Path, into: Path) -> Path:
    """The repository with its log and archive tags re-signed by another key."""
    shutil.copytree(path, into)
    repo = pygit2.Repository(str(into))
    key = FileSigner(Ed25519PrivateKey.generate())
    for ref in list(repo.references):
        if ref.startswith("refs/tags/repour-"):
            tag = repo[repo.references[ref].target]
            assert isinstance(tag, pygit2.Tag) and tag.tagger is not None
            message = tag.message.split("-----BEGIN SSH SIGNATURE-----")[0]
            when = gitsign.Ident(tag.tagger.name, tag.tagger.email, _utc(tag.tagger.time))
            oid = gitsign.write_signed_tag(repo, key, str(tag.target), tag.name, when, message)
            repo.references[ref].set_target(pygit2.Oid(hex=oid))
    commits = list(repo.walk(repo.references[LOG].target, pygit2.enums.SortMode.TOPOLOGICAL |
                             pygit2.enums.SortMode.REVERSE))
    parent: list[str] = []
    for commit in commits:
        author = gitsign.Ident(commit.author.name, commit.author.email, _utc(commit.commit_time))
        parent = [gitsign.write_signed_commit(repo, key, str(commit.tree_id), parent, author, commit.message)]
    repo.references[LOG].set_target(pygit2.Oid(hex=parent[0]))
    return into


def _rewrite_tip(path: Path) -> None:
    raw = subprocess.run(["git", "--git-dir", str(path), "cat-file", "commit", LOG], capture_output=True,
                         check=True).stdout
    forged = raw.replace(b'"time":"2', b'"time":"1')  # the entry's date, a century back
    assert forged != raw
    oid = subprocess.run(["git", "--git-dir", str(path), "hash-object", "-t", "commit", "-w", "--stdin"],
                         input=forged, capture_output=True, check=True).stdout.decode().strip()
    subprocess.run(["git", "--git-dir", str(path), "update-ref", LOG, oid], check=True)


def _utc(seconds: int):  # type: ignore[no-untyped-def]
    import datetime as dt

    return dt.datetime.fromtimestamp(seconds, dt.UTC)
