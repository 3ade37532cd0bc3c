"""The ledger's side of the reference log (gitserver.provenance.pushlog) on each database and a
real repository: a done push's entries name its pusher and key; the catch-up describes values
from the ledger, leaves a value a pending intent claims to that push, logs the server's own
tags as such, an unexplained branch as recovered, and a ref gone from disk as deleted."""

from __future__ import annotations

from pathlib import Path

import pygit2

from gitserver.admin import tenants, users
from gitserver.db.session import transaction
from gitserver.provenance import keys, reflog
from gitserver.provenance.pushlog import PushLog
from gitserver.push import ledger
from gitserver.runtime import Runtime
from tests.unit.conftest import add_repo

Z = "0" * 40
WHO = pygit2.Signature("a", "a@example.com", 1_700_000_000, 0)


def _commit(repo: pygit2.Repository, message: str, ref: str | None = None) -> str:
    return str(repo.create_commit(ref, WHO, WHO, message, repo.TreeBuilder().write(), []))


def test_entries_come_from_the_ledger(runtime: Runtime, tmp_path: Path) -> None:
    keys.ensure_key(runtime.config.signing_dir)
    path = tmp_path / "r.git"
    git = pygit2.init_repository(str(path), bare=True)
    main, pending, stray = _commit(git, "1\n", "refs/heads/main"), _commit(git, "2\n"), _commit(git, "3\n")
    git.references.create("refs/heads/wip", pygit2.Oid(hex=pending))
    git.references.create("refs/heads/stray", pygit2.Oid(hex=stray))
    git.references.create("refs/tags/repour-x", pygit2.Oid(hex=main))
    with transaction(runtime.sessions) as session:
        repo = add_repo(session)
        user = users.create_user(session, tenants.get_tenant(session, "t"), "alice", "member")
        ctx = ledger.PushContext(repo_id=repo.id, user_id=user.id, key_fingerprint="SHA256:k", protocol="ssh")
        push, _pipeline = ledger.record_push(session, ctx, [(Z, main, "refs/heads/main")])
        ledger.record_intent(session, ctx, [(Z, pending, "refs/heads/wip")])
        repo_id, push_id = repo.id, push.id
    push_log = PushLog(runtime.config)
    with transaction(runtime.sessions) as session:
        [done] = push_log.record(session, path, push_id)
    assert (done.entry.ref, done.entry.pusher, done.entry.key_fingerprint, done.entry.push_id) == (
        "refs/heads/main", "alice", "SHA256:k", push_id)
    assert git.lookup_note(main, "refs/notes/attestations").message.count("\n") == 2  # provenance + VSA
    caught = {e.entry.ref: e.entry for e in push_log.catch_up(runtime.sessions, path, repo_id)}
    assert set(caught) == {"refs/heads/stray", "refs/tags/repour-x"}  # wip: its push is still pending
    assert caught["refs/heads/stray"].protocol == "recovered" and caught["refs/heads/stray"].push_id is None
    assert caught["refs/tags/repour-x"].protocol == "server"
    assert push_log.catch_up(runtime.sessions, path, repo_id) == []  # nothing new: nothing written
    git.references.delete("refs/heads/stray")
    [gone] = push_log.catch_up(runtime.sessions, path, repo_id)
    assert (gone.entry.ref, gone.entry.old, gone.entry.new) == ("refs/heads/stray", stray, Z)
    assert reflog.logged_values(path)["refs/heads/stray"] == Z
