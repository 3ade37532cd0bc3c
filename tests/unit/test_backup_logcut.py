"""Where a backup cuts the reference log (gitserver.backup.logcut) on a real repository written
by the server's log writer, the manifest's ``logs`` read back and checked, and a restore's
check that the refs file and the manifest name the same cut."""

from __future__ import annotations

from pathlib import Path

import pygit2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gitserver.backup import format as fmt
from gitserver.backup import logcut
from gitserver.policy.errors import BackupError
from gitserver.provenance import reflog
from gitserver.provenance.entry import LOG_REF, Entry
from gitserver.provenance.signer import FileSigner

A, B, C, Z = "a" * 40, "b" * 40, "c" * 40, "0" * 40
KEY = FileSigner(Ed25519PrivateKey.generate())
MAIN, TAG = "refs/heads/main", "refs/tags/repour-x"


def _manifest(**logs: dict[str, object]) -> fmt.Manifest:
    return fmt.Manifest("sqlite", "2026-01-01T00:00:00+00:00", "0", "0023", 1, logs=dict(logs))


@pytest.fixture()
def logged(tmp_path: Path) -> tuple[Path, list[str]]:
    """main A, the archive tag, main B, main C: the log commits, oldest first."""
    path = tmp_path / "r.git"
    pygit2.init_repository(str(path), bare=True)
    commits = []
    for entry in (Entry(MAIN, Z, A), Entry(TAG, Z, C), Entry(MAIN, A, B), Entry(MAIN, B, C)):
        commits += [item.commit for item in reflog.append(path, KEY, [entry])]
    return path, commits


def test_the_cut_is_the_newest_entry_that_agrees_with_the_backed_up_refs(logged: tuple[Path, list[str]]) -> None:
    path, commits = logged
    assert logcut.find_cut(path, {MAIN: C, TAG: C}) == logcut.Cut(commits[3], 4)  # all of it
    # A push past the snapshot: its entry is past the cut.
    assert logcut.find_cut(path, {MAIN: B, TAG: C}) == logcut.Cut(commits[2], 3)
    # The archive tag's row came after the snapshot: the log agrees only before it.
    assert logcut.find_cut(path, {MAIN: A}) == logcut.Cut(commits[0], 1)
    assert logcut.find_cut(path, {MAIN: "d" * 40}) is None  # never agrees: the restore starts anew
    assert logcut.notes_tip(path) is None


def test_a_repository_without_a_log_has_no_cut(tmp_path: Path) -> None:
    path = tmp_path / "r.git"
    pygit2.init_repository(str(path), bare=True)
    assert logcut.find_cut(path, {MAIN: A}) is None


def test_the_manifest_names_the_cuts_and_reads_them_back() -> None:
    manifest = _manifest(**{"acme/app": {"cut": A, "entries": 4}})
    back = fmt.Manifest.from_json(manifest.to_json())
    assert back.log_cut("acme", "app") == A and back.log_cut("acme", "other") is None
    old = b'{"format": "gitserver-backup", "format_version": 1, "dialect": "sqlite", "created_at": "x", ' \
          b'"gitserver_version": "0", "schema_revision": "0023", "repositories": 0}'
    assert fmt.Manifest.from_json(old).logs == {}  # a backup older than the cuts
    for bad in ('"logs": []', '"logs": {"acme/app": {"cut": "HEAD", "entries": 1}}',
                '"logs": {"acme/app": {"cut": null, "entries": 1}}', '"logs": {"acme/app": "x"}'):
        with pytest.raises(fmt.FormatError, match="logs"):
            fmt.Manifest.from_json(old[:-1] + b", " + bad.encode() + b"}")


def test_a_restore_refuses_a_refs_file_whose_log_is_not_the_manifests_cut() -> None:
    manifest = _manifest(**{"acme/app": {"cut": A, "entries": 4}})
    logcut.check_cut(manifest, "acme", "app", fmt.RepoRefs(fmt.DEFAULT_HEAD, {MAIN: B, LOG_REF: A}))
    logcut.check_cut(manifest, "acme", "other", fmt.RepoRefs(fmt.DEFAULT_HEAD, {MAIN: B}))
    with pytest.raises(BackupError, match=f"acme/app: its refs put {LOG_REF} at {B}, its manifest cuts the log at {A}"):
        logcut.check_cut(manifest, "acme", "app", fmt.RepoRefs(fmt.DEFAULT_HEAD, {LOG_REF: B}))
    with pytest.raises(BackupError, match="at nothing"):
        logcut.check_cut(manifest, "acme", "app", fmt.RepoRefs(fmt.DEFAULT_HEAD, {MAIN: B}))
