"""Fixture repositories with what real histories carry, built by code (pinned HOME, author and
date come from the ``git_env`` fixture), so every run makes the same objects."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path

ZERO_TREE_MODE = b"40000"


def git(path: Path, git_env: Mapping[str, str], *args: str, input: bytes | None = None) -> str:
    result = subprocess.run(["git", *args], cwd=path, env=dict(git_env), input=input,
                            capture_output=True, check=False, timeout=120)
    if result.returncode != 0:
        raise AssertionError(f"git {' '.join(args)}: {result.stderr.decode(errors='replace')}")
    return result.stdout.decode().strip()


def write_object(path: Path, git_env: Mapping[str, str], kind: str, body: bytes) -> str:
    """Store ``body`` as an object exactly as given (``--literally``: no checks, like the old
    tools that wrote the odd objects of real histories)."""
    return git(path, git_env, "hash-object", "-t", kind, "-w", "--literally", "--stdin", input=body)


def tree(path: Path, git_env: Mapping[str, str], entries: list[tuple[bytes, bytes, str]]) -> str:
    """A tree from ``(mode, name, oid)`` entries, written in the given order."""
    body = b"".join(mode + b" " + name + b"\0" + bytes.fromhex(oid) for mode, name, oid in entries)
    return write_object(path, git_env, "tree", body)


def commit(path: Path, git_env: Mapping[str, str], tree_oid: str, message: str,
           parents: tuple[str, ...] = (), when: str = "1300000000 +0000") -> str:
    """A commit object with the given date line, e.g. ``when="1300000000 +051800"``."""
    lines = [f"tree {tree_oid}", *(f"parent {p}" for p in parents),
             f"author Test Author <author@example.com> {when}",
             f"committer Test Author <author@example.com> {when}", "", message, ""]
    return write_object(path, git_env, "commit", "\n".join(lines).encode())


def bad_timezone_commit(path: Path, git_env: Mapping[str, str], parent: str | None = None) -> str:
    """A commit like psf/requests' of 2011, whose time zone is ``+051800`` (badTimezone)."""
    blob = write_object(path, git_env, "blob", b"odd time zone\n")
    return commit(path, git_env, tree(path, git_env, [(b"100644", b"tz.txt", blob)]),
                  "a commit with a bad time zone", (parent,) if parent else (), "1300000000 +051800")


def dotgit_commit(path: Path, git_env: Mapping[str, str]) -> str:
    """A commit whose tree holds a ``.git`` directory (hasDotgit): a client that checks it out
    could be made to run hooks from it, so it must be refused."""
    blob = write_object(path, git_env, "blob", b"[core]\n\tfsmonitor = echo pwned\n")
    inner = tree(path, git_env, [(b"100644", b"config", blob)])
    return commit(path, git_env, tree(path, git_env, [(ZERO_TREE_MODE, b".git", inner)]),
                  "a tree with a .git entry")


def bad_gitmodules_commit(path: Path, git_env: Mapping[str, str]) -> str:
    """A commit whose .gitmodules has a url starting with '-' (gitmodulesUrl, CVE-2018-17456)."""
    blob = write_object(path, git_env, "blob",
                        b'[submodule "x"]\n\tpath = x\n\turl = -u./payload\n')
    return commit(path, git_env, tree(path, git_env, [(b"100644", b".gitmodules", blob)]),
                  "a .gitmodules with an option as url")


def odd_history(path: Path, git_env: Mapping[str, str]) -> Path:
    """A repository with what real histories carry: merges, an octopus merge, a symlink, a
    submodule, NFC and NFD unicode file names, a commit of the empty tree, a commit with a bad
    time zone, tags of tags, a tag of a blob and a lightweight tag.

    Branches: main (merges, octopus), empty-tree, odd-timezone. Tags: v1, v1-approved (a tag
    of v1), v1-final (a tag of v1-approved), blob-tag (a tag of a blob), light (no object).
    """
    env = dict(git_env)
    git(path.parent, env, "init", "-q", "-b", "main", str(path))

    def commit_all(message: str) -> str:
        # Only what each step wrote: "add -A" would drop the gitlink (no vendor/lib on disk).
        git(path, env, "add", "--ignore-removal", ".")
        git(path, env, "commit", "-q", "--allow-empty", "-m", message)
        return git(path, env, "rev-parse", "HEAD")

    (path / "README.md").write_text("odd history\n")
    (path / "caf\u00e9.txt").write_text("NFC name\n")
    (path / "cafe\u0301-nfd.txt").write_text("NFD name\n")
    (path / "\u65e5\u672c\u8a9e").mkdir()
    (path / "\u65e5\u672c\u8a9e" / "\u30d5\u30a1\u30a4\u30eb.txt").write_text("unicode dir\n")
    (path / "link-to-readme").symlink_to("README.md")
    (path / ".gitmodules").write_text('[submodule "vendor/lib"]\n\tpath = vendor/lib\n'
                                      "\turl = https://example.com/lib.git\n")
    commit_all("root: unicode names, a symlink, .gitmodules")
    # A submodule is a gitlink entry; its commit lives in the other repository.
    git(path, env, "update-index", "--add", "--cacheinfo",
        "160000,0123456789abcdef0123456789abcdef01234567,vendor/lib")
    base = commit_all("add the submodule")

    for name in ("left", "octo-a", "octo-b", "octo-c"):
        git(path, env, "checkout", "-q", "-b", name, base)
        (path / f"{name}.txt").write_text(f"{name}\n")
        commit_all(f"work on {name}")
    git(path, env, "checkout", "-q", "main")
    git(path, env, "merge", "-q", "--no-ff", "-m", "merge left", "left")
    git(path, env, "merge", "-q", "--no-ff", "-m", "octopus merge", "octo-a", "octo-b", "octo-c")
    main = git(path, env, "rev-parse", "HEAD")

    empty_tree = git(path, env, "hash-object", "-t", "tree", "-w", "/dev/null")
    empty = git(path, env, "commit-tree", empty_tree, "-m", "the empty tree")
    git(path, env, "update-ref", "refs/heads/empty-tree", empty)
    git(path, env, "update-ref", "refs/heads/odd-timezone", bad_timezone_commit(path, env, parent=main))

    git(path, env, "tag", "-a", "-m", "release 1", "v1", main)
    git(path, env, "tag", "-a", "-m", "approved", "v1-approved", "v1")
    git(path, env, "tag", "-a", "-m", "final", "v1-final", "v1-approved")
    blob = git(path, env, "rev-parse", "main:README.md")
    git(path, env, "tag", "-a", "-m", "a tag of a blob", "blob-tag", blob)
    git(path, env, "tag", "light", base)
    return path
