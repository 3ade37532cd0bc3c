"""The benchmark (``python -m bench``) must keep working: its tiniest profile end to end, against
the real ``gitserver serve`` and a real OpenSSH ``sshd``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import gitserver_ssh_available
from bench.repos import RepoSpec, generate, last_tag

REPO_ROOT = Path(__file__).resolve().parents[2]
SSHD = Path("/usr/sbin/sshd")


def _head(repo: Path) -> str:
    return subprocess.run(["git", "rev-parse", "main", last_tag(SPEC)], cwd=repo, check=True,
                          capture_output=True, text=True).stdout


SPEC = RepoSpec("t", commits=5, text_files=7, text_file_bytes=500, files_per_commit=2, tag_every=2,
                blob_files=2, blob_bytes=1000)


def test_generated_repositories_are_deterministic_and_cached(tmp_path: Path) -> None:
    first = generate(SPEC, tmp_path / "a")
    second = generate(SPEC, tmp_path / "b")
    assert _head(first) == _head(second)
    assert generate(SPEC, tmp_path / "a") == first  # served from the cache
    log = subprocess.run(["git", "log", "--format=%an %at", "main"], cwd=first, check=True,
                         capture_output=True, text=True).stdout.splitlines()
    assert len(log) == SPEC.commits
    assert log[-1] == "Bench Author 1700000000"


def _run_bench(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """The bench with a time limit that, when it passes, stops the bench with SIGTERM (it then
    stops its servers) rather than killing it and leaving them running."""
    with subprocess.Popen([sys.executable, "-m", "bench", *args], cwd=REPO_ROOT, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.terminate()
            stdout, stderr = proc.communicate(timeout=30)
            pytest.fail(f"the bench ran past {timeout} s\n{stdout[-3000:]}{stderr[-3000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


@pytest.mark.skipif(not SSHD.exists(), reason=f"{SSHD} is missing (apt-get install openssh-server)")
@pytest.mark.skipif(not gitserver_ssh_available(), reason="gitserver/ssh/server.py does not exist yet")
@pytest.mark.timeout(300)
def test_tiny_benchmark_runs_end_to_end(tmp_path: Path) -> None:
    # About 30 s on a quiet 2-core machine; the budget is for the suite's own load around it
    # (it ran past 80 s there with 4 workers busy): this checks that the bench runs, not its speed.
    out = tmp_path / "results"
    result = _run_bench(["--tiny", "--out", str(out), "--cache-dir", str(tmp_path / "cache")], 240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = (out / "latest.md").read_text()
    for metric in ("ls-remote, small repo", "full clone, medium repo", "full clone, large repo",
                   "shallow clone by tag", "push medium repo into an empty repo", "push of one small commit",
                   "4 concurrent clones", "auth + ls-remote, 1,000 keys", "large repo, matched crypto",
                   "server CPU per small push", "gitserver key import of 990 keys",
                   "4 concurrent shallow clones of one tag", "full clone with --bundle-uri",
                   "ls-remote with a certificate"):
        assert metric in table
    rows = json.loads((out / "latest.json").read_text())["rows"]
    # Times are positive on both sides; CPU rows may read 0 (10 ms ticks, one run) and a row
    # with no OpenSSH counterpart has NaN there.
    timed = [r for r in rows if r["unit"] == "s" and "CPU" not in r["metric"] and "of which" not in r["metric"]
             and r["openssh"] == r["openssh"]]
    assert timed and all(r["gitserver"] > 0 and r["openssh"] > 0 for r in timed), rows
    assert all(r["gitserver"] >= 0 and not r["openssh"] < 0 for r in rows), rows
    if os.getuid() == 0:
        assert "OpenSSH baseline login: gitbench (login shell /bin/sh" in table
    assert "failed runs" not in table
    assert "failures: gitserver 0, openssh 0" in table
