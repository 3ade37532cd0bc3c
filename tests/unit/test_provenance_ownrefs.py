"""The server's own refs move with their reference-log entries (gitserver.provenance.archive_tags,
gitserver.provenance.logmove), on real repositories with real git: created together in one
``update-ref`` transaction, never when the log cannot be written, and racing archives of one
tree end in one tag with one entry."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pygit2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gitserver.git import archive as git_archive
from gitserver.provenance import archive_tags, keys, reflog
from gitserver.provenance.entry import LOG_REF, PROTOCOL_SERVER, parse
from gitserver.provenance.signer import FileSigner

KEY = FileSigner(Ed25519PrivateKey.generate())
Z = "0" * 40
AUTHOR = pygit2.Signature("Someone", "someone@example.com", 1_600_000_000, 0)


class RefusingSigner:
    """An ssh-agent that refuses to sign, as AgentSigner reports it (no agent needed)."""

    blob = KEY.blob

    def sign(self, data: bytes) -> bytes:
        raise keys.SigningKeyError("ssh-agent refused to sign")


def _repo(tmp_path: Path) -> tuple[Path, pygit2.Repository, str]:
    path = tmp_path / "r.git"
    repo = pygit2.init_repository(str(path), bare=True)
    repo.config["core.logAllRefUpdates"] = "always"  # as gitserver.git.store sets it
    builder = repo.TreeBuilder()
    builder.insert("a", repo.create_blob(b"1\n"), pygit2.enums.FileMode.BLOB)
    commit = str(repo.create_commit("refs/heads/main", AUTHOR, AUTHOR, "m\n", builder.write(), []))
    return path, repo, commit


def _entries(repo: pygit2.Repository) -> list[tuple[str, str, str, str]]:
    """(ref, old, new, protocol) of each log entry, oldest first."""
    found = [parse(c.message) for c in reflog.walk(repo, reflog.tip(repo))]
    return [(e.ref, e.old, e.new, e.protocol) for e in reversed(found)]


def test_the_refs_and_their_entries_are_created_together(tmp_path: Path) -> None:
    path, repo, commit = _repo(tmp_path)
    made = archive_tags.create_refs(path, KEY, [("refs/tags/repour-sync-x", commit),
                                                ("refs/heads/branch-repour-x", commit)])
    assert made == ["refs/tags/repour-sync-x", "refs/heads/branch-repour-x"]
    assert _entries(repo) == [("refs/tags/repour-sync-x", Z, commit, PROTOCOL_SERVER),
                              ("refs/heads/branch-repour-x", Z, commit, PROTOCOL_SERVER)]
    # One transaction: git's reflog of each ref and of the log says the server made them.
    for ref in (LOG_REF, "refs/tags/repour-sync-x"):
        said = subprocess.run(["git", "--git-dir", str(path), "reflog", "show", "--format=%gs", ref],
                              capture_output=True, text=True, check=True).stdout.split()
        assert said == [archive_tags.REFLOG_MESSAGE]
    # Again, even with another value: the refs exist, nothing moves, nothing is logged.
    tip = reflog.tip(repo)
    assert archive_tags.create_refs(path, KEY, [("refs/tags/repour-sync-x", "1" * 40)]) == []
    assert str(repo.references["refs/tags/repour-sync-x"].target) == commit and reflog.tip(repo) == tip


def test_a_log_that_cannot_be_signed_leaves_no_ref(tmp_path: Path) -> None:
    path, repo, commit = _repo(tmp_path)
    archive_tags.create_refs(path, KEY, [("refs/heads/branch-repour-first", commit)])
    tip = reflog.tip(repo)
    with pytest.raises(archive_tags.RefsNotWritten) as caught:
        archive_tags.create_refs(path, RefusingSigner(), [("refs/tags/repour-x", commit)])
    assert str(caught.value) == ("gitserver could not write the reference log (signing its entry failed); "
                                 "nothing was changed")
    assert repo.references.get("refs/tags/repour-x") is None and reflog.tip(repo) == tip


def test_a_log_git_cannot_lock_leaves_no_ref_and_says_so_without_paths(tmp_path: Path) -> None:
    path, repo, commit = _repo(tmp_path)
    archive_tags.create_refs(path, KEY, [("refs/heads/branch-repour-first", commit)])
    tip = reflog.tip(repo)
    (path / f"{LOG_REF}.lock").mkdir()  # git cannot create its lock file; no writer removes a directory
    with pytest.raises(archive_tags.RefsNotWritten) as caught:
        archive_tags.create_refs(path, KEY, [("refs/tags/repour-x", commit), ("refs/heads/branch-repour-x", commit)])
    message = str(caught.value)
    assert message.startswith(f"gitserver could not write the reference log (cannot lock ref '{LOG_REF}'")
    assert message.endswith("nothing was changed") and str(tmp_path) not in message
    assert [r for r in repo.references if r.endswith("repour-x")] == []
    assert reflog.tip(repo) == tip


def test_a_tag_that_cannot_be_signed_is_not_made(tmp_path: Path) -> None:
    path, repo, commit = _repo(tmp_path)
    tree = str(repo[commit].tree_id)
    with pytest.raises(archive_tags.RefsNotWritten, match="could not sign the tag"):
        git_archive.write_archive(repo, tree, "m\n", archive_tags.tag_writer(RefusingSigner()),
                                  archive_tags.ref_creator(path, KEY))
    assert [r for r in repo.references if "repour" in r] == [] and reflog.tip(repo) is None


def test_racing_archives_of_one_tree_end_in_one_tag_with_one_entry(tmp_path: Path) -> None:
    """Eight workers archive the same tree at once (threads here, separate processes in the
    server: the log's lock is a flock on a file, taken per open file either way)."""
    path, _repo_obj, commit = _repo(tmp_path)
    tree = str(_repo_obj[commit].tree_id)
    results: list[git_archive.ArchiveRefs] = []
    start = threading.Barrier(8)

    def archive() -> None:
        repo = pygit2.Repository(str(path))
        start.wait()
        results.append(git_archive.write_archive(repo, tree, "m\n", archive_tags.tag_writer(KEY),
                                                 archive_tags.ref_creator(path, KEY)))

    threads = [threading.Thread(target=archive) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8 and len({r.tag for r in results}) == 1
    assert sum(r.created for r in results) == 1
    repo = pygit2.Repository(str(path))
    tag_ref = f"refs/tags/{results[0].tag}"
    logged = [e for e in _entries(repo) if e[0] == tag_ref]
    assert logged == [(tag_ref, Z, str(repo.references[tag_ref].target), PROTOCOL_SERVER)]
    assert [e[0] for e in _entries(repo)].count(f"refs/heads/{results[0].branch}") == 1
