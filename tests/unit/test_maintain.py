"""Repository maintenance: the threshold rule (a table), the object-store counts and the
repack on a real repository with the real git binary, and the one-job-per-repository queueing
on a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import select

from gitserver import config as config_mod
from gitserver.db import models
from gitserver.db.base import utcnow
from gitserver.db.session import transaction
from gitserver.git import maintain
from gitserver.pipelines import jobs
from gitserver.pipelines import maintain as maintain_jobs
from gitserver.runtime import Runtime
from tests.unit.conftest import add_repo


def stats(packs: int = 0, loose: int = 0) -> maintain.Stats:
    return maintain.Stats(packs=packs, loose=loose, bitmap=False, commit_graph=False)


@pytest.mark.parametrize(("current", "limits", "needed"), [
    (stats(packs=16), maintain.Thresholds(packs=16, loose=1000), False),
    (stats(packs=17), maintain.Thresholds(packs=16, loose=1000), True),
    (stats(loose=1000), maintain.Thresholds(packs=16, loose=1000), False),
    (stats(loose=1001), maintain.Thresholds(packs=16, loose=1000), True),
    (stats(packs=500, loose=9999), maintain.Thresholds(packs=0, loose=0), False),  # both off
    (stats(packs=500), maintain.Thresholds(packs=0, loose=10), False),
    (stats(loose=11), maintain.Thresholds(packs=0, loose=10), True),
])
def test_needs_maintenance(current: maintain.Stats, limits: maintain.Thresholds, needed: bool) -> None:
    assert maintain.needs_maintenance(current, limits) is needed


@pytest.mark.parametrize(("name", "value", "message"), [
    ("maintenance_max_packs", "-1", "maintenance_max_packs"),
    ("maintenance_max_loose_objects", "-5", "maintenance_max_loose_objects"),
    ("maintenance_timeout", "0", "maintenance_timeout"),
    ("maintenance_delay", "-1", "maintenance_delay"),
])
def test_bad_settings_are_refused(name: str, value: str, message: str) -> None:
    with pytest.raises(config_mod.ConfigError, match=message):
        config_mod.load(environ={f"GITSERVER_{name.upper()}": value})


def git(*args: str, cwd: Path | None = None) -> str:
    env = {"PATH": os.environ["PATH"], "HOME": "/", "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
           "GIT_AUTHOR_NAME": "a", "GIT_AUTHOR_EMAIL": "a@example.com", "GIT_COMMITTER_NAME": "a",
           "GIT_COMMITTER_EMAIL": "a@example.com"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


@pytest.fixture()
def many_packs(tmp_path: Path) -> Path:
    """A bare repository with 6 packs, some loose objects and an unreachable commit."""
    bare = tmp_path / "r.git"
    git("init", "-q", "--bare", str(bare))
    work = tmp_path / "w"
    git("init", "-q", "-b", "main", str(work))
    for i in range(6):
        (work / f"f{i}").write_text(f"{i}\n")
        git("add", ".", cwd=work)
        git("commit", "-qm", f"c{i}", cwd=work)
        git("push", "-q", str(bare), f"HEAD:refs/heads/b{i}", cwd=work)
        git("--git-dir", str(bare), "repack", "-q")  # one pack per push, like receive-pack
    # An object no ref reaches (a push whose ref update was refused, an archive in progress).
    blob = subprocess.run(["git", "--git-dir", str(bare), "hash-object", "-w", "--stdin"], input="orphan\n",
                          capture_output=True, text=True, check=True).stdout.strip()
    (bare / "orphan").write_text(blob)
    return bare


def test_maintain_rolls_up_packs_writes_bitmap_and_graph_and_keeps_every_object(many_packs: Path) -> None:
    refs_before = git("--git-dir", str(many_packs), "for-each-ref")
    before = maintain.stats(many_packs)
    assert before.packs == 6 and not before.bitmap and not before.commit_graph

    after = maintain.maintain(many_packs, timeout=120)

    assert after.packs < before.packs and after.loose == 0
    assert after.bitmap and after.commit_graph
    assert after == maintain.stats(many_packs)
    assert git("--git-dir", str(many_packs), "for-each-ref") == refs_before
    git("--git-dir", str(many_packs), "fsck", "--full", "--no-dangling")
    orphan = (many_packs / "orphan").read_text()
    assert git("--git-dir", str(many_packs), "cat-file", "-t", orphan).strip() == "blob"  # never pruned


def test_a_second_run_on_a_held_repository_reports_busy_and_changes_nothing(many_packs: Path) -> None:
    fd = os.open(many_packs / maintain.LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(maintain.Busy, match="already running"):
            maintain.maintain(many_packs, timeout=120)
        assert maintain.stats(many_packs).packs == 6
    finally:
        os.close(fd)


def test_a_git_failure_is_reported_with_the_command_named(tmp_path: Path) -> None:
    not_a_repo = tmp_path / "empty.git"
    not_a_repo.mkdir()
    with pytest.raises(maintain.MaintenanceError, match="git repack failed: "):
        maintain.maintain(not_a_repo, timeout=120)


def _repo(rt: Runtime) -> int:
    with transaction(rt.sessions) as session:
        return add_repo(session).id


def _maintain_jobs(rt: Runtime) -> list[models.Job]:
    with transaction(rt.sessions) as session:
        rows = list(session.scalars(select(models.Job).where(models.Job.kind == maintain_jobs.KIND)))
        session.expunge_all()
        return rows


def test_one_maintain_job_per_repository_until_it_has_run(runtime: Runtime) -> None:
    repo_id = _repo(runtime)
    with transaction(runtime.sessions) as session:
        first = maintain_jobs.enqueue(session, repo_id, delay=60)
        assert first is not None
        assert maintain_jobs.enqueue(session, repo_id, delay=60) is None
    queued = _maintain_jobs(runtime)
    assert len(queued) == 1 and queued[0].run_after > utcnow() + dt.timedelta(seconds=30)
    # Running still counts; once it has finished, the next push may queue another.
    with transaction(runtime.sessions) as session:
        claim = jobs.claim(session, "w1", 30.0, kinds=[maintain_jobs.KIND],
                           now=utcnow() + dt.timedelta(seconds=61))
    assert claim is not None and claim.payload == {"repo_id": repo_id}
    with transaction(runtime.sessions) as session:
        assert maintain_jobs.enqueue(session, repo_id) is None
        jobs.finish(session, claim, models.SUCCEEDED)
    with transaction(runtime.sessions) as session:
        assert maintain_jobs.enqueue(session, repo_id) is not None
    assert len(_maintain_jobs(runtime)) == 2


def test_asking_now_makes_a_delayed_job_due_instead_of_queueing_a_second(runtime: Runtime) -> None:
    repo_id = _repo(runtime)
    with transaction(runtime.sessions) as session:
        delayed = maintain_jobs.enqueue(session, repo_id, delay=3600)  # after a burst of pushes
        assert delayed is not None
        delayed_id = delayed.id
    with transaction(runtime.sessions) as session:
        job, created = maintain_jobs.queue_now(session, repo_id)
        assert (job.id, created) == (delayed_id, False)
    queued = _maintain_jobs(runtime)
    assert len(queued) == 1 and queued[0].run_after <= utcnow()
    with transaction(runtime.sessions) as session:  # a worker can claim it at once
        claim = jobs.claim(session, "w1", 30.0, kinds=[maintain_jobs.KIND])
    assert claim is not None and claim.payload == {"repo_id": repo_id}
    with transaction(runtime.sessions) as session:  # running: handed back, not duplicated
        job, created = maintain_jobs.queue_now(session, repo_id)
        assert (job.id, created) == (delayed_id, False)
        jobs.finish(session, claim, models.SUCCEEDED)
    with transaction(runtime.sessions) as session:  # finished: the next request queues anew
        job, created = maintain_jobs.queue_now(session, repo_id)
        assert created and job.id != delayed_id and job.run_after <= utcnow()
