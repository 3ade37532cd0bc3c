"""Issue 21, finding 3, without servers (real git, SQLite and PostgreSQL): a pending intent is
settled by whether its value landed, not by the ref's value now; no pipeline is queued for a
pending push; `gitserver check` verifies the ledger against the reflogs."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from gitserver.admin import repos as admin_repos
from gitserver.admin import tenants as admin_tenants
from gitserver.admin import users as admin_users
from gitserver.cmd import check
from gitserver.config import load
from gitserver.db import models
from gitserver.db.base import utcnow
from gitserver.db.session import transaction
from gitserver.pipelines import repair
from gitserver.push import ledger
from gitserver.push import reconcile as reconciler
from gitserver.push.ledger import PushContext
from gitserver.runtime import Runtime, initialise
from tests.functional.conftest import commit_files, make_repo

ZERO = "0" * 40
MAIN = "refs/heads/main"
OLD = dt.timedelta(hours=1)


@pytest.fixture
def site(tmp_path: Path, db_url: str, git_env: dict[str, str]) -> Iterator[dict[str, Any]]:
    """One repository holding the objects of two commits, c1 and its child c2, and no ref."""
    cfg = load(environ={"GITSERVER_DATA_DIR": str(tmp_path / "data"), "GITSERVER_DATABASE_URL": db_url})
    initialise(cfg)
    runtime = Runtime.create(cfg, pool_size=4)
    with transaction(runtime.sessions) as session:
        tenant = admin_tenants.create_tenant(session, "acme")
        user = admin_users.create_user(session, tenant, "alice", "member")
        repo = admin_repos.create_repo(session, runtime.store, tenant, "widgets")
        ids = {"repo": repo.id, "user": user.id}
    work = make_repo(tmp_path / "work", git_env)
    c1 = subprocess.run(["git", "rev-parse", "HEAD"], cwd=work, capture_output=True, text=True,
                        check=True).stdout.strip()
    c2 = commit_files(work, git_env, {"b.txt": "two\n"})
    path = runtime.store.path("acme", "widgets")
    subprocess.run(["git", "fetch", "-q", "--no-write-fetch-head", str(work), "main"], cwd=path,
                   env=git_env, check=True, capture_output=True)
    yield {"runtime": runtime, "path": path, "c1": c1, "c2": c2, **ids}
    runtime.dispose()


def move(site: dict[str, Any], ref: str, new: str, old: str = "") -> None:
    """What the hook's ``git update-ref`` does (and it logs the move: core.logAllRefUpdates)."""
    subprocess.run(["git", "update-ref", ref, new, *([old] if old else [])], cwd=site["path"], check=True)


def intent(site: dict[str, Any], updates: list[tuple[str, str, str]], age: dt.timedelta = OLD) -> int:
    with transaction(site["runtime"].sessions) as session:
        push_id = ledger.record_intent(session, PushContext(repo_id=site["repo"], user_id=site["user"]),
                                       updates).id
        session.execute(update(models.Push).where(models.Push.id == push_id)
                        .values(created_at=utcnow() - age))
    return push_id


def complete(site: dict[str, Any], push_id: int, moved: list[str]) -> None:
    with transaction(site["runtime"].sessions) as session:
        ledger.complete_push(session, push_id, moved)


def reconcile(site: dict[str, Any], grace: float = 300) -> reconciler.RepoPass | None:
    runtime = site["runtime"]
    return reconciler.reconcile_one(runtime.sessions, runtime.store.root, site["repo"], intent_grace=grace)


def state(site: dict[str, Any], push_id: int) -> tuple[str, list[tuple[str, str]], int]:
    """(state, its ref updates, how many pipelines it has)."""
    with site["runtime"].sessions() as session:
        row = session.get(models.Push, push_id)
        assert row is not None
        pipelines = session.scalar(select(func.count(models.Pipeline.id))
                                   .where(models.Pipeline.push_id == push_id)) or 0
        return row.state, [(u.ref, u.new) for u in row.ref_updates], pipelines


def ledger_breaches(site: dict[str, Any], repair: bool = False) -> list[str]:
    report = check.check(site["runtime"], repair=repair)
    # The refs are moved by hand here, past the reference log: its own findings are another
    # test's (test_provenance.py).
    return [line for line in report.breaches if line.startswith("acme/widgets refs/") and line not in report.history]


@pytest.mark.parametrize("history", ["reflog", "ancestry"])
def test_acknowledged_push_whose_branch_moved_on_is_recovered_not_failed(site: dict[str, Any],
                                                                         history: str) -> None:
    """(a) The database died between push 1's intent and its done step (git said ok); push 2
    moved the branch on. The reconciler records push 1 from the reflog, or from the branch's
    history when there is no reflog (a repository older than its reflog)."""
    c1, c2 = site["c1"], site["c2"]
    first = intent(site, [(ZERO, c1, MAIN)])
    move(site, MAIN, c1, ZERO)  # the database dies here: no done step
    second = intent(site, [(c1, c2, MAIN)], age=dt.timedelta(0))
    move(site, MAIN, c2, c1)
    complete(site, second, [MAIN])
    if history == "ancestry":
        shutil.rmtree(site["path"] / "logs")
    result = reconcile(site)
    assert result is not None and result.recovered_pushes == [first]
    assert state(site, first) == ("recovered", [(MAIN, c1)], 1)
    assert state(site, second) == ("done", [(MAIN, c2)], 1)
    assert ledger_breaches(site) == []


def test_old_intent_that_never_landed_fails(site: dict[str, Any]) -> None:
    """The hook died before moving anything; later pushes moved main on without its value (a
    tag never written, a branch value outside the history)."""
    c1, c2 = site["c1"], site["c2"]
    move(site, MAIN, c1, ZERO)
    lost = intent(site, [(c1, c2, "refs/heads/other"), (ZERO, c2, "refs/tags/v1")])
    assert reconcile(site) is not None
    assert state(site, lost)[0] == "failed"


@pytest.mark.parametrize("age_seconds", [1, 30])
def test_pipeline_reconciler_leaves_a_pending_push_to_its_hook(site: dict[str, Any], age_seconds: int) -> None:
    """(b) A big push still in its hook, inside and past the pipeline reconciler's 5 s: neither
    reconciler queues anything for it, and its hook then completes it: done, one pipeline."""
    c1 = site["c1"]
    pending = intent(site, [(ZERO, c1, MAIN)], age=dt.timedelta(seconds=age_seconds))
    move(site, MAIN, c1, ZERO)
    assert repair.reconcile(site["runtime"]) == 0
    result = reconcile(site)  # inside receive_finish_timeout: left alone
    assert result is not None and result.unsettled and not result.recovered_pushes
    assert state(site, pending) == ("pending", [(MAIN, c1)], 0)
    complete(site, pending, [MAIN])
    assert state(site, pending) == ("done", [(MAIN, c1)], 1)


def test_hook_finishing_after_the_reconciler_settled_its_push_adds_nothing(site: dict[str, Any]) -> None:
    """(b) The reconciler settles the intent the moment its grace is over, and the hook's done
    step arrives just after: no UNIQUE failure, one pipeline."""
    c1 = site["c1"]
    pending = intent(site, [(ZERO, c1, MAIN)], age=dt.timedelta(seconds=10))
    move(site, MAIN, c1, ZERO)
    result = reconcile(site, grace=5)
    assert result is not None and result.recovered_pushes == [pending]
    complete(site, pending, [MAIN])
    assert state(site, pending) == ("recovered", [(MAIN, c1)], 1)
    assert repair.reconcile(site["runtime"]) == 0


def test_a_pipeline_queued_for_a_pending_push_by_an_older_release_does_not_block_it(site: dict[str, Any]) -> None:
    """A pending push that got a pipeline from the old pipeline reconciler: its done step
    keeps that pipeline instead of failing on pipelines.push_id, so the push is recorded."""
    c1 = site["c1"]
    pending = intent(site, [(ZERO, c1, MAIN)], age=dt.timedelta(seconds=30))
    move(site, MAIN, c1, ZERO)
    with transaction(site["runtime"].sessions) as session:
        row = session.get(models.Push, pending)
        assert row is not None
        ledger.enqueue_push_pipeline(session, row)
    complete(site, pending, [MAIN])
    assert state(site, pending) == ("done", [(MAIN, c1)], 1)


def test_check_verifies_the_ledger_against_the_reflog(site: dict[str, Any]) -> None:
    """(c) A value the reflog took that no push recorded, a recorded value the reflog never
    had, and a recorded ref that never reached the disk, although the refs' current values
    are all in the ledger."""
    c1, c2 = site["c1"], site["c2"]
    move(site, MAIN, c1, ZERO)  # unrecorded, then moved on from
    move(site, MAIN, c2, c1)
    move(site, "refs/tags/v1", c2, ZERO)
    with transaction(site["runtime"].sessions) as session:
        ctx = PushContext(repo_id=site["repo"], user_id=site["user"])
        ledger.record_push(session, ctx, [(c1, c2, MAIN), (ZERO, c2, "refs/tags/v1")])
        moved_tag = ledger.record_push(session, ctx, [(c2, c1, "refs/tags/v1")])[0].id  # never landed
        ghost = ledger.record_push(session, ctx, [(ZERO, c1, "refs/heads/ghost")])[0].id  # never written
    _age_reflogs(site["path"])
    assert sorted(ledger_breaches(site)) == sorted([
        f"acme/widgets {MAIN}: {c1} in the reflog is not in the ledger (no push recorded it)",
        f"acme/widgets refs/heads/ghost: {c1} recorded by push {ghost} never landed: the ref is not "
        "on disk, was never deleted, and has no reflog",
        f"acme/widgets refs/tags/v1: {c1} recorded by push {moved_tag} never appeared in the ref's reflog",
    ])
    # --repair records the reflog's unrecorded value; what never landed stays reported.
    ledger_breaches(site, repair=True)
    assert sorted(b.split(":")[0] for b in ledger_breaches(site)) == ["acme/widgets refs/heads/ghost",
                                                                      "acme/widgets refs/tags/v1"]


def _age_reflogs(path: Path) -> None:
    """Date every reflog entry an hour back, so the ledger's pushes are all after the reflogs
    began (as they are when the intent precedes the move by more than the clock slack)."""
    for log_file in (path / "logs" / "refs").rglob("*"):
        if not log_file.is_file():
            continue
        lines = []
        for line in log_file.read_text().splitlines():
            head, _, message = line.partition("\t")
            fields = head.split(" ")
            fields[-2] = str(int(fields[-2]) - 3600)
            lines.append(" ".join(fields) + "\t" + message)
        log_file.write_text("\n".join(lines) + "\n")
