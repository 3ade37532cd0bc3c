"""The protected-history hooks with the real git binary, without SSH.

git pushes through a ``--receive-pack`` wrapper that runs exactly the argv the server uses
(``gitserver.git.store.git_argv``), so these tests cover proc-receive, pre-receive and the
hook's own way into the ledger (gitserver.push.hookdb), recording the push straight into the database
(SQLite and PostgreSQL).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from gitserver.admin import repos, tenants
from gitserver.config import load
from gitserver.db import models
from gitserver.db.session import transaction
from gitserver.runtime import Runtime, initialise
from tests.conftest import SERVER_REFS
from tests.functional.conftest import commit_files, make_repo

WRAPPER = """#!/bin/sh
exec {python} -c 'import os, sys
from pathlib import Path
from gitserver.git.store import git_argv
argv = git_argv("receive-pack", Path(sys.argv[1]), Path(os.environ["GITSERVER_DATA_DIR"]) / "hooks")
os.execvp(argv[0], argv)' "$@"
"""


@pytest.fixture
def site(tmp_path: Path, db_url: str, git_env: dict[str, str]):  # type: ignore[no-untyped-def]
    env = {"GITSERVER_DATA_DIR": str(tmp_path / "data"), "GITSERVER_DATABASE_URL": db_url}
    cfg = load(environ=env)
    initialise(cfg)
    runtime = Runtime.create(cfg, pool_size=1)
    with transaction(runtime.sessions) as session:
        tenant = tenants.create_tenant(session, "acme")
        repo = repos.create_repo(session, runtime.store, tenant, "widgets")
        repo_id = repo.id
    wrapper = tmp_path / "receive-pack"
    wrapper.write_text(WRAPPER.format(python=sys.executable))
    wrapper.chmod(0o755)
    push_env = {**git_env, **env, "GITSERVER_REPO_ID": str(repo_id), "GITSERVER_PERMISSION": "write",
                "GITSERVER_PUSH_PROTOCOL": "internal"}
    work = make_repo(tmp_path / "work", git_env)
    yield runtime, repo_id, wrapper, push_env, work, runtime.store.path("acme", "widgets")
    runtime.dispose()


def push(work: Path, wrapper: Path, env: dict[str, str], target: Path, *refspecs: str,
         force: bool = False) -> subprocess.CompletedProcess[str]:
    argv = ["git", "push", f"--receive-pack={wrapper}", str(target), *refspecs]
    if force:
        argv.insert(2, "--force")
    return subprocess.run(argv, cwd=work, env=env, text=True, capture_output=True, timeout=60)


def remote_refs(path: Path) -> dict[str, str]:
    out = subprocess.run(["git", "for-each-ref", "--format=%(refname) %(objectname)"], cwd=path,
                         capture_output=True, text=True, check=True).stdout
    # The reference log and the attestation notes are the server's own (docs/provenance.md).
    return {ref: oid for ref, oid in (line.split(" ", 1) for line in out.splitlines())
            if not ref.startswith(SERVER_REFS)}


def rev_parse(work: Path, rev: str, git_env: dict[str, str]) -> str:
    return subprocess.run(["git", "rev-parse", rev], cwd=work, env=git_env, capture_output=True, text=True,
                          check=True).stdout.strip()


def has_object(repo: Path, oid: str) -> bool:
    return subprocess.run(["git", "cat-file", "-e", oid], cwd=repo, capture_output=True).returncode == 0


def test_push_is_recorded_with_pipeline(site, git_env) -> None:  # type: ignore[no-untyped-def]
    runtime, repo_id, wrapper, env, work, target = site
    result = push(work, wrapper, env, target, "main", "main:refs/tags/v1")
    assert result.returncode == 0, result.stderr
    assert "pipeline 1 queued: http://127.0.0.1:8080/api/v1/pipelines/1" in result.stderr
    with runtime.sessions() as session:
        pushes = session.scalars(select(models.Push).where(models.Push.repo_id == repo_id)).all()
        assert len(pushes) == 1
        updates = {(u.ref, u.old) for u in pushes[0].ref_updates}
        assert updates == {("refs/heads/main", "0" * 40), ("refs/tags/v1", "0" * 40)}
        pipeline = session.scalar(select(models.Pipeline).where(models.Pipeline.push_id == pushes[0].id))
        assert pipeline is not None and pipeline.status == "queued"
        assert session.scalar(select(models.Job).where(models.Job.pipeline_id == pipeline.id)) is not None


def test_each_ref_judged_on_its_own(site, git_env) -> None:  # type: ignore[no-untyped-def]
    _runtime, _repo_id, wrapper, env, work, target = site
    assert push(work, wrapper, env, target, "main", "main:refs/tags/v1").returncode == 0
    before = remote_refs(target)
    subprocess.run(["git", "commit", "-q", "--amend", "-m", "rewritten"], cwd=work, env=git_env, check=True)
    result = push(work, wrapper, env, target, "main", "main:refs/tags/v1", "main:refs/heads/feature", force=True)
    assert result.returncode == 1
    assert "! [remote rejected] main -> main (non-fast-forward pushes are not allowed)" in result.stderr
    assert "! [remote rejected] main -> v1 (existing tags cannot be moved)" in result.stderr
    assert "* [new branch]      main -> feature" in result.stderr
    after = remote_refs(target)
    assert after["refs/heads/main"] == before["refs/heads/main"]
    assert after["refs/tags/v1"] == before["refs/tags/v1"]
    assert "refs/heads/feature" in after  # the allowed ref landed


def test_a_reserved_name_refuses_the_whole_push_and_stores_nothing(site, git_env) -> None:  # type: ignore[no-untyped-def]
    """Refused in pre-receive, while the objects are in quarantine: the allowed branch beside
    the reserved names does not land either, and the pushed commit is not kept."""
    _runtime, _repo_id, wrapper, env, work, target = site
    commit_files(work, git_env, {"secret.txt": "TOPSECRET\n"}, "secret")
    commit = rev_parse(work, "HEAD", git_env)
    result = push(work, wrapper, env, target, "main:refs/heads/feature", "main:refs/tags/repour-x",
                  "main:refs/heads/branch-repour-y")
    assert result.returncode == 1
    assert remote_refs(target) == {}
    assert not has_object(target, commit)
    assert "remote: error: refs/tags/repour-x: this name is reserved for gitserver archives" in result.stderr
    assert "remote: error: refs/heads/branch-repour-y: this name is reserved for gitserver archives" in result.stderr
    assert "remote: error: refs/heads/feature: not updated: another ref of this push was refused" in result.stderr
    assert "! [remote rejected] main -> repour-x (pre-receive hook declined)" in result.stderr


def test_deletes_refused(site) -> None:  # type: ignore[no-untyped-def]
    _runtime, _repo_id, wrapper, env, work, target = site
    assert push(work, wrapper, env, target, "main", "main:refs/tags/v1").returncode == 0
    result = push(work, wrapper, env, target, ":main", ":refs/tags/v1")
    assert result.returncode == 1
    assert "! [remote rejected] main (deleting branches and tags is not allowed)" in result.stderr
    assert "! [remote rejected] v1 (deleting branches and tags is not allowed)" in result.stderr
    assert set(remote_refs(target)) == {"refs/heads/main", "refs/tags/v1"}


def test_without_write_permission_nothing_changes(site, git_env) -> None:  # type: ignore[no-untyped-def]
    """Refused whole in pre-receive: the reader's objects are not kept either."""
    runtime, _repo_id, wrapper, env, work, target = site
    commit_files(work, git_env, {"secret.txt": "TOPSECRET\n"}, "secret")
    commit = rev_parse(work, "HEAD", git_env)
    result = push(work, wrapper, {**env, "GITSERVER_PERMISSION": "read"}, target, "main")
    assert result.returncode == 1
    assert remote_refs(target) == {}
    assert not has_object(target, commit)
    assert "remote: error: refs/heads/main: you do not have write permission" in result.stderr
    assert "! [remote rejected] main -> main (pre-receive hook declined)" in result.stderr
    with runtime.sessions() as session:
        assert session.scalars(select(models.Push)).all() == []


def test_pre_receive_guards_a_plain_receive_pack(site, git_env) -> None:  # type: ignore[no-untyped-def]
    """git run without the server's -c flags (no proc-receive) still meets the rules, whole-push."""
    _runtime, _repo_id, _wrapper, env, work, target = site
    argv = ["git", "push", str(target), "main"]
    assert subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True).returncode == 0
    subprocess.run(["git", "commit", "-q", "--amend", "-m", "rewritten"], cwd=work, env=git_env, check=True)
    result = subprocess.run([*argv[:2], "--force", *argv[2:]], cwd=work, env=env, capture_output=True, text=True)
    assert result.returncode == 1
    assert "! [remote rejected] main -> main" in result.stderr
    # git's own receive.denyNonFastForwards or the pre-receive hook, whichever comes first.
    assert "non-fast-forward" in result.stderr


def test_init_is_idempotent_and_keeps_host_key(tmp_path: Path) -> None:
    cfg = load(environ={"GITSERVER_DATA_DIR": str(tmp_path / "d")})
    first = initialise(cfg)
    key = (cfg.host_key_dir / "ssh_host_ed25519_key").read_bytes()
    assert any("host key" in line for line in first)
    assert initialise(cfg) == []
    assert (cfg.host_key_dir / "ssh_host_ed25519_key").read_bytes() == key
    for kind in ("ed25519", "ecdsa", "rsa"):
        assert oct(os.stat(cfg.host_key_dir / f"ssh_host_{kind}_key").st_mode & 0o777) == "0o600"
