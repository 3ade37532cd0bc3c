"""The checks of a long reference log, read the fast way, still catch what they must: a real
repository with enough pushes that the signatures go to the checker's threads and the notes
are read by ``git cat-file --batch`` (gitserver.provenance.ed25519, attested, logread), written
by the server's own writers (reflog.append, attest.attest); then one bad signature of each kind
(a log entry, an attestation envelope), a missing note and an unsigned entry are each reported,
naming what they must, and nothing else is."""

from __future__ import annotations

import base64
import datetime as dt
import json
import subprocess
from pathlib import Path

import pygit2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gitserver.git import catfile
from gitserver.provenance import attest, attested, audit, ed25519, gitsign, reflog, trust
from gitserver.provenance.entry import LOG_REF, NOTES_REF, Entry
from gitserver.provenance.signer import FileSigner

KEY = FileSigner(Ed25519PrivateKey.generate())
TRUSTED = [trust.TrustedKey(KEY.blob)]
PUSHES = 110  # 330 signatures: past ed25519.PARALLEL_FROM; notes past attested.CAT_FILE_FROM
MAIN = "refs/heads/main"


def _git(path: Path, *args: str, data: bytes | None = None) -> str:
    return subprocess.run(["git", "--git-dir", str(path), *args], input=data, capture_output=True,
                          check=True).stdout.decode().strip()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository with PUSHES one-commit pushes on main, logged and attested."""
    path = tmp_path_factory.mktemp("long") / "r.git"
    repo = pygit2.init_repository(str(path), bare=True)
    who = pygit2.Signature("t", "t@x", 1_600_000_000, 0)
    parents: list[pygit2.Oid] = []
    tree = repo.TreeBuilder().write()
    for n in range(PUSHES):
        commit = repo.create_commit(None, who, who, f"c{n}", tree, parents)
        parents = [commit]
        logged = reflog.append(path, KEY, [Entry(MAIN, "0" * 40, str(commit), push_id=n + 1, pusher="u",
                                                 protocol="ssh")])
        attest.attest(path, KEY, logged, "https://gs/git/t/r.git", "https://gs")
    repo.references.create(MAIN, parents[0])
    return path


def _copy(built: Path, tmp_path: Path) -> tuple[Path, pygit2.Repository]:
    path = tmp_path / "r.git"
    subprocess.run(["cp", "-a", str(built), str(path)], check=True)
    return path, pygit2.Repository(str(path))


def _audit(repo: pygit2.Repository) -> list[tuple[str, str]]:
    served = {MAIN: str(repo.references[MAIN].target)}
    return audit.audit(repo, TRUSTED, served)[0]


def test_an_untouched_long_log_passes_every_check(built: Path, tmp_path: Path) -> None:
    _path, repo = _copy(built, tmp_path)
    assert _audit(repo) == []
    assert len(attested.notes_index(repo)) == PUSHES
    breaches, reading = audit.audit(repo, [trust.TrustedKey(FileSigner(Ed25519PrivateKey.generate()).blob)],
                                    {MAIN: str(repo.references[MAIN].target)})
    # Another key: every entry and every envelope is refused, each once.
    assert sum("which is not a trusted key" in what for _r, what in breaches) == PUSHES
    assert sum("does not verify" in what for _r, what in breaches) == 2 * PUSHES
    assert len(reading.entries) == PUSHES


def test_a_forged_envelope_a_lost_note_and_a_bad_entry_are_each_named(built: Path, tmp_path: Path) -> None:
    path, repo = _copy(built, tmp_path)
    entries = audit.read_log(repo, TRUSTED).entries
    forged_commit = entries[40][1].new
    lost_commit = entries[70][1].new
    # One envelope of one note with another signature; another note removed.
    note = repo.lookup_note(forged_commit, NOTES_REF).message.splitlines()
    envelope = json.loads(note[1])
    envelope["signatures"][0]["sig"] = base64.b64encode(KEY.sign(b"something else")).decode()
    text = "\n".join([note[0], json.dumps(envelope)]) + "\n"
    who = pygit2.Signature("gitserver", "gitserver@localhost")
    repo.create_note(text, who, who, forged_commit, NOTES_REF, True)
    _git(path, "-c", "user.name=t", "-c", "user.email=t@x", "notes", f"--ref={NOTES_REF}", "remove", lost_commit)
    breaches = _audit(repo)
    assert (NOTES_REF, f"an attestation of commit {forged_commit[:12]} does not verify "
                       "(no signature verifies with a trusted key)") in breaches
    assert (MAIN, f"no signed attestation for log entry {entries[70][0][:12]} (commit {lost_commit[:12]})") in breaches
    assert len(breaches) == 2, breaches

    # The log's tip rewritten with a fresh date but its old signature: a bad signature there.
    raw = _git(path, "cat-file", "commit", LOG_REF).encode() + b"\n"
    forged = _git(path, "hash-object", "-t", "commit", "-w", "--stdin", data=raw.replace(b'"time":"2', b'"time":"1'))
    _git(path, "update-ref", LOG_REF, forged)
    assert any(r == LOG_REF and f"entry {forged}: bad signature" in w for r, w in _audit(pygit2.Repository(str(path))))


def test_an_unsigned_entry_in_the_middle_is_named(built: Path, tmp_path: Path) -> None:
    _path, repo = _copy(built, tmp_path)
    commits = audit.read_log(repo, TRUSTED).commits
    # Rebuild the chain from entry 50 on with entry 50 unsigned (the rest re-signed).
    parent = commits[49]
    for n, cid in enumerate(commits[50:]):
        old = repo[cid]
        author = gitsign.Ident("gitserver", "gitserver@localhost", dt.datetime.fromtimestamp(old.commit_time, dt.UTC))
        payload = gitsign.commit_payload(str(old.tree_id), [parent], author, old.message)
        raw = payload if n == 0 else gitsign.sign_commit_payload(KEY, payload)
        parent = str(repo.odb.write(pygit2.enums.ObjectType.COMMIT, raw))
        if n == 0:
            unsigned = parent
    repo.references[LOG_REF].set_target(pygit2.Oid(hex=parent))
    breaches = _audit(repo)
    assert (LOG_REF, f"entry {unsigned} is not signed") in breaches
    # The rebuilt entries are new commits: their attestations name the old ones.
    assert all(r in (LOG_REF, MAIN) for r, _w in breaches)


def test_catfile_reads_many_objects_and_skips_missing_ones(built: Path) -> None:
    repo = pygit2.Repository(str(built))
    blobs = [str(b) for b in list(attested.notes_index(repo).values())[:5]]
    got = catfile.contents(built, [*blobs, "f" * 40])
    assert list(got) == blobs and all(got[b] == repo[b].read_raw() for b in blobs)
    assert catfile.contents(built, []) == {}


def test_the_checker_answers_in_order_on_threads_and_inline() -> None:
    data = [n.to_bytes(2, "big") * 25 for n in range(600)]
    raw_key = KEY.blob[-32:]
    checks = [ed25519.Check(raw_key, KEY.sign(d), d) for d in data]
    checks[7] = checks[7]._replace(data=b"other")  # a bad one early, one late, one malformed
    checks[555] = checks[555]._replace(signature=bytes(64))
    checks[300] = checks[300]._replace(signature=b"short")
    expected = [n not in (7, 300, 555) for n in range(600)]
    assert ed25519.valid_all(checks) == expected
    assert ed25519.valid_all(checks[:10]) == expected[:10]  # inline
    with ed25519.Checker() as checker:
        batch = ed25519.Batch(checker)
        for check in checks:
            batch.append(check)
        assert batch.results()() == expected
