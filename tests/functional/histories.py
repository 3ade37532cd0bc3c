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
