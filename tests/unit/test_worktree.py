"""The alignment work tree as plain files (gitserver.repour.worktree): written from a commit and
read back with real git objects, never through git in the tree. Each case is something a
hostile tool could leave behind."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pygit2
import pytest

from gitserver.repour import worktree
from gitserver.repour.command import ProcessingError

GITLINK_TARGET = "1" * 40


def _repo(tmp_path: Path, files: dict[str, tuple[int, bytes]]) -> tuple[pygit2.Repository, pygit2.Tree, Path]:
    """A work dir with an empty ``.git`` and a commit of ``files`` ({path: (mode, data)}),
    written out as the adjust does; a gitlink's data is its commit id."""
    work = tmp_path / "work"
    repo = pygit2.init_repository(str(work))
    index = pygit2.Index()
    for path, (mode, data) in files.items():
        oid = pygit2.Oid(hex=data.decode()) if mode == worktree.MODE_GITLINK else repo.create_blob(data)
        index.add(pygit2.IndexEntry(path, oid, mode))
    tree = repo[index.write_tree(repo)]
    worktree.write_work_tree(repo, tree, work)
    return repo, tree, work


def _read(repo: pygit2.Repository, work: Path, base: pygit2.Tree, max_blob: int = 0) -> dict[str, tuple[int, bytes]]:
    tree = repo[worktree.tree_from_work_tree(repo, work, base, max_blob)]
    out = {}
    for path in _paths(repo, tree, ""):
        entry = tree[path]
        out[path] = (entry.filemode, entry.id.raw.hex().encode() if entry.filemode == worktree.MODE_GITLINK
                     else repo[entry.id].data)
    return out


def _paths(repo: pygit2.Repository, tree: pygit2.Tree, prefix: str) -> list[str]:
    out = []
    for entry in tree:
        if entry.filemode == worktree.MODE_TREE:
            out += _paths(repo, repo[entry.id], f"{prefix}{entry.name}/")
        else:
            out.append(prefix + entry.name)
    return out


def test_an_untouched_tree_reads_back_as_the_same_tree(tmp_path: Path) -> None:
    # Attributes asking for conversions are data: nothing is converted either way.
    files = {".gitattributes": (worktree.MODE_BLOB, b"* text eol=crlf filter=x\n"),
             "a.txt": (worktree.MODE_BLOB, b"one\ntwo\n"),
             "bin/run": (worktree.MODE_EXECUTABLE, b"#!/bin/sh\n"),
             "link": (worktree.MODE_LINK, b"/etc/passwd"),
             "sub": (worktree.MODE_GITLINK, GITLINK_TARGET.encode())}
    repo, tree, work = _repo(tmp_path, files)
    assert (work / "link").read_bytes() == b"/etc/passwd" and not (work / "link").is_symlink()
    assert (work / "sub").is_dir() and os.listdir(work / "sub") == []
    assert worktree.tree_from_work_tree(repo, work, tree, 0) == tree.id


def test_what_a_tool_leaves_is_data_never_a_repository_or_a_followed_link(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("server secret\n")
    repo, tree, work = _repo(tmp_path, {"pom.xml": (worktree.MODE_BLOB, b"<p/>\n"),
                                        "sub": (worktree.MODE_GITLINK, GITLINK_TARGET.encode())})
    (work / "pom.xml").write_text("<p>aligned</p>\n")
    # A nested repository (git would have made it a gitlink, and run commands its config names).
    subprocess.run(["git", "init", "-q", str(work / "nested")], check=True)
    (work / "nested" / "file.txt").write_text("nested\n")
    (work / "sub" / "planted.txt").write_text("x\n")  # under the pushed gitlink
    (work / "out").symlink_to(secret)  # a link out of the tree
    (work / "dir-link").symlink_to(tmp_path)
    os.mkfifo(work / "pipe")  # reading it would block the server
    (work / ".GIT").mkdir()
    (work / ".GIT" / "config").write_text("[core]\n")
    read = _read(repo, work, tree)
    assert read == {"pom.xml": (worktree.MODE_BLOB, b"<p>aligned</p>\n"),
                    "sub": (worktree.MODE_GITLINK, GITLINK_TARGET.encode()),
                    "nested/file.txt": (worktree.MODE_BLOB, b"nested\n"),
                    "out": (worktree.MODE_LINK, os.fsencode(secret)),
                    "dir-link": (worktree.MODE_LINK, os.fsencode(tmp_path))}


def test_a_link_of_the_commit_checked_out_as_text_stays_a_link(tmp_path: Path) -> None:
    repo, tree, work = _repo(tmp_path, {"pom.xml": (worktree.MODE_LINK, b"/etc/passwd")})
    (work / "pom.xml").write_text("<p/>\n")  # the tool rewrote the placeholder
    assert _read(repo, work, tree) == {"pom.xml": (worktree.MODE_LINK, b"<p/>\n")}


def test_gitignore_keeps_new_build_output_out_but_not_tracked_files(tmp_path: Path) -> None:
    repo, tree, work = _repo(tmp_path, {".gitignore": (worktree.MODE_BLOB, b"build/\n*.log\n"),
                                        "kept.log": (worktree.MODE_BLOB, b"tracked\n")})
    (work / "build").mkdir()
    (work / "build" / "out.class").write_bytes(b"\xca\xfe")
    (work / "new.log").write_text("x\n")
    (work / "kept.log").write_text("changed\n")
    assert _read(repo, work, tree) == {".gitignore": (worktree.MODE_BLOB, b"build/\n*.log\n"),
                                       "kept.log": (worktree.MODE_BLOB, b"changed\n")}


def test_a_gitignore_link_is_committed_as_a_link_never_read_as_patterns(tmp_path: Path) -> None:
    """A ``.gitignore`` linking to a server file would make which files get committed tell that
    file's lines (libgit2 follows the link)."""
    secret = tmp_path / "secret"
    secret.write_text("password-*\n")
    repo, tree, work = _repo(tmp_path, {"a": (worktree.MODE_BLOB, b"a\n")})
    (work / ".gitignore").symlink_to(secret)
    (work / "password-hunter2").write_text("guess\n")
    read = _read(repo, work, tree)
    assert read[".gitignore"] == (worktree.MODE_LINK, os.fsencode(secret))
    assert "password-hunter2" in read


def test_names_that_are_not_utf8_are_kept(tmp_path: Path) -> None:
    repo, tree, work = _repo(tmp_path, {"a": (worktree.MODE_BLOB, b"a\n")})
    (Path(os.fsdecode(os.fsencode(work) + b"/caf\xe9"))).write_bytes(b"latin-1\n")
    new = repo[worktree.tree_from_work_tree(repo, work, tree, 0)]
    assert sorted(entry.raw_name for entry in new) == [b"a", b"caf\xe9"]


def test_limits_name_what_was_refused(tmp_path: Path) -> None:
    repo, tree, work = _repo(tmp_path, {"a": (worktree.MODE_BLOB, b"a\n")})
    (work / "big").write_bytes(b"x" * 100)
    with pytest.raises(ProcessingError, match="big of 100 bytes, over max_blob_bytes"):
        worktree.tree_from_work_tree(repo, work, tree, 99)
    (work / "big").unlink()
    deep = work
    for _ in range(worktree.MAX_TREE_DEPTH + 2):
        deep = deep / "d"
    deep.mkdir(parents=True)
    (deep / "f").write_text("x\n")
    with pytest.raises(ProcessingError, match="deeper than"):
        worktree.tree_from_work_tree(repo, work, tree, 0)


def test_a_tree_git_could_not_check_out_is_refused(tmp_path: Path) -> None:
    work = tmp_path / "work"
    repo = pygit2.init_repository(str(work))
    blob = repo.create_blob(b"[core]\n")
    raw = b"100644 .Git\0" + blob.raw
    tree = repo[repo.odb.write(pygit2.enums.ObjectType.TREE, raw)]
    with pytest.raises(ProcessingError, match="cannot check out"):
        worktree.write_work_tree(repo, tree, work)


def test_a_huge_gitignore_or_a_path_too_long_to_open_fails_with_a_clear_error(tmp_path: Path) -> None:
    repo, tree, work = _repo(tmp_path, {"a": (worktree.MODE_BLOB, b"a\n")})
    (work / ".gitignore").write_bytes(b"#" * 200)
    (work / "new").write_text("x\n")
    with pytest.raises(ProcessingError, match=r"\.gitignore of 200 bytes, over max_blob_bytes"):
        worktree.tree_from_work_tree(repo, work, tree, 100)
    (work / ".gitignore").unlink()
    # 20 levels of 250 characters, longer than PATH_MAX: made one level at a time, relative.
    fd = os.open(os.fsencode(work), os.O_RDONLY)
    try:
        for _ in range(20):
            os.mkdir(b"d" * 250, dir_fd=fd)
            next_fd = os.open(b"d" * 250, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = next_fd
    finally:
        os.close(fd)
    with pytest.raises(ProcessingError, match="could not be read: File name too long"):
        worktree.tree_from_work_tree(repo, work, tree, 0)
