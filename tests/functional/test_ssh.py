"""The SSH daemon as a user meets it: real OpenSSH client, real git, real ``gitserver serve``."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from sqlalchemy import select

from gitserver.db import models
from tests.functional.conftest import GitServer, User, commit_files, make_repo

REFUSED = 128


@pytest.fixture
def acme(server: GitServer) -> dict[str, object]:
    """A tenant with a writer, a reader, and one repository they share."""
    tenant = server.new_tenant()
    writer = server.new_user(tenant)
    reader = server.new_user(tenant)
    repo = server.new_repo(tenant, grants={writer.name: "write", reader.name: "read"})
    return {"tenant": tenant, "writer": writer, "reader": reader, "repo": repo}


def _push_setup(server: GitServer, tmp_path: Path, acme: dict[str, object]) -> tuple[Path, str]:
    work = make_repo(tmp_path / "work", server.git_env)
    url = server.repo_url(acme["tenant"], acme["repo"])  # type: ignore[arg-type]
    server.git(acme["writer"], "push", url, "main", cwd=work)  # type: ignore[arg-type]
    return work, url


def test_bare_ssh_greets_and_exits_zero(server: GitServer, acme: dict[str, object]) -> None:
    user: User = acme["writer"]  # type: ignore[assignment]
    result = server.ssh(user)
    assert result.returncode == 0
    assert result.stdout == (f"Hi {user.name}! You've authenticated to gitserver as "
                             f"{user.tenant}/{user.name}; there is no shell access.\n"
                             f"Run 'ssh -p {server.ssh_port} git@127.0.0.1 help' for the commands "
                             "you can use here.\n")


def test_push_clone_round_trip_and_audit(server: GitServer, tmp_path: Path,
                                         acme: dict[str, object]) -> None:
    work, url = _push_setup(server, tmp_path, acme)
    head = commit_files(work, server.git_env, {"b.txt": "two\n"})
    pushed = server.git(acme["writer"], "push", url, "main", cwd=work)  # type: ignore[arg-type]
    assert "pipeline" in pushed.stderr and "queued" in pushed.stderr
    clone = tmp_path / "clone"
    server.git(acme["reader"], "clone", "-q", url, str(clone))  # type: ignore[arg-type]
    assert (clone / "b.txt").read_text() == "two\n"
    writer: User = acme["writer"]  # type: ignore[assignment]
    with server.db() as session:
        repo = session.scalars(select(models.Repository).where(
            models.Repository.name == acme["repo"])).one()
        pushes = session.scalars(select(models.Push).where(models.Push.repo_id == repo.id)
                                 .order_by(models.Push.id)).all()
        assert len(pushes) == 2
        last = pushes[-1]
        assert last.user_id == writer.id
        assert last.key_fingerprint == writer.fingerprint
        assert last.public_key_id is not None
        assert last.client_address == "127.0.0.1"
        assert last.protocol == "ssh"
        assert [(u.ref, u.new) for u in last.ref_updates] == [("refs/heads/main", head)]
        assert last.ref_updates[0].old != head
        key = session.scalars(select(models.PublicKey).where(
            models.PublicKey.fingerprint == writer.fingerprint)).one()
        assert key.last_used_at is not None


def test_protocol_v2_ls_remote(server: GitServer, tmp_path: Path, acme: dict[str, object]) -> None:
    work, url = _push_setup(server, tmp_path, acme)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=work, capture_output=True, text=True,
                          check=True).stdout.strip()
    env = {**server.client_env(acme["reader"]), "GIT_TRACE_PACKET": "1"}  # type: ignore[arg-type]
    result = subprocess.run(["git", "-c", "protocol.version=2", "ls-remote", url], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"{head}\trefs/heads/main" in result.stdout
    assert "version 2" in result.stderr  # the server spoke v2: GIT_PROTOCOL was passed on


def test_reader_cannot_push(server: GitServer, tmp_path: Path, acme: dict[str, object]) -> None:
    work, url = _push_setup(server, tmp_path, acme)
    commit_files(work, server.git_env, {"c.txt": "x\n"})
    result = server.git(acme["reader"], "push", url, "main", cwd=work, check=False)  # type: ignore[arg-type]
    assert result.returncode != 0
    assert f"ERROR: you have read access to '{acme['tenant']}/{acme['repo']}' and cannot push" in result.stderr


@pytest.mark.parametrize(("setup", "push_args", "ref", "rule"), [
    ("force", ["--force", "main"], "main", "non-fast-forward"),
    ("delete-branch", [":side"], "side", "delet"),
    ("delete-tag", [":refs/tags/v1"], "v1", "delet"),
    ("retag", ["--force", "refs/tags/v1"], "v1", "tag"),
    ("reserved-tag", ["main:refs/tags/repour-x"], "repour-x", "reserved"),
    ("reserved-branch", ["main:refs/heads/branch-repour-x"], "branch-repour-x", "reserved"),
])
def test_protected_history_refusals(server: GitServer, tmp_path: Path, acme: dict[str, object],
                                    setup: str, push_args: list[str], ref: str, rule: str) -> None:
    work, url = _push_setup(server, tmp_path, acme)
    writer = acme["writer"]
    env = dict(server.git_env)
    server.git(writer, "push", url, "main:side", "main:refs/tags/v1", cwd=work)  # type: ignore[arg-type]
    if setup == "force":
        subprocess.run(["git", "commit", "-q", "--amend", "-m", "rewritten"], cwd=work, env=env, check=True)
    if setup == "retag":
        commit_files(work, server.git_env, {"d.txt": "d\n"})
        subprocess.run(["git", "tag", "-f", "v1"], cwd=work, env=env, check=True, capture_output=True)
    result = server.git(writer, "push", url, *push_args, cwd=work, check=False)  # type: ignore[arg-type]
    assert result.returncode != 0
    rejected = [line for line in result.stderr.splitlines() if "[remote rejected]" in line]
    assert rejected and ref in rejected[0], result.stderr
    # Refused ref by ref, the rule is on that line; refused whole in pre-receive (a reserved
    # name), on the hook's own line naming the ref.
    reason = rejected[0] if "pre-receive hook declined" not in rejected[0] else \
        next(line for line in result.stderr.splitlines() if line.startswith("remote: error: refs/"))
    assert ref in reason and rule in reason.lower(), result.stderr


def test_mixed_push_lands_the_allowed_ref(server: GitServer, tmp_path: Path,
                                          acme: dict[str, object]) -> None:
    """A ref refused for a history rule does not hold up the others."""
    work, url = _push_setup(server, tmp_path, acme)
    server.git(acme["writer"], "push", url, "main:refs/tags/v1", cwd=work)  # type: ignore[arg-type]
    commit_files(work, server.git_env, {"e.txt": "e\n"})
    result = server.git(acme["writer"], "push", "--force", url, "main:refs/heads/feature",  # type: ignore[arg-type]
                        "main:refs/tags/v1", cwd=work, check=False)
    assert result.returncode != 0
    assert "v1 (existing tags cannot be moved)" in result.stderr
    remote = server.git(acme["reader"], "ls-remote", url).stdout  # type: ignore[arg-type]
    assert "refs/heads/feature" in remote


def test_mixed_push_with_a_reserved_name_is_refused_whole(server: GitServer, tmp_path: Path,
                                                          acme: dict[str, object]) -> None:
    work, url = _push_setup(server, tmp_path, acme)
    result = server.git(acme["writer"], "push", url, "main:refs/heads/feature",  # type: ignore[arg-type]
                        "main:refs/tags/repour-bad", cwd=work, check=False)
    assert result.returncode != 0
    assert "remote: error: refs/tags/repour-bad: this name is reserved for gitserver archives" in result.stderr
    assert "remote: error: refs/heads/feature: not updated" in result.stderr
    remote = server.git(acme["reader"], "ls-remote", url).stdout  # type: ignore[arg-type]
    assert "refs/heads/feature" not in remote
    assert "repour-bad" not in remote


def test_other_tenants_repo_looks_missing(server: GitServer, acme: dict[str, object]) -> None:
    other = server.new_tenant()
    hidden = server.new_repo(other)
    user = acme["writer"]
    seen = server.ssh(user, f"git-upload-pack '{other}/{hidden}.git'")  # type: ignore[arg-type]
    missing = server.ssh(user, f"git-upload-pack '{other}/nosuch.git'")  # type: ignore[arg-type]
    assert seen.returncode == missing.returncode == REFUSED
    assert seen.stderr == f"ERROR: repository '{other}/{hidden}' not found or you have no access\n"
    assert missing.stderr.replace("nosuch", hidden) == seen.stderr
    assert seen.stdout == missing.stdout == ""


def test_unknown_key_refused(server: GitServer) -> None:
    key, _public = server.new_key("stranger")
    result = server.ssh(key)
    assert result.returncode == 255
    assert "Permission denied (publickey)" in result.stderr


def test_deleted_key_and_disabled_user_refused(server: GitServer, acme: dict[str, object]) -> None:
    writer: User = acme["writer"]  # type: ignore[assignment]
    reader: User = acme["reader"]  # type: ignore[assignment]
    assert server.ssh(writer).returncode == 0
    assert server.ssh(reader).returncode == 0
    with server.db() as session:
        key = session.scalars(select(models.PublicKey).where(
            models.PublicKey.fingerprint == writer.fingerprint)).one()
        session.delete(key)
        session.get(models.User, reader.id).disabled = True
    for user in (writer, reader):
        result = server.ssh(user)
        assert result.returncode == 255
        assert "Permission denied (publickey)" in result.stderr


# Commands that are not git's are self-service commands (exit 1): test_ssh_selfservice.py.
@pytest.mark.parametrize("command", [
    "git-upload-pack '../x'", "git-upload-pack '`touch /tmp/pwned-ssh`/x'",
    "git-upload-pack 'a/b'; touch /tmp/pwned-ssh", "git-upload-pack --upload-pack=touch 'a/b'",
    "git upload-pack; touch /tmp/pwned-ssh", "git", "git-shell -c id",
])
def test_hostile_commands_refused(server: GitServer, acme: dict[str, object], command: str) -> None:
    result = server.ssh(acme["writer"], command)  # type: ignore[arg-type]
    assert result.returncode == REFUSED
    assert result.stderr.startswith("ERROR: ") and result.stderr.count("\n") == 1
    assert result.stdout == ""
    assert not Path("/tmp/pwned-ssh").exists()


def test_sftp_subsystem_refused(server: GitServer, acme: dict[str, object]) -> None:
    """asyncssh refuses the subsystem request itself (no sftp_factory): nothing is started."""
    result = server.ssh(acme["writer"], "sftp", options=("-s",))  # type: ignore[arg-type]
    assert result.returncode == 255
    assert "subsystem request failed" in result.stderr


@pytest.mark.parametrize("options", [
    ("-N", "-L", "0:127.0.0.1:22", "-o", "ExitOnForwardFailure=yes"),
    ("-N", "-R", "0:127.0.0.1:22", "-o", "ExitOnForwardFailure=yes"),
    ("-W", "127.0.0.1:22"),
])
def test_forwarding_refused(server: GitServer, acme: dict[str, object],
                            options: tuple[str, ...]) -> None:
    result = server.ssh(acme["writer"], options=options, timeout=30)  # type: ignore[arg-type]
    assert result.returncode != 0
    assert "forward" in result.stderr.lower() or "open failed" in result.stderr.lower() \
        or "administratively prohibited" in result.stderr.lower(), result.stderr


def test_only_git_protocol_env_passed(server: GitServer, tmp_path: Path,
                                      acme: dict[str, object]) -> None:
    """The client sets LD_PRELOAD and GIT_DIR; a hook-visible effect would break the clone."""
    _work, url = _push_setup(server, tmp_path, acme)
    ssh = " ".join(server.ssh_command(acme["reader"].key_path))  # type: ignore[union-attr]
    ssh += " -o SetEnv=LD_PRELOAD=/nonexistent.so -o SetEnv=GIT_DIR=/tmp -o SetEnv=GIT_PROTOCOL=version=2"
    env = {**server.git_env, "GIT_SSH_COMMAND": ssh, "GIT_TRACE_PACKET": "1"}
    result = subprocess.run(["git", "-c", "protocol.version=2", "ls-remote", url], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "refs/heads/main" in result.stdout
    assert "ERROR: ld.so" not in result.stderr and "LD_PRELOAD" not in result.stderr
