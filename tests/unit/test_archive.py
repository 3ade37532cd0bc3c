"""Archive objects (gitserver.git.archive, pure pygit2) and the dedup by tree
(gitserver.pipelines.archive) on a real database."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pygit2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from gitserver.db import models
from gitserver.db.session import transaction
from gitserver.git import archive as git_archive
from gitserver.pipelines import archive as pipeline_archive
from gitserver.provenance.archive_tags import ref_creator, tag_writer
from gitserver.provenance.signer import FileSigner
from gitserver.runtime import Runtime
from tests.unit.conftest import add_repo

AUTHOR = pygit2.Signature("Someone", "someone@example.com", 1_600_000_000, 60)
KEY = FileSigner(Ed25519PrivateKey.generate())
WRITE_TAG = tag_writer(KEY)


def _repo(path: Path) -> pygit2.Repository:
    return pygit2.init_repository(str(path), bare=True)


def _commit(repo: pygit2.Repository, files: dict[str, bytes], parents: list[pygit2.Oid] | None = None,
            message: str = "m\n", ref: str | None = "refs/heads/main") -> str:
    builder = repo.TreeBuilder()
    for name, data in files.items():
        builder.insert(name, repo.create_blob(data), pygit2.enums.FileMode.BLOB)
    tree = builder.write()
    return str(repo.create_commit(ref, AUTHOR, AUTHOR, message, tree, parents or []))


def test_archive_commit_id_is_a_pure_function_of_the_tree(tmp_path: Path) -> None:
    one, two = _repo(tmp_path / "one.git"), _repo(tmp_path / "two.git")
    c1 = _commit(one, {"a": b"1"}, message="first\n")
    c2 = _commit(two, {"a": b"1"}, message="another message entirely\n")
    t1, t2 = str(one[c1].tree_id), str(two[c2].tree_id)
    assert t1 == t2
    a1, a2 = git_archive.archive_commit_id(one, t1), git_archive.archive_commit_id(two, t2)
    assert a1 == a2  # same tree, any repository, any pushed commit: the same archive commit
    archived = one[a1]
    assert archived.parents == [] and archived.message == git_archive.ARCHIVE_MESSAGE
    assert (archived.author.name, archived.author.email, archived.author.time, archived.author.offset) == (
        "gitserver", "gitserver@localhost", 0, 0)
    assert (archived.committer.time, archived.committer.offset) == (0, 0)
    other = git_archive.archive_commit_id(one, str(one[_commit(one, {"a": b"2"}, ref=None)].tree_id))
    assert other != a1


def test_write_archive_creates_tag_and_branch_once(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "r.git")
    commit = _commit(repo, {"README": b"hi\n"})
    tree = str(repo[commit].tree_id)
    message = git_archive.tag_message("t/r", "refs/heads/main", commit)
    create = ref_creator(tmp_path / "r.git", KEY)
    first = git_archive.write_archive(repo, tree, message, WRITE_TAG, create,
                                      now=dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
    assert first.created and first.tag == f"repour-{first.commit_id}"
    tag = repo[repo.references[f"refs/tags/{first.tag}"].target]
    # The message, then the server's SSH signature (git keeps it at the message's end).
    assert isinstance(tag, pygit2.Tag) and tag.message.startswith(message + "-----BEGIN SSH SIGNATURE-----")
    assert tag.tagger.time == int(dt.datetime(2024, 1, 1, tzinfo=dt.UTC).timestamp())
    assert "t/r" in tag.message and "refs/heads/main" in tag.message and commit in tag.message
    assert str(tag.peel(pygit2.Commit).tree_id) == tree
    assert str(repo.references[f"refs/heads/{first.branch}"].target) == first.commit_id
    # Again (a second worker, a crash before the database row): the tag is kept as it was.
    again = git_archive.write_archive(repo, tree, "a different message\n", WRITE_TAG, create)
    assert not again.created and again.tag == first.tag
    assert repo[repo.references[f"refs/tags/{first.tag}"].target].message.startswith(message)


def test_a_dead_writers_ref_lock_is_removed_a_live_ones_is_waited_for(tmp_path: Path) -> None:
    import os
    import time

    repo = _repo(tmp_path / "r.git")
    tree = str(repo[_commit(repo, {"a": b"1"})].tree_id)
    commit_id = git_archive.archive_commit_id(repo, tree)
    lock = tmp_path / "r.git" / "refs" / "heads" / f"{git_archive.branch_name(commit_id)}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text("")  # a writer that is (as far as anyone can tell) still at it
    with pytest.raises(git_archive.RefLocked, match="locked by another writer"):
        git_archive.write_archive(repo, tree, "m\n", WRITE_TAG, ref_creator(tmp_path / "r.git", KEY))
    old = time.time() - git_archive.STALE_LOCK_SECONDS - 1
    os.utime(lock, (old, old))  # ... or one killed a while ago (SIGKILL mid-archive)
    refs = git_archive.write_archive(repo, tree, "m\n", WRITE_TAG, ref_creator(tmp_path / "r.git", KEY))
    assert repo.references[f"refs/heads/{refs.branch}"].target == pygit2.Oid(hex=refs.commit_id)
    assert not lock.exists()


def test_peel_commit_and_read_blob(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "r.git")
    commit = _commit(repo, {"f.txt": b"content"})
    tag_oid = repo.create_tag("v1", pygit2.Oid(hex=commit), pygit2.enums.ObjectType.COMMIT, AUTHOR, "v1\n")
    assert str(git_archive.peel_commit(repo, str(tag_oid)).id) == commit  # type: ignore[union-attr]
    tree = str(repo[commit].tree_id)
    assert git_archive.peel_commit(repo, tree) is None  # a tree peels to no commit
    blob = str(repo[commit].tree["f.txt"].id)
    assert git_archive.peel_commit(repo, blob) is None
    assert git_archive.peel_commit(repo, "0" * 40) is None
    assert git_archive.read_blob(repo, tree, "f.txt", 100) == b"content"
    assert git_archive.read_blob(repo, tree, "missing", 100) is None
    with pytest.raises(ValueError, match="more than the 3 allowed"):
        git_archive.read_blob(repo, tree, "f.txt", 3)


# --- dedup by tree, through the Archive table ------------------------------------------------

def _repo_row(rt: Runtime) -> models.Repository:
    with transaction(rt.sessions) as session:
        repo = add_repo(session)
        session.refresh(repo)
        _ = repo.tenant
        session.expunge(repo)
        return repo


def test_same_tree_returns_first_tag_and_creates_nothing(runtime: Runtime, tmp_path: Path) -> None:
    row = _repo_row(runtime)
    path = tmp_path / "r.git"
    git = _repo(path)
    c1 = _commit(git, {"a": b"1"}, message="one\n")
    first = pipeline_archive.archive_ref(runtime.sessions, path, row, "refs/heads/main", c1, None, KEY)
    assert first is not None and first.created
    c2 = _commit(git, {"a": b"1"}, message="two\n", ref="refs/heads/other")  # same tree
    refs_before = sorted(git.references)
    second = pipeline_archive.archive_ref(runtime.sessions, path, row, "refs/heads/other", c2, None, KEY)
    assert second is not None and not second.created
    assert (second.tag, second.commit_id, second.tree_id) == (first.tag, first.commit_id, first.tree_id)
    assert sorted(git.references) == refs_before
    with transaction(runtime.sessions) as session:
        rows = session.scalars(select(models.Archive)).all()
        assert [(a.tag, a.source_commit, a.source_ref) for a in rows] == [(first.tag, c1, "refs/heads/main")]


def test_insert_race_reads_the_winner(runtime: Runtime, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    row = _repo_row(runtime)
    path = tmp_path / "r.git"
    git = _repo(path)
    commit = _commit(git, {"a": b"race"})
    tree = str(git[commit].tree_id)
    real_find = pipeline_archive.find_archive
    calls = []

    def find_then_lose_race(session, repo_id, tree_id):  # type: ignore[no-untyped-def]
        calls.append(tree_id)
        if len(calls) == 1:
            # Another worker inserts its row right after our lookup missed.
            with transaction(runtime.sessions) as other:
                other.add(models.Archive(repo_id=repo_id, tree_id=tree_id, tag="repour-winner",
                                         commit_id="w" * 40, source_commit="s" * 40, source_ref="refs/heads/x"))
            return None
        return real_find(session, repo_id, tree_id)

    monkeypatch.setattr(pipeline_archive, "find_archive", find_then_lose_race)
    result = pipeline_archive.archive_ref(runtime.sessions, path, row, "refs/heads/main", commit, None, KEY)
    assert result is not None and not result.created and result.tag == "repour-winner"
    assert calls == [tree, tree]


def test_non_commit_is_not_archived(runtime: Runtime, tmp_path: Path) -> None:
    row = _repo_row(runtime)
    path = tmp_path / "r.git"
    git = _repo(path)
    blob = str(git.create_blob(b"just a blob"))
    assert pipeline_archive.archive_ref(runtime.sessions, path, row, "refs/tags/blob", blob, None, KEY) is None


def test_read_blob_refuses_a_huge_blob_without_inflating_it(tmp_path: Path) -> None:
    """A push of a few hundred KiB can carry a pipeline file of hundreds of MB of zeros: the
    size check must come before the worker inflates it into memory."""
    import os
    import subprocess
    import sys
    import textwrap

    repo_dir = tmp_path / "bomb.git"
    pygit2.init_repository(str(repo_dir), bare=True)
    env = {**os.environ, "GIT_DIR": str(repo_dir)}
    size = 300 * 1024 * 1024
    blob = subprocess.run(f"head -c {size} /dev/zero | git hash-object -w --stdin", shell=True, env=env,
                          check=True, capture_output=True, text=True).stdout.strip()
    # The trees are made by git itself, so nothing but read_blob touches the blob in the child.
    inner = subprocess.run(["git", "mktree"], input=f"100644 blob {blob}\tpipeline.toml\n", env=env,
                           check=True, capture_output=True, text=True).stdout.strip()
    tree = subprocess.run(["git", "mktree"], input=f"040000 tree {inner}\t.gitserver\n", env=env,
                          check=True, capture_output=True, text=True).stdout.strip()
    script = textwrap.dedent(f"""
        import resource, pygit2
        from gitserver.git.archive import read_blob
        repo = pygit2.Repository({str(repo_dir)!r})
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        try:
            read_blob(repo, {tree!r}, ".gitserver/pipeline.toml", 64 * 1024)
        except ValueError as exc:
            print("refused", exc)
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024 - before)
    """)
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True).stdout
    lines = out.splitlines()
    assert lines[0].startswith("refused .gitserver/pipeline.toml is 314572800 bytes")
    # Inflating the blob would add its 300 MB to the peak; reading its header adds nothing.
    assert int(lines[1]) < 100, f"the worker grew by {lines[1]} MB to refuse it"
