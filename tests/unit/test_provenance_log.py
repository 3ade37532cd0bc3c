"""The reference log's pure parts and its writer on a real repository: entry messages, the
chain (gitserver.provenance.reflog), the checks of gitserver.provenance.audit as tables, the
allowed-signers reader, DSSE's encoding, and where ``gitserver verify`` gets its keys."""

from __future__ import annotations

import json
from pathlib import Path

import pygit2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gitserver.provenance import audit, dsse, entry, keys, reflog, trust, verify
from gitserver.provenance.entry import LOG_REF, Entry
from gitserver.provenance.signer import FileSigner

A, B, C = "a" * 40, "b" * 40, "c" * 40
Z = "0" * 40
KEY = FileSigner(Ed25519PrivateKey.generate())


def test_an_entry_is_exactly_the_fields_in_order() -> None:
    e = Entry("refs/heads/main", Z, A, push_id=3, pusher="u", key_fingerprint="SHA256:x", protocol="ssh",
              time="2026-01-01T00:00:00Z")
    assert list(json.loads(e.message())) == list(entry.FIELDS)
    assert entry.parse(e.message()) == e
    data = json.loads(e.message())
    for bad in ({**data, "extra": 1}, {k: v for k, v in data.items() if k != "rules"},
                {**data, "push_id": "3"}, {**data, "push_id": True}, {**data, "new": "HEAD"},
                {**data, "ref": entry.LOG_REF}, {**data, "ref": "main"}):
        with pytest.raises(entry.EntryError):
            entry.parse(json.dumps(bad))
    with pytest.raises(entry.EntryError, match="not JSON"):
        entry.parse("{")


def _repo(tmp_path: Path) -> tuple[Path, pygit2.Repository]:
    path = tmp_path / "r.git"
    return path, pygit2.init_repository(str(path), bare=True)


def test_append_chains_signs_and_logs_a_value_once(tmp_path: Path) -> None:
    path, repo = _repo(tmp_path)
    first = reflog.append(path, KEY, [Entry("refs/heads/main", Z, A, protocol="ssh")])
    # The same value again (a retry, the reconciler after the done step): nothing new. The
    # caller's idea of ``old`` gives way to the log's own.
    again = reflog.append(path, KEY, [Entry("refs/heads/main", Z, A), Entry("refs/heads/main", C, B)])
    assert len(first) == 1 and [e.entry.old for e in again] == [A]
    head = repo[reflog.tip(repo)]
    assert [str(p) for p in head.parent_ids] == [first[0].commit] and not repo[first[0].commit].parent_ids
    assert reflog.logged_values(path) == {"refs/heads/main": B}
    (path / reflog.CACHE_FILE).write_text("{not json")  # a broken cache is rebuilt from the chain
    assert reflog.logged_values(path) == {"refs/heads/main": B}
    assert reflog.first_time(path) == first[0].entry.time
    breaches, reading = audit.audit(repo, [trust.TrustedKey(KEY.blob)], {})
    assert [cid for cid, _e in reading.entries] == [first[0].commit, again[0].commit]
    # B is not a descendant of A here (neither exists): a non-fast-forward, and unserved.
    assert ("refs/heads/main", f"in the log at {B[:12]}, but not served") in breaches
    assert any("moved backwards" in what for _ref, what in breaches)


def test_chain_signs_onto_the_tip_without_moving_it_and_the_cache_catches_up(tmp_path: Path) -> None:
    """What the hook's transaction does with a chain (gitserver.push.refmove): the log's ref
    moves outside reflog, and the next reader walks only the entries after its cache."""
    path, repo = _repo(tmp_path)
    first = reflog.append(path, KEY, [Entry("refs/heads/main", Z, A, protocol="ssh")])
    with reflog.locked(path):
        chained = reflog.chain(path, KEY, [Entry("refs/heads/topic", Z, B, protocol="ssh"),
                                           Entry("refs/heads/main", Z, A, protocol="ssh")])  # logged already
    assert chained.base == first[0].commit and [w.entry.ref for w in chained.written] == ["refs/heads/topic"]
    assert reflog.tip(repo) == first[0].commit  # not moved: the caller's transaction does that
    repo.references.create(entry.LOG_REF, pygit2.Oid(hex=chained.written[0].commit), force=True)
    assert reflog.logged_values(path) == {"refs/heads/main": A, "refs/heads/topic": B}
    # The cache is for the first tip; walking from the new one meets it after one entry.
    assert json.loads((path / reflog.CACHE_FILE).read_text())["tip"] == first[0].commit
    assert reflog.first_time(path) == first[0].entry.time


def test_a_stale_lock_of_the_log_ref_is_cleared_under_the_logs_lock(tmp_path: Path) -> None:
    import os
    import time

    path = _repo(tmp_path)[0]
    ref_lock = path / f"{LOG_REF}.lock"
    ref_lock.parent.mkdir(parents=True, exist_ok=True)
    ref_lock.write_text(Z + "\n")
    with reflog.locked(path):
        assert ref_lock.exists()  # a live writer's (young): left alone
    os.utime(ref_lock, (time.time() - 60, time.time() - 60))
    assert reflog.append(path, KEY, [Entry("refs/heads/main", Z, A)]) and not ref_lock.exists()
    ref_lock.mkdir()  # not a file: never removed
    os.utime(ref_lock, (time.time() - 60, time.time() - 60))
    with reflog.locked(path):
        assert ref_lock.is_dir()


def test_present_reads_the_files(tmp_path: Path) -> None:
    path, repo = _repo(tmp_path)
    assert reflog.present(path)  # no refs at all: nothing to log yet
    who = pygit2.Signature("a", "a@example.com", 1, 0)
    commit = str(repo.create_commit("refs/heads/main", who, who, "m\n", repo.TreeBuilder().write(), []))
    assert not reflog.present(path)
    reflog.append(path, KEY, [Entry("refs/heads/main", Z, commit)])
    assert reflog.present(path)


def _always(old: str, new: str) -> bool:
    return True


def _never(old: str, new: str) -> bool:
    return False


@pytest.mark.parametrize(("entries", "is_ancestor", "wanted"), [
    ([("refs/heads/main", Z, A), ("refs/heads/main", A, B)], _always, []),
    ([("refs/heads/main", Z, A), ("refs/heads/main", A, B)], _never, ["moved backwards"]),
    ([("refs/tags/v1", Z, A), ("refs/tags/v1", A, B)], _always, ["tag moved"]),
    ([("refs/heads/main", Z, A), ("refs/heads/main", A, Z)], _always, ["deleted"]),
    ([("refs/heads/main", Z, A), ("refs/heads/main", C, B)], _always, ["the entry before says"]),
])
def test_replay_finds_what_history_rules_forbid(entries: list[tuple[str, str, str]], is_ancestor: object,
                                                wanted: list[str]) -> None:
    log = [(f"{i:040x}", Entry(ref, old, new)) for i, (ref, old, new) in enumerate(entries)]
    latest, breaches = audit.replay(log, is_ancestor)  # type: ignore[arg-type]
    assert latest[entries[-1][0]] == entries[-1][2]
    assert len(breaches) == len(wanted)
    for (ref, what), needle in zip(breaches, wanted, strict=True):
        assert ref == entries[-1][0] and needle in what


def test_served_refs_must_equal_the_logs_latest() -> None:
    latest = {"refs/heads/main": A, "refs/tags/gone": B}
    served = {"refs/heads/main": C, "refs/heads/new": A, entry.LOG_REF: B, entry.NOTES_REF: C}
    assert audit.compare_served(latest, served) == [
        ("refs/heads/main", f"served at {C[:12]}, but the log's latest entry says {A[:12]}"),
        ("refs/heads/new", "served at aaaaaaaaaaaa, but the log has no entry for it"),
        ("refs/tags/gone", f"in the log at {B[:12]}, but not served")]


def test_the_published_allowed_signers_read_back(tmp_path: Path) -> None:
    keys.ensure_key(tmp_path / "s")
    history = keys.read_history(tmp_path / "s")
    text = keys.allowed_signers(history) + 'other namespaces="file" ' + history[0].public_key + "\n# c\n\n"
    [key] = trust.parse_allowed_signers(text)
    assert key == trust.from_history(history)[0]
    with pytest.raises(trust.TrustError, match="line 1"):
        trust.parse_allowed_signers('x valid-after="2026" ' + history[0].public_key)


def test_dsse_pae_is_the_specs() -> None:
    # The example of the DSSE protocol document.
    assert dsse.pae("http://example.com/HelloWorld", b"hello world") == \
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    env = dsse.envelope(KEY, {"_type": "x"})
    assert dsse.open_envelope(env, [KEY.blob]) == {"_type": "x"}
    other = FileSigner(Ed25519PrivateKey.generate())
    with pytest.raises(dsse.EnvelopeError, match="no signature verifies"):
        dsse.open_envelope(env, [other.blob])


def test_where_verify_takes_its_keys_from() -> None:
    assert verify.keys_source("ssh://h/t/r.git", "k.txt", {}) == "k.txt"
    assert verify.keys_source("ssh://h/t/r.git", None, {"GITSERVER_URL": "https://gs.example/"}) == \
        "https://gs.example/api/v1/signing-keys/allowed_signers"
    assert verify.keys_source("http://u:p@[::1]:8080/git/t/r.git", None, {}) == \
        "http://[::1]:8080/api/v1/signing-keys/allowed_signers"
    with pytest.raises(verify.VerifyError, match="--keys"):
        verify.keys_source("ssh://h/t/r.git", None, {})
