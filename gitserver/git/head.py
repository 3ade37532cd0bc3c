"""A repository's HEAD: the branch a clone checks out (its "default branch").

The hooks import this module, so it uses only the standard library and the git CLI.

A new repository's HEAD names ``refs/heads/main`` before anything is pushed (it is "unborn").
When the first push brings ``master`` instead, every clone would warn ``remote HEAD refers to
nonexistent ref, unable to checkout``; like GitHub and Gitea, the first branch pushed to a
repository whose HEAD is unborn becomes HEAD.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from gitserver.git import refs

if TYPE_CHECKING:
    from pathlib import Path

HEAD = "HEAD"
SYMREF_PREFIX = "ref: "
# When one push creates several branches, these win (in this order) over push order.
PREFERRED_BRANCHES = (refs.HEADS + "main", refs.HEADS + "master")


def choose_head(current: str, unborn: bool, pushed: Sequence[str]) -> str | None:
    """The ref HEAD should name after a push that updated ``pushed``, or None to leave it."""
    branches = [ref for ref in pushed if ref.startswith(refs.HEADS)]
    if not unborn or not branches or current in branches:
        return None
    for preferred in PREFERRED_BRANCHES:
        if preferred in branches:
            return preferred
    return branches[0]


def adopt_pushed_branch(pushed: Sequence[str], git_dir: str | None) -> str | None:
    """After refs moved: when HEAD is unborn, point it at a branch just pushed.

    Returns the new HEAD, or None when it stays. Never raises: the push is already done, and a
    HEAD left as it was is still a valid repository.
    """
    if not git_dir or not pushed:
        return None
    try:
        current = _git(git_dir, "symbolic-ref", "-q", HEAD)
        if current is None:  # detached HEAD: someone set it on purpose
            return None
        unborn = _git(git_dir, "rev-parse", "-q", "--verify", current + "^{commit}") is None
        target = choose_head(current, unborn, pushed)
        if target is not None and _git(git_dir, "symbolic-ref", HEAD, target) is not None:
            return target
    except OSError:
        pass
    return None


def default_branch(repo_path: Path) -> str | None:
    """The branch HEAD names (``main``), read from the HEAD file; None if it names none."""
    try:
        text = (repo_path / HEAD).read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None
    ref = text.removeprefix(SYMREF_PREFIX)
    return refs.short_name(ref) if text.startswith(SYMREF_PREFIX) and ref.startswith(refs.HEADS) else None


def branch_exists(repo_path: Path, branch: str) -> bool:
    return _git(str(repo_path), "rev-parse", "-q", "--verify",
                f"{refs.HEADS}{branch}^{{commit}}") is not None


def set_default_branch(repo_path: Path, branch: str) -> None:
    """Point HEAD at ``refs/heads/<branch>``; the caller checked that the branch exists."""
    if _git(str(repo_path), "symbolic-ref", HEAD, refs.HEADS + branch) is None:
        raise OSError(f"git symbolic-ref failed in {repo_path}")


def _git(git_dir: str, *args: str) -> str | None:
    """stdout of ``git --git-dir <git_dir> args``, or None when git fails."""
    import subprocess  # here, not at the top: the hooks import this module on every push

    result = subprocess.run(["git", "--git-dir", git_dir, *args], stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, check=False)
    return result.stdout.strip() if result.returncode == 0 else None
