"""The server's own refs move with their reference-log entries, with real git, OpenSSH and the
real server on SQLite and PostgreSQL (docs/provenance.md, "Who writes it, and when"): an
archive tag and its entry appear together, and a worker that cannot sign leaves neither, its
pipeline failing with the reason; ``gitserver verify`` and ``gitserver check`` pass after."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from tests.functional.conftest import GitServer, commit_files, make_repo, start_server
from tests.functional.test_pipelines import pushed_pipeline_id, wait_pipeline
from tests.functional.test_provenance_atomic import _entries, _ref

NO_KEY = "gitserver could not write the reference log (the server's signing key is unusable); nothing was changed"


def _archive_tags(server: GitServer, tenant: str, repo: str) -> list[str]:
    out = subprocess.run(["git", "--git-dir", str(server.repo_path(tenant, repo)), "tag", "-l", "repour-*"],
                         capture_output=True, text=True, check=True).stdout
    return out.split()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


def test_a_worker_that_cannot_sign_makes_no_archive_and_says_why(
        db_url: str, git_env: dict[str, str], tmp_path: Path) -> None:
    """The worker is started with an ssh-agent and a key that is not the server's current one:
    the push (signed by the SSH daemon, which has its key) lands; its archive cannot be logged,
    so it is not made."""
    srv = start_server(tmp_path, db_url, git_env, parts=("ssh", "api"))
    try:
        tenant = srv.new_tenant()
        user = srv.new_user(tenant)
        repo = srv.new_repo(tenant, name="ownrefs", visibility="public", grants={user.name: "write"})
        work = make_repo(tmp_path / "work", srv.git_env)
        srv.git(user, "remote", "add", "origin", srv.repo_url(tenant, repo), cwd=work)
        pipeline = pushed_pipeline_id(srv.git(user, "push", "-q", "origin", "main", cwd=work).stderr)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
        worker = srv.spawn("worker", {"GITSERVER_SIGNING_AGENT": str(tmp_path / "no-agent.sock"),
                                      "GITSERVER_SIGNING_KEY": (tmp_path / "other.pub").read_text().strip()})
        try:
            failed = wait_pipeline(srv, pipeline)
        finally:
            _stop(worker)
        assert failed.status == "failed" and NO_KEY in failed.error, (failed.error, srv.logs())
        assert _archive_tags(srv, tenant, repo) == []
        assert [e["protocol"] for e in _entries(srv, tenant, repo)] == ["ssh"]  # the push's only
        assert [line for line in srv.cli("check", check=False).stdout.splitlines()
                if line.startswith(f"{tenant}/{repo} ")] == []
        # A worker with its key: the next push's archive and its entries appear together.
        srv.procs["worker"] = srv.spawn("worker")
        new = commit_files(work, srv.git_env, {"b.txt": "b\n"})
        pushed = srv.git(user, "push", "-q", "origin", "main", cwd=work)
        assert wait_pipeline(srv, pushed_pipeline_id(pushed.stderr)).status == "succeeded", srv.logs()
        [tag] = _archive_tags(srv, tenant, repo)
        server_entries = {e["ref"]: e for e in _entries(srv, tenant, repo) if e["protocol"] == "server"}
        assert server_entries[f"refs/tags/{tag}"]["new"] == _ref(srv, tenant, repo, f"refs/tags/{tag}")
        assert f"refs/heads/branch-{tag}" in server_entries and _entries(srv, tenant, repo)[0]["new"] != new
        verified = srv.cli("verify", f"{srv.http_url}/git/{tenant}/{repo}.git", check=False)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert [line for line in srv.cli("check", check=False).stdout.splitlines()
                if line.startswith(f"{tenant}/{repo} ")] == []
    finally:
        srv.stop()
