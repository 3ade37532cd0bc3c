"""The reconciler: compares the refs on disk with the push ledger and records each
difference (docs/ledger.md).

* A **pending intent** older than the grace (``receive_finish_timeout``: its hook may still
  be at work) is settled by whether each of its values *landed* (gitserver.git.landed: the
  ref's value, its reflog, or for a branch its history), not by the ref's current value
  alone: the push that follows an acknowledged one moves the branch on. It becomes
  ``recovered`` with its pusher and its pipeline, or ``failed`` when nothing landed. Settling
  is a compare-and-set on the push's state (ledger.complete_push), so a hook finishing at the
  same moment records it once; a pending push never gets a pipeline any other way.
* A ref no push explains is recorded as a new ``recovered`` push with no pusher.

A repository whose refs did not change since the last clean pass costs a fingerprint
(gitserver.git.refstate) and a compare. Archive refs (``repour-*``, ``branch-repour-*``) are
written by the server itself and answer to the Archive table; ``gitserver check`` verifies
them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select, tuple_, update
from sqlalchemy.orm import Session, sessionmaker

from gitserver.db import models
from gitserver.db.base import utcnow
from gitserver.db.session import rowcount, transaction
from gitserver.git import landed, refs, refstate
from gitserver.git.store import repo_path
from gitserver.provenance import reflog
from gitserver.provenance.pushlog import PushLog
from gitserver.push.ledger import complete_push, enqueue_push_pipeline, notify_push

if TYPE_CHECKING:
    from gitserver.runtime import Runtime

log = logging.getLogger(__name__)

RECOVERED_PROTOCOL = "recovered"
_PAIR_CHUNK = 400  # (ref, new) pairs per IN clause: well inside SQLite's variable limit
# A loose ref written this recently with no intent behind it may belong to a server-side
# writer that has not recorded it yet; the periodic pass leaves it for the next one.
FRESH_REF_SECONDS = 10.0


@dataclasses.dataclass
class Difference:
    """A value a ref holds on disk, or took and moved on from, that the ledger lacks."""

    repo: str
    ref: str
    value: str
    intent_id: int | None = None  # the pending push that explains it, if any
    on_disk: bool = True  # False: it landed and the ref has moved on since

    def what(self) -> str:
        """``<value> …: <why>``, the part of a `gitserver check` line after the ref."""
        why = f"pending push {self.intent_id}" if self.intent_id else "no push recorded it"
        if self.on_disk:
            return f"{self.value} on disk is not in the ledger ({why})"
        return f"{self.value} landed and the ref moved on, but it is not in the ledger ({why})"

    def describe(self) -> str:
        return f"{self.repo} {self.ref}: {self.what()}"


@dataclasses.dataclass(frozen=True)
class Intent:
    """One ref update of a pending push."""

    push_id: int
    created_at: dt.datetime
    ref: str
    new: str


@dataclasses.dataclass
class RepoPass:
    """What one reconciler pass found (and, when repairing, recorded) in one repository."""

    repo: str
    differences: list[Difference] = dataclasses.field(default_factory=list)
    recovered_pushes: list[int] = dataclasses.field(default_factory=list)
    failed_intents: list[int] = dataclasses.field(default_factory=list)
    unsettled: bool = False  # a young pending intent: look again next pass
    skipped: bool = False  # fingerprint unchanged
    refs_read: int = 0  # refs of the ledger read from disk (0 when skipped)
    clean_fingerprint: str = ""  # nothing to record: store this fingerprint (see store_fingerprints)
    logged: int = 0  # entries the reference log caught up with


@dataclasses.dataclass(frozen=True)
class RepoRef:
    """The columns of a repository the reconciler needs, read without the ORM."""

    id: int
    tenant: str
    name: str
    fingerprint: str

    @property
    def full_name(self) -> str:
        return f"{self.tenant}/{self.name}"


def list_repos(session: Session) -> list[RepoRef]:
    rows = session.execute(
        select(models.Repository.id, models.Tenant.name, models.Repository.name,
               models.Repository.refs_fingerprint)
        .join(models.Tenant, models.Tenant.id == models.Repository.tenant_id)
        .order_by(models.Repository.id))
    return [RepoRef(*row) for row in rows]


def reconcile_repo(sessions: sessionmaker[Session], repo: RepoRef, path: Path, *,
                   intent_grace: float, repair: bool = True, force: bool = False,
                   stale_lock_seconds: float | None = None,
                   now: dt.datetime | None = None, push_log: PushLog | None = None) -> RepoPass:
    """:func:`reconcile_refs`, then (with ``repair`` and ``push_log``, when nothing is left
    unsettled) the reference log caught up with the refs: what was just recorded, what a log
    write that failed left out, and every ref of a repository older than the log."""
    result = reconcile_refs(sessions, repo, path, intent_grace=intent_grace, repair=repair, force=force,
                            stale_lock_seconds=stale_lock_seconds, now=now,
                            log_missing=push_log is not None and not reflog.present(path))
    if repair and push_log is not None and not result.skipped and not result.unsettled:
        result.logged = len(push_log.catch_up(sessions, path, repo.id))
    return result


def reconcile_refs(sessions: sessionmaker[Session], repo: RepoRef, path: Path, *,
                   intent_grace: float, repair: bool = True, force: bool = False,
                   stale_lock_seconds: float | None = None,
                   now: dt.datetime | None = None, log_missing: bool = False) -> RepoPass:
    """Compare one repository's refs with the ledger; with ``repair``, record what is missing.

    ``force`` reads the refs even when the fingerprint says nothing changed (``gitserver
    check``). Never moves or deletes a ref. With ``repair`` and ``stale_lock_seconds``, a ref
    lock file that old is removed (its writer was killed: every later write of that ref would
    fail); a younger one leaves the repository to be looked at again next pass.
    """
    result = RepoPass(repo.full_name)
    # Fingerprint before reading the refs: a ref written after it changes the next one.
    fingerprint = refstate.fingerprint(path)
    if fingerprint == repo.fingerprint and not force and not log_missing:
        result.skipped = True
        return result
    # Creating a lock file changes its directory's mtime, so a repository with one is always
    # looked at here; it is not stored as clean while one is left.
    if refstate.ref_locks(path) and _clear_stale_locks(path, repo, repair, stale_lock_seconds):
        result.unsettled = True
    # Refs before the ledger: an intent is committed before its ref moves, so every ref read
    # here that came through a hook has its intent visible to the queries below.
    on_disk = refstate.ledger_refs(refstate.read_refs(path))
    result.refs_read = len(on_disk)
    cutoff = (now or utcnow()) - dt.timedelta(seconds=intent_grace)
    with transaction(sessions) as session:
        missing = _missing(session, repo.id, on_disk)
        intents = _pending_intents(session, repo.id)
        young = {i.push_id for i in intents if _aware(i.created_at) > cutoff}
        old = [i for i in intents if i.push_id not in young]
        recorded = _found_pairs(session, repo.id, [(i.ref, i.new) for i in old])
    if young:
        result.unsettled = True  # their hooks may still be at work: look again next pass
    explained: dict[tuple[str, str], int] = {}
    for intent in intents:
        explained.setdefault((intent.ref, intent.new), intent.push_id)
    for ref, value in sorted(missing.items()):
        push_id = explained.get((ref, value))
        if push_id is not None:
            continue  # its intent's hook may still record it (young), or it is settled below
        if not force and refstate.written_within(path, ref, FRESH_REF_SECONDS):
            # The server's own writers (a Repour adjust tag, written a moment before its
            # Archive row) may be mid-way: look again next pass. `check` does not wait.
            result.unsettled = True
            continue
        result.differences.append(Difference(repo.full_name, ref, value))
    result.differences += _landed(repo, path, on_disk, old, recorded)
    settle = {i.push_id for i in old}
    if not repair:
        return result
    if not result.differences and not settle:
        # Nothing to record: the caller stores the fingerprint (batched with other clean ones).
        if not result.unsettled and fingerprint != repo.fingerprint:
            result.clean_fingerprint = fingerprint
        return result
    stored = fingerprint if not result.unsettled else f"unsettled:{secrets.token_hex(8)}"
    with transaction(sessions) as session:
        # Compare-and-set first: of two reconcilers looking at the same change, one records it.
        won = session.execute(
            update(models.Repository)
            .where(models.Repository.id == repo.id,
                   models.Repository.refs_fingerprint == repo.fingerprint)
            .values(refs_fingerprint=stored).execution_options(synchronize_session=False))
        if not rowcount(won):
            result.differences.clear()
            result.unsettled = True
            return result
        _record_differences(session, repo, result, settle)
    return result


def _aware(when: dt.datetime) -> dt.datetime:
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


def _landed(repo: RepoRef, path: Path, on_disk: dict[str, str], old: list[Intent],
            recorded: set[tuple[str, str]]) -> list[Difference]:
    """The updates of old pending intents that landed, by whether their value reached the
    ref (gitserver.git.landed), not by the ref's value now. A value another push recorded
    already (a retry of the same push) is not claimed twice."""
    landing = landed.Landing(path, on_disk)
    found = []
    for intent in old:
        if (intent.ref, intent.new) in recorded:
            continue
        if landing.landed(intent.ref, intent.new, _aware(intent.created_at).timestamp()):
            found.append(Difference(repo.full_name, intent.ref, intent.new, intent.push_id,
                                    on_disk=on_disk.get(intent.ref) == intent.new))
    return found


def _missing(session: Session, repo_id: int, on_disk: dict[str, str]) -> dict[str, str]:
    """The (ref → value) pairs on disk that no done or recovered push recorded."""
    pairs = list(on_disk.items())
    found = _found_pairs(session, repo_id, pairs)
    missing = {ref: value for ref, value in pairs if (ref, value) not in found}
    # Adjust (Repour) tags are written by the server and recorded in the Archive table, under
    # the tool's version name when it gave one: they answer to `gitserver check`'s archive
    # verification, not to the push ledger.
    tag_names = [ref[len(refs.TAGS):] for ref in missing if ref.startswith(refs.TAGS)]
    for i in range(0, len(tag_names), _PAIR_CHUNK):
        for tag in session.scalars(select(models.Archive.tag).where(
                models.Archive.repo_id == repo_id, models.Archive.tag.in_(tag_names[i:i + _PAIR_CHUNK]))):
            missing.pop(refs.TAGS + tag, None)
    return missing


def _found_pairs(session: Session, repo_id: int, pairs: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """Those of the (ref, new) ``pairs`` that a done or recovered push recorded."""
    found: set[tuple[str, str]] = set()
    for i in range(0, len(pairs), _PAIR_CHUNK):
        chunk = pairs[i:i + _PAIR_CHUNK]
        found.update((ref, new) for ref, new in session.execute(
            select(models.RefUpdate.ref, models.RefUpdate.new)
            .join(models.Push, models.Push.id == models.RefUpdate.push_id)
            .where(models.Push.repo_id == repo_id, models.Push.state.in_(models.LEDGER_STATES),
                   tuple_(models.RefUpdate.ref, models.RefUpdate.new).in_(chunk))).all())
    return found


def _pending_intents(session: Session, repo_id: int) -> list[Intent]:
    rows = session.execute(
        select(models.Push.id, models.Push.created_at, models.RefUpdate.ref, models.RefUpdate.new)
        .join(models.RefUpdate, models.RefUpdate.push_id == models.Push.id)
        .where(models.Push.repo_id == repo_id, models.Push.state == models.PUSH_PENDING)
        .order_by(models.Push.id, models.RefUpdate.id))
    return [Intent(*row) for row in rows]


def _record_differences(session: Session, repo: RepoRef, result: RepoPass, settle: set[int]) -> None:
    by_intent: dict[int, list[str]] = {}
    orphans: list[Difference] = []
    for diff in result.differences:
        if diff.intent_id is not None:
            by_intent.setdefault(diff.intent_id, []).append(diff.ref)
        else:
            orphans.append(diff)
    for push_id in sorted(settle | set(by_intent)):
        moved = by_intent.get(push_id, [])
        pipeline = complete_push(session, push_id, moved, state=models.PUSH_RECOVERED)
        if moved and pipeline is not None:
            result.recovered_pushes.append(push_id)
            log.warning("%s: push %s was never completed; recovered %d ref(s) that landed, "
                        "with pipeline %s", repo.full_name, push_id, len(moved), pipeline.id)
        elif not moved:
            result.failed_intents.append(push_id)
    if orphans:
        result.recovered_pushes.append(record_unexplained(session, repo, orphans))


def record_unexplained(session: Session, repo: RepoRef, orphans: list[Difference]) -> int:
    """Record values no push explains as one ``recovered`` push with no pusher, with its
    pipeline and webhooks; its id."""
    latest = _latest_values(session, repo.id, [d.ref for d in orphans])
    push = models.Push(repo_id=repo.id, protocol=RECOVERED_PROTOCOL, state=models.PUSH_RECOVERED,
                       finished_at=utcnow())
    push.ref_updates = [models.RefUpdate(ref=d.ref, old=latest.get(d.ref, refs.ZERO_OID), new=d.value)
                        for d in orphans]
    session.add(push)
    session.flush()
    pipeline = enqueue_push_pipeline(session, push)
    notify_push(session, push, pipeline)
    log.warning("%s: %d ref value(s) were never recorded (%s); recorded as push %s",
                repo.full_name, len(orphans), ", ".join(d.ref for d in orphans[:5]), push.id)
    return push.id


def _latest_values(session: Session, repo_id: int, ref_names: list[str]) -> dict[str, str]:
    """The newest recorded value of each ref (the ``old`` of a recovered update)."""
    rows = session.execute(
        select(models.RefUpdate.ref, models.RefUpdate.new)
        .join(models.Push, models.Push.id == models.RefUpdate.push_id)
        .where(models.Push.repo_id == repo_id, models.Push.state.in_(models.LEDGER_STATES),
               models.RefUpdate.ref.in_(ref_names))
        .order_by(models.RefUpdate.id))
    return {ref: new for ref, new in rows}


@dataclasses.dataclass
class Summary:
    """What one reconciler pass did, counted for its log line and the check's report."""

    repos: int = 0
    skipped: int = 0
    recovered_pushes: int = 0
    failed_intents: int = 0
    unsettled: int = 0
    errors: int = 0


FINGERPRINT_BATCH = 500


def _clear_stale_locks(path: Path, repo: RepoRef, repair: bool, stale_seconds: float | None) -> bool:
    """Remove the repository's ref locks older than ``stale_seconds`` (with ``repair``);
    whether any lock is left."""
    if repair and stale_seconds is not None:
        for lock in refstate.stale_ref_locks(path, stale_seconds):
            lock.unlink(missing_ok=True)
            log.warning("%s: removed %s, a ref lock left for over %.0fs by a writer that died",
                        repo.full_name, lock.relative_to(path), stale_seconds)
    return bool(refstate.ref_locks(path))


def reconcile_all(sessions: sessionmaker[Session], repos_root: Path, *, intent_grace: float,
                  stale_lock_seconds: float | None = None, push_log: PushLog | None = None) -> Summary:
    """One pass over every repository under ``repos_root`` that the database knows."""
    summary = Summary()
    with transaction(sessions) as session:
        repos = list_repos(session)
    clean: list[tuple[RepoRef, str]] = []
    for repo in repos:
        summary.repos += 1
        # Names come from the database, validated when the repository was created.
        path = repo_path(repos_root, repo.tenant, repo.name)
        try:
            result = reconcile_repo(sessions, repo, path, intent_grace=intent_grace,
                                    stale_lock_seconds=stale_lock_seconds, push_log=push_log)
        except Exception:  # one broken repository does not stop the pass
            if (path / "HEAD").is_file():
                log.exception("reconciling %s failed", repo.full_name)
                summary.errors += 1
            continue
        summary.skipped += result.skipped
        summary.recovered_pushes += len(result.recovered_pushes)
        summary.failed_intents += len(result.failed_intents)
        summary.unsettled += result.unsettled
        if result.clean_fingerprint:
            clean.append((repo, result.clean_fingerprint))
        if len(clean) >= FINGERPRINT_BATCH:
            store_fingerprints(sessions, clean)
            clean = []
    store_fingerprints(sessions, clean)
    return summary


def store_fingerprints(sessions: sessionmaker[Session], clean: list[tuple[RepoRef, str]]) -> None:
    """Remember the fingerprints of repositories found in order, in one transaction; each is a
    compare-and-set, so a value another reconciler changed meanwhile is left as it is."""
    if not clean:
        return
    with transaction(sessions) as session:
        for repo, fingerprint in clean:
            session.execute(
                update(models.Repository)
                .where(models.Repository.id == repo.id,
                       models.Repository.refs_fingerprint == repo.fingerprint)
                .values(refs_fingerprint=fingerprint).execution_options(synchronize_session=False))


def reconcile_one(sessions: sessionmaker[Session], repos_root: Path, repo_id: int, *,
                  intent_grace: float, push_log: PushLog | None = None) -> RepoPass | None:
    """Reconcile one repository by id (after a push to it)."""
    with transaction(sessions) as session:
        row = session.execute(
            select(models.Repository.id, models.Tenant.name, models.Repository.name,
                   models.Repository.refs_fingerprint)
            .join(models.Tenant, models.Tenant.id == models.Repository.tenant_id)
            .where(models.Repository.id == repo_id)).first()
    if row is None:
        return None
    repo = RepoRef(*row)
    result = reconcile_repo(sessions, repo, repo_path(repos_root, repo.tenant, repo.name),
                            intent_grace=intent_grace, push_log=push_log)
    if result.clean_fingerprint:
        store_fingerprints(sessions, [(repo, result.clean_fingerprint)])
    return result


def startup_pass(runtime: Runtime, who: str) -> Summary:
    """What a daemon or worker does once at start: remove the quarantine directories of
    receive-packs that died, then reconcile every repository."""
    cfg = runtime.config
    removed = refstate.remove_stale_quarantines(cfg.repos_dir, cfg.quarantine_stale_seconds)
    if removed:
        log.warning("%s: removed %d stale push quarantine dir(s) and ref lock(s): %s", who, len(removed),
                    ", ".join(str(p) for p in removed[:5]))
    return periodic_pass(runtime, who)


def periodic_pass(runtime: Runtime, who: str) -> Summary:
    summary = reconcile_all(runtime.sessions, runtime.store.root,
                            intent_grace=runtime.config.receive_finish_timeout,
                            stale_lock_seconds=runtime.config.quarantine_stale_seconds,
                            push_log=PushLog(runtime.config))
    if summary.recovered_pushes or summary.failed_intents or summary.errors:
        log.warning("%s reconciler: %d repositories, %d recovered push(es), %d intent(s) that "
                    "moved nothing, %d error(s)", who, summary.repos, summary.recovered_pushes,
                    summary.failed_intents, summary.errors)
    return summary
