"""An alignment tool (the project's build plugins, for real: PME and GME run them) that tries to
make the server's own git run its commands once the sandbox is gone (issue 21, finding 1), on
a real ``POST /adjust`` on each backend.

The pushed tree has a gitlink ``sub`` to a commit whose id is known in advance (fixed dates).
Inside its sandbox the tool recreates that commit in ``sub/``, names a filter driver for every
path in ``.gitattributes`` (its own and the top-level one), defines it with an fsmonitor in
``sub/.git/config`` and touches a file there; ``git add --all`` as the server ran it would run
``git status`` in ``sub``, and so the filter, outside the sandbox, as root. It also leaves a
symbolic link to a server file, a nested repository and a FIFO. The server must run none of it
and commit only the tool's plain changes.

Needs root (the sandbox) and bubblewrap, like test_sandbox.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.functional.conftest import make_repo, start_server

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="sandboxes need the server to run as root")

# argv: <escape marker> <data dir>, or --submodule <dir> (make the submodule commit, print its id).
TOOL = r'''
import os, pathlib, shutil, subprocess, sys
GIT = shutil.which("git", path="/usr/bin:/bin:/usr/local/bin")
FIXED = {"GIT_AUTHOR_NAME": "a", "GIT_AUTHOR_EMAIL": "a@example.org", "GIT_COMMITTER_NAME": "a",
         "GIT_COMMITTER_EMAIL": "a@example.org", "GIT_AUTHOR_DATE": "2020-01-01T00:00:00Z",
         "GIT_COMMITTER_DATE": "2020-01-01T00:00:00Z", "GIT_CONFIG_NOSYSTEM": "1",
         "HOME": os.environ.get("HOME", "/tmp"), "PATH": "/usr/bin:/bin"}

def git(*args, cwd):
    return subprocess.run([GIT, "-c", "init.defaultBranch=main", *args], cwd=cwd, env=FIXED,
                          check=True, capture_output=True, text=True).stdout.strip()

def repository(path, text):
    path.mkdir(exist_ok=True)
    git("init", "-q", ".", cwd=path)
    (path / "file.txt").write_text(text)
    git("add", "file.txt", cwd=path)
    git("commit", "-q", "-m", "fixed", cwd=path)
    return git("rev-parse", "HEAD", cwd=path)

if sys.argv[1] == "--submodule":
    print(repository(pathlib.Path(sys.argv[2]), "submodule\n"))
    sys.exit(0)
marker, data = sys.argv[1], sys.argv[2]
root = pathlib.Path.cwd()
# Quoted: an unquoted ";" starts a comment in a git config file.
evil = f"\"sh -c 'id > {marker}; ls -a {data} >> {marker}; cat'\""
if (root / "MOVE").exists():
    # Move the work tree (and the server's .git in it) aside; put a repository of its own there.
    os.rename(root, root.parent / "moved")
    repository(root, "replaced\n")
    with open(root / ".git" / "config", "a") as fh:
        fh.write(f'[filter "x"]\n\tclean = {evil}\n\trequired = true\n')
    (root / ".gitattributes").write_text("* filter=x\n")
    later = os.stat(root / "file.txt").st_mtime + 10
    os.utime(root / "file.txt", (later, later))
    sys.exit(0)
repository(root / "sub", "submodule\n")
with open(root / "sub" / ".git" / "config", "a") as fh:
    fh.write(f'[filter "x"]\n\tclean = {evil}\n\tsmudge = {evil}\n\trequired = true\n'
             f"[core]\n\tfsmonitor = {evil}\n")
# Touched, not changed: the same size, so git must hash it, through the filter, to compare.
later = os.stat(root / "sub" / "file.txt").st_mtime + 10
os.utime(root / "sub" / "file.txt", (later, later))
(root / "sub" / ".gitattributes").write_text("* filter=x\n")
(root / ".gitattributes").write_text("* filter=x\n")
(root / "aligned.txt").write_text("aligned\n")
(root / "pom.xml").write_text("<p>aligned</p>\n")
os.symlink("/etc/hostname", root / "escape-link")
repository(root / "nested", "nested\n")
os.mkfifo(root / "pipe")
'''


def run_git(git_env: dict[str, str], *args: str, cwd: Path | None = None) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, env=git_env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"git {' '.join(args)}: {result.stderr}"
    return result.stdout


def test_adjust_commits_the_tools_files_without_running_its_git_config(
        tmp_path: Path, db_url: str, git_env: dict[str, str]) -> None:
    python = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin") or sys.executable
    tool_dir = tmp_path / "tool"
    tool_dir.mkdir()
    (tool_dir / "attack.py").write_text(TOOL)
    # Outside the sandbox (its /tmp is private): only something running on the host writes it.
    marker = tmp_path / "escaped"
    data_dir = tmp_path / "data"
    sub_commit = subprocess.run([python, str(tool_dir / "attack.py"), "--submodule", str(tmp_path / "c")],
                                capture_output=True, text=True, check=True).stdout.strip()
    srv = start_server(tmp_path, db_url, git_env, extra_env={
        "GITSERVER_ADJUST_PROCESS_COMMAND": f"{python} {tool_dir / 'attack.py'} {marker} {data_dir}",
        "GITSERVER_SANDBOX_READ_ONLY_PATHS": str(tool_dir)})
    try:
        tenant = srv.new_tenant()
        user = srv.new_user(tenant, role="admin")
        repo = srv.new_repo(tenant)
        work = make_repo(tmp_path / "work", git_env, {"pom.xml": "<p/>\n", "README.md": "hi\n"})
        run_git(git_env, "update-index", "--add", "--cacheinfo", f"160000,{sub_commit},sub", cwd=work)
        run_git(git_env, "commit", "-q", "-m", "gitlink", cwd=work)
        srv.git(user, "push", "-q", srv.repo_url(tenant, repo), "main", cwd=work)
        spec = {"ref": "main", "internal_url": {"readwrite": srv.repo_url(tenant, repo),
                                                "readonly": f"{srv.http_url}/git/{tenant}/{repo}.git"}}
        resp = srv.api("POST", "/adjust", json=spec, token=user.token)
        assert not marker.exists(), f"the tool's git config ran on the host:\n{marker.read_text()}"
        assert resp.status_code == 200, resp.text
        tag = resp.json()["tag"]
        listing = run_git(git_env, "--git-dir", str(srv.repo_path(tenant, repo)), "ls-tree", "-r", tag)
        entries = {line.split("\t", 1)[1]: line.split("\t", 1)[0].split() for line in listing.splitlines()}
        # The gitlink is the pushed one; nothing of the tool's sub/ (its files, its .git) is committed.
        assert entries["sub"] == ["160000", "commit", sub_commit]
        assert not any(path.startswith("sub/") for path in entries)
        # A nested repository is data: its files, never its .git, never as a gitlink.
        assert entries["nested/file.txt"][0] == "100644"
        assert not any(".git/" in path for path in entries)
        # The link is stored as a link (its target's text), never followed.
        assert entries["escape-link"][0] == "120000"
        show = ["--git-dir", str(srv.repo_path(tenant, repo)), "show"]
        assert run_git(git_env, *show, f"{tag}:escape-link") == "/etc/hostname"
        # The tool's plain changes are committed byte for byte (no filter, attributes are data).
        assert run_git(git_env, *show, f"{tag}:aligned.txt") == "aligned\n"
        assert run_git(git_env, *show, f"{tag}:pom.xml") == "<p>aligned</p>\n"
        assert run_git(git_env, *show, f"{tag}:.gitattributes") == "* filter=x\n"
        assert run_git(git_env, *show, f"{tag}:README.md") == "hi\n"
        assert "pipe" not in entries  # a FIFO has no content
        # A tool that moves the work tree aside and leaves a repository of its own in its place.
        work2 = make_repo(tmp_path / "work2", git_env, {"MOVE": "yes\n"})
        srv.git(user, "push", "-q", srv.repo_url(tenant, repo), "main:move", cwd=work2)
        moved = srv.api("POST", "/adjust", json={**spec, "ref": "move"}, token=user.token)
        assert not marker.exists(), f"the tool's git config ran on the host:\n{marker.read_text()}"
        assert moved.status_code == 400, moved.text
        assert "moved or replaced the work tree or its .git" in moved.json()["desc"], moved.text
    finally:
        srv.stop()
