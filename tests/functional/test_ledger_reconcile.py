"""The reconciler against a real repository and database (SQLite and PostgreSQL), without
servers: pending intents young and old, unexplained refs, and two reconcilers at once."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from gitserver.admin import repos, tenants, users
from gitserver.config import load
from gitserver.db import models
from gitserver.db.session import transaction
from gitserver.push import ledger
from gitserver.push import reconcile as reconciler
from gitserver.push.ledger import PushContext
from gitserver.runtime import Runtime, initialise
from tests.functional.conftest import make_repo

ZERO = "0" * 40


@pytest.fixture
def site(tmp_path: Path, db_url: str, git_env: dict[str, str]) -> Iterator[dict[str, Any]]:
    cfg = load(environ={"GITSERVER_DATA_DIR": str(tmp_path / "data"), "GITSERVER_DATABASE_URL": db_url})
    initialise(cfg)
    runtime = Runtime.create(cfg, pool_size=4)
    with transaction(runtime.sessions) as session:
        tenant = tenants.create_tenant(session, "acme")
        user = users.create_user(session, tenant, "alice", "member")
        repo = repos.create_repo(session, runtime.store, tenant, "widgets")
        ids = {"repo": repo.id, "user": user.id}
    work = make_repo(tmp_path / "work", git_env)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=work, capture_output=True, text=True,
                            check=True).stdout.strip()
    path = runtime.store.path("acme", "widgets")
    # The commit's objects, and no ref: each test writes the refs it needs.
    subprocess.run(["git", "fetch", "-q", "--no-write-fetch-head", str(work), "main"], cwd=path,
                   env=git_env, check=True, capture_output=True)
    yield {"runtime": runtime, "path": path, "commit": commit, **ids}
    runtime.dispose()


def set_ref(path: Path, ref: str, value: str, age: float = 60.0) -> None:
    """Write a ref on disk as something outside a push would, ``age`` seconds ago."""
    subprocess.run(["git", "update-ref", ref, value], cwd=path, check=True)
    past = time.time() - age
    os.utime(path / ref, (past, past))


def reconcile(site: dict[str, Any], **kwargs: Any) -> reconciler.RepoPass:
    runtime = site["runtime"]
    return reconciler.reconcile_one(runtime.sessions, runtime.store.root, site["repo"],
                                intent_grace=kwargs.pop("grace", 300), **kwargs)


def pushes(site: dict[str, Any]) -> list[tuple[str, str | None, list[tuple[str, str]]]]:
    with site["runtime"].sessions() as session:
        rows = session.scalars(select(models.Push).where(models.Push.repo_id == site["repo"])
                               .order_by(models.Push.id)).all()
        return [(p.state, p.protocol, [(u.ref, u.new) for u in p.ref_updates]) for p in rows]


def test_unexplained_ref_is_recorded_once_with_a_pipeline(site: dict[str, Any]) -> None:
    set_ref(site["path"], "refs/heads/main", site["commit"])
    first = reconcile(site)
    assert [d.ref for d in first.differences] == ["refs/heads/main"]
    assert pushes(site) == [("recovered", "recovered", [("refs/heads/main", site["commit"])])]
    with site["runtime"].sessions() as session:
        assert session.scalar(select(models.Pipeline).where(models.Pipeline.repo_id == site["repo"])) is not None
    again = reconcile(site)
    assert again.skipped and not again.differences  # fingerprint unchanged: not even read
    assert len(pushes(site)) == 1


def test_young_intent_is_left_to_its_hook_old_one_is_recovered_with_its_pusher(site: dict[str, Any]) -> None:
    runtime, path, commit = site["runtime"], site["path"], site["commit"]
    set_ref(path, "refs/heads/main", commit)
    with transaction(runtime.sessions) as session:
        intent = ledger.record_intent(session, PushContext(repo_id=site["repo"], user_id=site["user"],
                                                           client_address="10.0.0.9"),
                                      [(ZERO, commit, "refs/heads/main"), (ZERO, commit, "refs/heads/never")])
        intent_id = intent.id
    young = reconcile(site)
    assert young.unsettled and not young.differences
    assert pushes(site)[0][0] == "pending"
    with transaction(runtime.sessions) as session:  # the hook died: the intent grows old
        session.execute(update(models.Push).where(models.Push.id == intent_id)
                        .values(created_at=models.utcnow() - dt.timedelta(hours=1)))
    old = reconcile(site)
    assert old.recovered_pushes == [intent_id]
    with runtime.sessions() as session:
        push = session.get(models.Push, intent_id)
        assert (push.state, push.user_id, push.client_address) == ("recovered", site["user"], "10.0.0.9")
        assert [u.ref for u in push.ref_updates] == ["refs/heads/main"]  # the ref that never moved is dropped
    # The hook, if it ever comes back, finds the push settled and adds nothing.
    with transaction(runtime.sessions) as session:
        ledger.complete_push(session, intent_id, ["refs/heads/main"])
    assert len(pushes(site)) == 1


def test_two_reconcilers_record_a_difference_once(site: dict[str, Any]) -> None:
    set_ref(site["path"], "refs/heads/main", site["commit"])
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: reconcile(site), range(4)))
    assert len(pushes(site)) == 1


def test_fresh_ref_waits_for_its_writer_but_check_reports_it(site: dict[str, Any]) -> None:
    set_ref(site["path"], "refs/tags/v1.0.redhat-00001", site["commit"], age=0)
    assert reconcile(site).unsettled and pushes(site) == []
    runtime = site["runtime"]
    with transaction(runtime.sessions) as session:
        repo = next(r for r in reconciler.list_repos(session) if r.id == site["repo"])
    forced = reconciler.reconcile_repo(runtime.sessions, repo, site["path"], intent_grace=300,
                                   repair=False, force=True)
    assert [d.ref for d in forced.differences] == ["refs/tags/v1.0.redhat-00001"]


def test_a_ref_lock_left_by_a_killed_writer_is_removed_once_stale(site: dict[str, Any],
                                                                   git_env: dict[str, str]) -> None:
    """A writer killed while it held ``refs/heads/main.lock`` (receive-pack, update-ref) leaves
    the lock behind, and every later write of main fails. The periodic pass removes it once
    it is older than quarantine_stale_seconds; a younger one is left, and the repository is
    looked at again on the next pass instead of being stored as clean."""
    runtime, path = site["runtime"], site["path"]
    set_ref(path, "refs/heads/main", site["commit"])
    reconciler.periodic_pass(runtime, "test")  # recorded; the fingerprint is stored as clean
    lock = path / "refs" / "heads" / "main.lock"
    lock.write_text(site["commit"] + "\n")  # what a killed writer leaves
    blocked = subprocess.run(["git", "update-ref", "refs/heads/main", site["commit"]], cwd=path,
                             env=git_env, capture_output=True, text=True)
    assert blocked.returncode != 0 and "main.lock" in blocked.stderr

    reconciler.periodic_pass(runtime, "test")  # young: it may be a writer at work
    assert lock.exists()
    assert not reconcile(site).skipped  # looked at again while a lock is there

    stale = time.time() - runtime.config.quarantine_stale_seconds - 60
    os.utime(lock, (stale, stale))
    reconciler.periodic_pass(runtime, "test")
    assert not lock.exists()
    subprocess.run(["git", "update-ref", "refs/heads/main", site["commit"]], cwd=path, env=git_env,
                   check=True)
    # `gitserver check` reports and repairs the ledger; it never removes a lock.
    lock.write_text(site["commit"] + "\n")
    os.utime(lock, (stale, stale))
    reconciler.reconcile_repo(runtime.sessions, reconciler.RepoRef(site["repo"], "acme", "widgets", ""), path,
                          intent_grace=300, repair=False, force=True,
                          stale_lock_seconds=runtime.config.quarantine_stale_seconds)
    assert lock.exists()
