"""The package as a user gets it: a wheel built from this checkout, installed with pip into a
fresh virtualenv outside the source tree, runs ``init``, ``db upgrade``, ``serve`` and ``check``
on its own files (hook templates, migrations, version) — nothing may be found next to the
checkout.

pip resolves the wheel's declared dependencies from the same index and cache ``./dev`` uses, so
a dependency missing from pyproject.toml fails here too. The versions are held to the server
lock (as constraints: a user's pip does not check our hashes), or are the newest releases under
``./dev test --latest``. SQLite only: what is under test is the package's files, not the
database backend.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from gitserver.git.store import HOOK_NAMES
from tests.conftest import wait_for
from tests.functional.conftest import REPO_ROOT, GitServer, make_repo

BUILD_COMMIT = "0123456789abcdef0123456789abcdef01234567"
# What a source tree holds besides the package; none of it may be copied into the build.
NOT_SOURCES = shutil.ignore_patterns(".git", ".venv", ".venv-latest", "var", "build", "dist", "*.egg-info",
                                     "__pycache__", ".pytest_cache", "results")


def run(argv: list[str | Path], cwd: Path, env: dict[str, str] | None = None,
        timeout: float = 180) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, text=True, capture_output=True,
                            timeout=timeout, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, argv))} failed ({result.returncode}):\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def lock_constraints(path: Path) -> list[str]:
    """pip arguments holding the install to the server lock's versions, unless testing the newest."""
    if os.environ.get("GITSERVER_TEST_LATEST"):
        return []
    pins = [line.rstrip(" \\") for line in (REPO_ROOT / "requirements" / "server.lock").read_text().splitlines()
            if line[:1].isalnum()]
    path.write_text("\n".join(pins) + "\n")
    return ["-c", str(path)]


def pip_env() -> dict[str, str]:
    # Nothing of this checkout may leak into the installed interpreter's import path.
    return {k: v for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV") and not k.startswith("GITSERVER_")}


@pytest.fixture(scope="module")
def venv_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The interpreter of a fresh venv holding gitserver installed from a wheel of this tree."""
    root = tmp_path_factory.mktemp("installed")
    # Build from a copy, so the build writes nothing into the checkout; stamp the commit the
    # way an image build does (the build-time value GET /version reports).
    source = root / "source"
    shutil.copytree(REPO_ROOT, source, ignore=NOT_SOURCES)
    (source / "gitserver" / "BUILD_COMMIT").write_text(BUILD_COMMIT + "\n")
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "--no-deps",
         "--wheel-dir", root / "dist", source], cwd=root, env=pip_env())
    wheels = list((root / "dist").glob("gitserver-*.whl"))
    assert len(wheels) == 1, wheels
    shutil.rmtree(source)
    venv = root / "venv"
    run([sys.executable, "-m", "venv", venv], cwd=root, env=pip_env())
    python = venv / "bin" / "python"
    run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", wheels[0],
         *lock_constraints(root / "constraints.txt")], cwd=root, env=pip_env())
    return python


def test_installed_wheel_inits_serves_and_archives_a_push(venv_python: Path, tmp_path: Path,
                                                          git_env: dict[str, str]) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    where = run([venv_python, "-c", "import gitserver; print(gitserver.__file__)"], cwd=outside,
                env=pip_env()).stdout.strip()
    assert Path(where).is_relative_to(venv_python.parent.parent), f"gitserver imported from {where}"
    assert not Path(where).is_relative_to(REPO_ROOT)

    data = tmp_path / "data"
    srv = GitServer(data, f"sqlite:///{data / 'gitserver.db'}", git_env, python=str(venv_python), cwd=outside)
    srv.env = {k: v for k, v in srv.env.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    try:
        # A new user's first commands print nothing but their own words: no dependency's warning.
        first = srv.cli("init")
        assert first.stderr == "", first.stderr
        srv.start()  # gitserver init (again: idempotent), token create, serve; waits for SSH and /healthz
        assert srv.cli("db", "upgrade").returncode == 0

        # init filled the packaged templates: each hook runs the venv's interpreter.
        for name in HOOK_NAMES:
            hook = data / "hooks" / name
            text = hook.read_text()
            assert os.access(hook, os.X_OK), f"{name} is not executable"
            assert str(venv_python) in text and "@PYTHON@" not in text and "@DATA_DIR@" not in text

        key_path, _public = srv.new_key("installed")
        tenant = srv.cli("tenant", "create", "acme")
        assert tenant.stderr == "", tenant.stderr
        srv.cli("user", "create", "acme", "alice", "--role", "admin")
        srv.cli("key", "add", "acme", "alice", str(key_path.with_suffix(".pub")))
        srv.cli("repo", "create", "acme", "widgets")
        repo = srv.repo_path("acme", "widgets")
        hooks_path = run(["git", "config", "--file", repo / "config", "core.hooksPath"], cwd=outside)
        assert hooks_path.stdout.strip() == str(data / "hooks")

        work = make_repo(tmp_path / "work", git_env, {"README.md": "installed\n"})
        url = srv.repo_url("acme", "widgets")
        srv.git(key_path, "remote", "add", "origin", url, cwd=work)
        pushed = srv.git(key_path, "push", "origin", "main", cwd=work)
        assert "pipeline" in pushed.stderr and "queued" in pushed.stderr, pushed.stderr
        # The hooks refuse what the rules forbid, so they ran from the installed package.
        refused = srv.git(key_path, "push", "origin", ":main", cwd=work, check=False)
        assert refused.returncode != 0 and "deleting branches and tags is not allowed" in refused.stderr

        clone = tmp_path / "clone"
        srv.git(key_path, "clone", "-q", url, str(clone))
        assert (clone / "README.md").read_text() == "installed\n"

        def archived() -> bool:
            refs = srv.git(key_path, "ls-remote", url, "refs/tags/repour-*").stdout
            return "refs/tags/repour-" in refs

        wait_for(archived, timeout=60, interval=0.3, what="the push's archive tag")

        # The installed check finds its hook templates too: the hooks init wrote match them.
        checked = srv.cli("check", check=False)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "checked 1 repositories" in checked.stderr and "0 problem(s)" in checked.stderr, checked.stderr

        version = requests.get(srv.http_url + "/version", timeout=10).json()
        expected = run([venv_python, "-c", "import gitserver; print(gitserver.__version__)"], cwd=outside,
                       env=pip_env()).stdout.strip()
        assert version["version"] == expected and version["commit"] == BUILD_COMMIT
    except BaseException:
        print(srv.logs())
        raise
    finally:
        srv.stop()
