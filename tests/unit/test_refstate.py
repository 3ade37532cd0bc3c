"""gitserver.git.refstate: the reconciler's cheap view of a repository's refs."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from gitserver.git import refstate


def _repo(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "r.git"
    subprocess.run(["git", "init", "-q", "--bare", str(path)], check=True)
    tree = subprocess.run(["git", "--git-dir", str(path), "mktree"], input="", text=True,
                          capture_output=True, check=True).stdout.strip()
    env = {**os.environ, "GIT_AUTHOR_NAME": "a", "GIT_AUTHOR_EMAIL": "a@x", "GIT_COMMITTER_NAME": "a",
           "GIT_COMMITTER_EMAIL": "a@x"}
    commit = subprocess.run(["git", "--git-dir", str(path), "commit-tree", tree, "-m", "x"], env=env,
                            capture_output=True, text=True, check=True).stdout.strip()
    return path, commit


def test_fingerprint_changes_with_every_ref_write(tmp_path: Path) -> None:
    path, commit = _repo(tmp_path)
    git = ["git", "--git-dir", str(path)]
    seen = {refstate.fingerprint(path)}
    for args in (["update-ref", "refs/heads/a", commit],        # a new loose ref
                 ["update-ref", "refs/heads/deep/er/b", commit],  # in a new nested directory
                 ["update-ref", "refs/heads/deep/er/c", commit],  # in an existing nested one
                 ["pack-refs", "--all"],                         # loose refs into packed-refs
                 ["update-ref", "refs/tags/t", commit]):
        subprocess.run([*git, *args], check=True)
        now = refstate.fingerprint(path)
        assert now not in seen, args
        seen.add(now)
    assert refstate.fingerprint(path) == refstate.fingerprint(path)  # and stable when idle


def test_ledger_refs_leave_archive_refs_out(tmp_path: Path) -> None:
    path, commit = _repo(tmp_path)
    for ref in ("refs/heads/main", "refs/tags/repour-abc", "refs/heads/branch-repour-abc",
                "refs/tags/Repour-odd"):
        subprocess.run(["git", "--git-dir", str(path), "update-ref", ref, commit], check=True)
    assert refstate.ledger_refs(refstate.read_refs(path)) == {"refs/heads/main": commit}


def test_only_stale_quarantines_and_ref_locks_are_removed(tmp_path: Path) -> None:
    path, _ = _repo(tmp_path / "repos" / "t")
    stale = path / "objects" / "tmp_objdir-incoming-abc123"
    live = path / "objects" / "tmp_objdir-incoming-def456"
    for q in (stale, live):
        (q / "pack").mkdir(parents=True)
        (q / "pack" / "tmp_pack_x").write_bytes(b"x")
    old = time.time() - 3600
    for p in (stale, stale / "pack", stale / "pack" / "tmp_pack_x"):
        os.utime(p, (old, old))
    dead_lock = path / "refs" / "heads" / "x.lock"
    live_lock = path / "refs" / "heads" / "y.lock"
    dead_lock.write_text("")
    live_lock.write_text("")
    os.utime(dead_lock, (old, old))
    removed = refstate.remove_stale_quarantines(tmp_path / "repos", older_than=600)
    assert removed == [stale, dead_lock]
    assert not stale.exists() and live.exists()
    assert not dead_lock.exists() and live_lock.exists()
