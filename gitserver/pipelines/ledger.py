"""The push ledger: every value a ref holds on disk was recorded as a RefUpdate of a push that
has a pipeline (docs/ledger.md).

It is kept true by construction and by repair:

* The proc-receive hook asks :class:`HookService` to record the push's **intent** (a ``pending``
  Push with its RefUpdates) before it moves any ref, and to mark it **done** afterwards, which
  drops the refs that did not move and queues the pipeline and the webhooks in the same
  transaction. Both steps are compare-and-set on the push's state, so a retry or a race with
  the reconciler records a push once.
* The **reconciler** (:func:`reconcile_repo`, :func:`reconcile_all`) compares the refs on disk
  with the ledger and records each difference as a ``recovered`` push with its pipeline: the
  pending intent that explains it when there is one (its pusher is kept), else a push with no
  pusher. An intent younger than ``receive_finish_timeout`` may still be in its hook's hands
  and is left alone. A repository whose refs did not change since the last clean pass costs a
  fingerprint (gitserver.git.refstate) and a compare.

Archive refs (``repour-*``, ``branch-repour-*``) are written by the server itself and answer
to the Archive table instead; ``gitserver check`` verifies them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import secrets
import socket
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select, tuple_, update
from sqlalchemy.orm import Session, sessionmaker

from gitserver.db import models
from gitserver.db.base import utcnow
from gitserver.db.session import rowcount, transaction
from gitserver.git import admission, limits, protect, push_options, refs, refstate
from gitserver.pipelines import jobs, outbox
from gitserver.push import messages
from gitserver.urls import pipeline_url

if TYPE_CHECKING:
    from gitserver.runtime import Runtime

log = logging.getLogger(__name__)

RECOVERED_PROTOCOL = "recovered"
MAX_HOOK_LINE = 64 * 1024 * 1024
_PAIR_CHUNK = 400
# A loose ref written this recently with no intent behind it may belong to a server-side
# writer that has not recorded it yet; the periodic pass leaves it for the next one.
FRESH_REF_SECONDS = 10.0  # (ref, new) pairs per IN clause: well inside SQLite's variable limit


# --- recording a push --------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class PushContext:
    """Who pushed, with which key, from where: the audit facts of one push."""

    repo_id: int
    user_id: int | None = None
    key_id: int | None = None
    key_fingerprint: str = ""
    protocol: str = "ssh"
    client_address: str = ""


def record_intent(session: Session, ctx: PushContext, updates: list[tuple[str, str, str]],
                  options: Sequence[str] = ()) -> models.Push:
    """A ``pending`` push with its ref updates (old, new, ref) and push options: who pushes
    what, before it moves."""
    push = models.Push(repo_id=ctx.repo_id, user_id=ctx.user_id, public_key_id=ctx.key_id,
                       key_fingerprint=ctx.key_fingerprint, protocol=ctx.protocol,
                       client_address=ctx.client_address, state=models.PUSH_PENDING,
                       push_options=json.dumps(list(options)))
    push.ref_updates = [models.RefUpdate(ref=ref, old=old, new=new) for old, new, ref in updates]
    session.add(push)
    session.flush()
    return push


def complete_push(session: Session, push_id: int, moved: Iterable[str],
                  state: str = models.PUSH_DONE) -> models.Pipeline | None:
    """Settle a pending push: keep the ref updates of ``moved`` refs, queue the pipeline and
    the ``push`` webhooks. A push that is no longer pending (the reconciler or a retry got
    there first) is left as it is; the result is then its existing pipeline."""
    moved = set(moved)
    final = state if moved else models.PUSH_FAILED
    claimed = session.execute(
        update(models.Push).where(models.Push.id == push_id, models.Push.state == models.PUSH_PENDING)
        .values(state=final, finished_at=utcnow()).execution_options(synchronize_session=False))
    push = session.get(models.Push, push_id)
    if push is None:
        raise LookupError(f"push {push_id} does not exist")
    session.refresh(push)
    if not rowcount(claimed):
        return session.scalar(select(models.Pipeline).where(models.Pipeline.push_id == push_id))
    stale = [u.id for u in push.ref_updates if u.ref not in moved]
    if stale:
        session.execute(delete(models.RefUpdate).where(models.RefUpdate.id.in_(stale)))
        session.expire(push, ["ref_updates"])
    if final == models.PUSH_FAILED:
        return None
    pipeline = enqueue_push_pipeline(session, push)
    notify_push(session, push, pipeline)
    return pipeline


def record_push(session: Session, ctx: PushContext,
                updates: list[tuple[str, str, str]]) -> tuple[models.Push, models.Pipeline | None]:
    """Record a push whose refs have all moved already, with its pipeline, in one go."""
    push = record_intent(session, ctx, updates)
    pipeline = complete_push(session, push.id, [ref for _old, _new, ref in updates])
    return push, pipeline


# --- the hook's side of it ---------------------------------------------------------------------

class HookService:
    """Answers the hooks of one git process (the typed requests of gitserver.push.messages):
    the proc-receive hook's ``Intent`` → ``IntentReply`` and ``Done`` → ``DoneReply`` (it
    records the push); and, when given ``push_check``, the pre-receive hook's ``PreReceive``
    (the whole-push refusals of gitserver.git.admission, for a pusher who ``can_write`` or
    not, then the limits) and ``Limits`` (the limits alone: hooks of an older release), each
    → ``Admitted`` or ``Refused``, which decide and record nothing else (pre-receive runs
    before git's own checks). Failures answer ``Failed`` with a message safe to show the
    pusher."""

    def __init__(self, sessions: sessionmaker[Session], ctx: PushContext, http_base_url: str,
                 push_check: limits.QuarantineCheck | None = None, can_write: bool = False) -> None:
        self.sessions = sessions
        self.ctx = ctx
        self.http_base_url = http_base_url
        self.push_check = push_check
        self.can_write = can_write
        self.issued: set[int] = set()
        self.pipeline_ids: list[int] = []

    def handle(self, request: object, trust_push_ids: bool = False) -> dict[str, object]:
        """One request as read from the socket (a JSON object) → its reply's JSON object."""
        try:
            typed = messages.decode_request(request)
        except messages.ProtocolError as exc:
            return messages.to_wire(messages.Failed(str(exc)))
        return messages.to_wire(self.answer(typed, trust_push_ids))

    def answer(self, request: messages.Request, trust_push_ids: bool = False) -> messages.Reply:
        """The reply to ``request``. ``trust_push_ids``: a ``Done`` may name a push another
        process started (the hook's own database fallback, gitserver.hookdb)."""
        try:
            return self._answer(request, trust_push_ids)
        except ValueError as exc:
            return messages.Failed(str(exc)[:200])
        except Exception as exc:  # one line for the pusher; the log has the rest
            log.exception("recording a push to repository %s failed", self.ctx.repo_id)
            return messages.Failed(f"database error ({type(exc).__name__})")

    def _answer(self, request: messages.Request, trust_push_ids: bool) -> messages.Reply:
        if isinstance(request, messages.Limits):
            return self._limits(request.quarantine)
        if isinstance(request, messages.PreReceive):
            refused = admission.declined([protect.RefCommand(*u) for u in request.updates], self.can_write)
            return messages.Refused(tuple(refused)) if refused else self._limits(request.quarantine)
        if isinstance(request, messages.Intent):
            options = parse_push_options(list(request.push_options))
            with transaction(self.sessions) as session:
                push_id = record_intent(session, self.ctx, list(request.updates), options).id
            self.issued.add(push_id)
            return messages.IntentReply(push_id)
        return self._done(request, trust_push_ids)

    def _done(self, request: messages.Done, trust_push_ids: bool) -> messages.DoneReply:
        if not (trust_push_ids or request.push_id in self.issued):
            raise ValueError("done for a push this session did not start")
        with transaction(self.sessions) as session:
            pipeline = complete_push(session, request.push_id, request.moved)
            pipeline_id = pipeline.id if pipeline is not None else None
        if pipeline_id is None:
            return messages.DoneReply()
        self.pipeline_ids.append(pipeline_id)
        log.info("push %s to repository %s: %d ref(s), pipeline %s", request.push_id,
                 self.ctx.repo_id, len(request.moved), pipeline_id)
        return messages.DoneReply((f"pipeline {pipeline_id} queued: "
                                   f"{pipeline_url(self.http_base_url, pipeline_id)}",))

    def _limits(self, name: str) -> messages.Admitted | messages.Refused:
        """The pre-receive hook's question: is the push in quarantine ``name`` within the
        limits? Only measures (the hook runs the Python check itself on an error)."""
        if self.push_check is None:
            raise ValueError("push limits are not checked by this process")
        quarantine = self.push_check.quarantine(name)
        try:
            over = self.push_check.check(quarantine, outside_git=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            raise ValueError(f"could not measure the push ({type(exc).__name__})") from exc
        return messages.Admitted() if over is None else messages.Refused((over,))


def parse_push_options(options: Any) -> list[str]:
    """The push options of an intent, checked again here (the hook is another process)."""
    if not (isinstance(options, list) and all(isinstance(o, str) for o in options)):
        raise ValueError("malformed push options in hook message")
    try:
        push_options.parse(options)
    except push_options.PushOptionError as exc:
        raise ValueError(f"push option refused: {exc}") from exc
    return options


def parse_updates(rows: Any) -> list[tuple[str, str, str]]:
    """``[[old, new, ref], ...]`` from the hook; ValueError if malformed
    (:func:`gitserver.push.messages.parse_updates`)."""
    return list(messages.parse_updates(rows))


def serve_hook_socket(sock: socket.socket, service: HookService) -> None:
    """Answer hook requests on ``sock`` until every git process holding its other end exits.

    Runs in a thread of its own, not tied to the client's connection: a client that hangs up
    after its commands does not stop the hook from recording the push.
    """
    with sock, sock.makefile("rwb") as stream:
        while True:
            try:
                line = stream.readline(MAX_HOOK_LINE)
            except OSError:
                return
            if not line:
                return
            try:
                request = json.loads(line)
            except ValueError:
                request = None
            reply = service.handle(request)
            try:
                stream.write(messages.dumps(reply))
                stream.flush()
            except OSError:
                return  # the hook died; the reconciler settles its intent


# --- the reconciler ----------------------------------------------------------------------------

@dataclasses.dataclass
class Difference:
    """A ref whose value on disk is not in the ledger."""

    repo: str
    ref: str
    value: str
    intent_id: int | None = None  # the pending push that explains it, if any

    def describe(self) -> str:
        why = (f"pending push {self.intent_id} moved it but was never completed"
               if self.intent_id else "no push recorded it")
        return f"{self.repo} {self.ref}: {self.value} on disk is not in the ledger ({why})"


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
                   now: dt.datetime | None = None) -> RepoPass:
    """Compare one repository's refs with the ledger; with ``repair``, record what is missing.

    ``force`` reads the refs even when the fingerprint says nothing changed (``gitserver
    check``). Never moves or deletes a ref. With ``repair`` and ``stale_lock_seconds``, a ref
    lock file that old is removed (its writer was killed: every later write of that ref would
    fail); a younger one leaves the repository to be looked at again next pass.
    """
    result = RepoPass(repo.full_name)
    # Fingerprint before reading the refs: a ref written after it changes the next one.
    fingerprint = refstate.fingerprint(path)
    if fingerprint == repo.fingerprint and not force:
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
    now = now or utcnow()
    cutoff = now - dt.timedelta(seconds=intent_grace)
    with transaction(sessions) as session:
        missing = _missing(session, repo.id, on_disk)
        intents = _pending_intents(session, repo.id)
    explained: dict[tuple[str, str], tuple[int, dt.datetime]] = {}
    for push_id, created_at, ref, new in intents:
        explained.setdefault((ref, new), (push_id, created_at))
    young = {push_id for push_id, created_at, _r, _n in intents if created_at > cutoff}
    for ref, value in sorted(missing.items()):
        intent = explained.get((ref, value))
        if intent is not None and intent[0] in young:
            result.unsettled = True  # its hook may still be recording it
            continue
        if intent is None and not force and refstate.written_within(path, ref, FRESH_REF_SECONDS):
            # The server's own writers (a Repour adjust tag, written a moment before its
            # Archive row) may be mid-way: look again next pass. `check` does not wait.
            result.unsettled = True
            continue
        result.differences.append(Difference(repo.full_name, ref, value, intent[0] if intent else None))
    settle = {push_id for push_id, created_at, _r, _n in intents if push_id not in young}
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


def _missing(session: Session, repo_id: int, on_disk: dict[str, str]) -> dict[str, str]:
    """The (ref → value) pairs on disk that no done or recovered push recorded."""
    pairs = list(on_disk.items())
    found: set[tuple[str, str]] = set()
    for i in range(0, len(pairs), _PAIR_CHUNK):
        chunk = pairs[i:i + _PAIR_CHUNK]
        found.update((ref, new) for ref, new in session.execute(
            select(models.RefUpdate.ref, models.RefUpdate.new)
            .join(models.Push, models.Push.id == models.RefUpdate.push_id)
            .where(models.Push.repo_id == repo_id, models.Push.state.in_(models.LEDGER_STATES),
                   tuple_(models.RefUpdate.ref, models.RefUpdate.new).in_(chunk))).all())
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


def _pending_intents(session: Session, repo_id: int) -> list[tuple[int, dt.datetime, str, str]]:
    rows = session.execute(
        select(models.Push.id, models.Push.created_at, models.RefUpdate.ref, models.RefUpdate.new)
        .join(models.RefUpdate, models.RefUpdate.push_id == models.Push.id)
        .where(models.Push.repo_id == repo_id, models.Push.state == models.PUSH_PENDING)
        .order_by(models.Push.id))
    return [tuple(row) for row in rows]  # type: ignore[misc]


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
        pipeline = complete_push(session, push_id, moved,
                                 state=models.PUSH_RECOVERED)
        if moved and pipeline is not None:
            result.recovered_pushes.append(push_id)
            log.warning("%s: push %s was never completed; recovered %d ref(s) with pipeline %s",
                        repo.full_name, push_id, len(moved), pipeline.id)
        elif not moved:
            result.failed_intents.append(push_id)
    if orphans:
        latest = _latest_values(session, repo.id, [d.ref for d in orphans])
        push = models.Push(repo_id=repo.id, protocol=RECOVERED_PROTOCOL, state=models.PUSH_RECOVERED,
                           finished_at=utcnow())
        push.ref_updates = [models.RefUpdate(ref=d.ref, old=latest.get(d.ref, refs.ZERO_OID), new=d.value)
                            for d in orphans]
        session.add(push)
        session.flush()
        pipeline = enqueue_push_pipeline(session, push)
        notify_push(session, push, pipeline)
        result.recovered_pushes.append(push.id)
        log.warning("%s: %d ref(s) on disk were never recorded (%s); recorded as push %s",
                    repo.full_name, len(orphans), ", ".join(d.ref for d in orphans[:5]), push.id)


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
                  stale_lock_seconds: float | None = None) -> Summary:
    """One pass over every repository under ``repos_root`` that the database knows."""
    summary = Summary()
    with transaction(sessions) as session:
        repos = list_repos(session)
    clean: list[tuple[RepoRef, str]] = []
    for repo in repos:
        summary.repos += 1
        # Names come from the database, validated when the repository was created.
        path = repos_root / repo.tenant / f"{repo.name}.git"
        try:
            result = reconcile_repo(sessions, repo, path, intent_grace=intent_grace,
                                    stale_lock_seconds=stale_lock_seconds)
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
                  intent_grace: float) -> RepoPass | None:
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
    result = reconcile_repo(sessions, repo, repos_root / repo.tenant / f"{repo.name}.git",
                            intent_grace=intent_grace)
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
                            stale_lock_seconds=runtime.config.quarantine_stale_seconds)
    if summary.recovered_pushes or summary.failed_intents or summary.errors:
        log.warning("%s reconciler: %d repositories, %d recovered push(es), %d intent(s) that "
                    "moved nothing, %d error(s)", who, summary.repos, summary.recovered_pushes,
                    summary.failed_intents, summary.errors)
    return summary


# --- what a recorded push queues (in the push's own transaction) -----------------------------

def live_updates(push: models.Push) -> list[models.RefUpdate]:
    """The updates of ``push`` that created or moved a ref: what its pipeline archives."""
    return [u for u in push.ref_updates if not refs.is_zero(u.new)]


def enqueue_push_pipeline(session: Session, push: models.Push) -> models.Pipeline | None:
    """Queue the pipeline of ``push``: one pipeline, archiving every updated ref. The caller
    owns the session and commits: the push's final state, the pipeline and its job become
    visible together or not at all."""
    live = live_updates(push)
    if not live:
        return None
    first = live[0]
    pipeline = models.Pipeline(repo_id=push.repo_id, push_id=push.id, kind="push",
                               ref=first.ref, commit=first.new,
                               request=json.dumps({"push_id": push.id}))
    session.add(pipeline)
    session.flush()
    jobs.enqueue(session, "pipeline", {"pipeline_id": pipeline.id}, pipeline_id=pipeline.id)
    return pipeline


def notify_push(session: Session, push: models.Push, pipeline: models.Pipeline | None) -> None:
    """Queue the repository's ``push`` webhooks in the push's own transaction. The payload
    names the rows; the webhook body is rendered from them at the first delivery attempt."""
    payload: dict[str, Any] = {"push_id": push.id}
    if pipeline is not None:
        payload["pipeline_id"] = pipeline.id
    outbox.enqueue_event(session, push.repo_id, outbox.EVENT_PUSH, payload)
