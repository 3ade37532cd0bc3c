"""The push ledger: every value a ref holds on disk was recorded as a RefUpdate of a push that
has a pipeline (docs/ledger.md).

The proc-receive hook asks :class:`HookService` to record the push's **intent** (a ``pending``
Push with its RefUpdates) before it moves any ref, for the signed **log** entries it moves
each ref with (gitserver.push.refmove), and to mark it **done** afterwards, which
drops the refs that did not move and queues the pipeline and the webhooks in the same
transaction. Both steps are compare-and-set on the push's state, so a retry or a race with
the reconciler (gitserver.push.reconcile, which repairs what a crash left between the
steps) records a push once.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from gitserver.db import models
from gitserver.db.base import utcnow
from gitserver.db.session import rowcount, transaction
from gitserver.git import protect, push_options, refs
from gitserver.net.urls import pipeline_url
from gitserver.pipelines import jobs, outbox
from gitserver.provenance.entry import Entry
from gitserver.provenance.pushlog import PushLog, entry_of, push_entries
from gitserver.provenance.reflog import LogError
from gitserver.push import admission, limits, messages, refjudge
from gitserver.push.hookenv import PushContext

__all__ = ["PushContext"]  # the audit facts live in hookenv, which the hooks import

log = logging.getLogger(__name__)

MAX_HOOK_LINE = 64 * 1024 * 1024


# --- recording a push --------------------------------------------------------------------------

def record_intent(session: Session, ctx: PushContext, updates: list[tuple[str, str, str]],
                  options: Sequence[str] = (), rule_set: str | None = None,
                  signatures: Mapping[str, list[dict[str, str]]] | None = None) -> models.Push:
    """A ``pending`` push with its ref updates (old, new, ref) and push options: who pushes
    what, before it moves. ``rule_set``: the id of the rule set that judged the updates
    (gitserver.push.refjudge), recorded on each; ``signatures``: by ref, the signature result
    of each new commit, for the refs a rule required signed."""
    push = models.Push(repo_id=ctx.repo_id, user_id=ctx.user_id, public_key_id=ctx.key_id,
                       key_fingerprint=ctx.key_fingerprint, protocol=ctx.protocol,
                       client_address=ctx.client_address, state=models.PUSH_PENDING,
                       cert_ca_fingerprint=ctx.cert_ca_fingerprint, cert_key_id=ctx.cert_key_id,
                       cert_serial=ctx.cert_serial or None,
                       push_options=json.dumps(list(options)))
    found = signatures or {}
    push.ref_updates = [models.RefUpdate(ref=ref, old=old, new=new, rules=rule_set,
                                         signatures=json.dumps(found[ref]) if ref in found else None)
                        for old, new, ref in updates]
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
    (the whole-push refusals of gitserver.push.admission, for a pusher who ``can_write`` or
    not, then the limits) and ``Limits`` (the limits alone: hooks of an older release), each
    → ``Admitted`` or ``Refused``, which decide and record nothing else (pre-receive runs
    before git's own checks). Failures answer ``Failed`` with a message safe to show the
    pusher. With ``push_log`` and ``repo_path``, ``Log`` → ``LogReply`` signs the entries the
    hook moves the refs with (it holds the log's lock meanwhile), and a push is done together
    with their attestations (gitserver.provenance.pushlog); without, ``LogReply`` has no
    entries (the reconciler logs the refs)."""

    def __init__(self, sessions: sessionmaker[Session], ctx: PushContext, http_base_url: str,
                 push_check: limits.QuarantineCheck | None = None, can_write: bool = False,
                 push_log: PushLog | None = None, repo_path: Path | None = None) -> None:
        self.sessions = sessions
        self.push_log = push_log
        # Where the rules read the pushed commits (gitserver.push.refjudge).
        self.repo_path = repo_path or (push_check.repo_dir if push_check is not None else None)
        self.ctx = ctx
        self.http_base_url = http_base_url
        self.push_check = push_check
        self.can_write = can_write
        self.issued: set[int] = set()
        self.pipeline_ids: list[int] = []
        # The log entries of each intent this session recorded, by ref (for its Log request).
        self.entries: dict[int, dict[str, Entry]] = {}

    def handle(self, request: object, trust_push_ids: bool = False) -> dict[str, object]:
        """One request as read from the socket (a JSON object) → its reply's JSON object."""
        try:
            typed = messages.decode_request(request)
        except messages.ProtocolError as exc:
            return messages.to_wire(messages.Failed(str(exc)))
        return messages.to_wire(self.answer(typed, trust_push_ids))

    def answer(self, request: messages.Request, trust_push_ids: bool = False) -> messages.Reply:
        """The reply to ``request``. ``trust_push_ids``: a ``Done`` may name a push another
        process started (the hook's own database fallback, gitserver.push.hookdb)."""
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
            return self._intent(request)
        self._check_issued(request.push_id, trust_push_ids)
        if isinstance(request, messages.Log):
            return self._log(request)
        return self._done(request)

    def _check_issued(self, push_id: int, trust_push_ids: bool) -> None:
        if not (trust_push_ids or push_id in self.issued):
            raise ValueError("a request for a push this session did not start")

    def _intent(self, request: messages.Intent) -> messages.IntentReply:
        """Judge the updates by the repository's rules, then record the admitted ones: one
        transaction, so the rule set recorded is the one that judged."""
        options = parse_push_options(list(request.push_options))
        with transaction(self.sessions) as session:
            judged = refjudge.judge_updates(session, self.ctx.repo_id, self.ctx.user_id, self.ctx.key_id,
                                            self.repo_path or Path("."), request.updates)
            admitted = [u for u in request.updates if u[2] not in judged.refused]
            push = record_intent(session, self.ctx, admitted, options, judged.rule_set,
                                 judged.signatures) if admitted else None
            if push is not None and self.push_log is not None:
                self.entries[push.id] = {u.ref: entry_of(session, push, u) for u in push.ref_updates}
        push_id = push.id if push is not None else 0
        if push_id:
            self.issued.add(push_id)
        return messages.IntentReply(push_id, tuple(judged.refused.items()))

    def _log(self, request: messages.Log) -> messages.LogReply | messages.Failed:
        """Sign the entries of ``request.refs`` onto the log's tip; the hook holds the log's
        lock and moves the log's ref with the refs (gitserver.push.refmove)."""
        if self.push_log is None or self.repo_path is None:
            return messages.LogReply("")
        known = self.entries.get(request.push_id, {})
        try:
            if all(ref in known for ref in request.refs):
                entries = [known[ref] for ref in request.refs]
            else:  # another process recorded the intent (this is the hook's own fallback)
                with transaction(self.sessions) as session:
                    entries = push_entries(session, request.push_id, list(request.refs))
            chained = self.push_log.chain(self.repo_path, entries)
        except LogError as exc:
            return messages.Failed(str(exc))
        return messages.LogReply(chained.base or "", tuple((w.entry.ref, w.commit) for w in chained.written))

    def _done(self, request: messages.Done) -> messages.DoneReply:
        self.entries.pop(request.push_id, None)
        with transaction(self.sessions) as session:
            pipeline = complete_push(session, request.push_id, request.moved)
            pipeline_id = pipeline.id if pipeline is not None else None
            if self.push_log is not None and self.repo_path is not None:
                # In the push's transaction: attestations that cannot be written leave the
                # push pending; the reconciler settles it and attests its logged entries.
                session.flush()
                logged = None if request.logged is None else list(request.logged)
                self.push_log.record(session, self.repo_path, request.push_id, logged)
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


# --- what a recorded push queues (in the push's own transaction) -----------------------------

def live_updates(push: models.Push) -> list[models.RefUpdate]:
    """The updates of ``push`` that created or moved a ref: what its pipeline archives."""
    return [u for u in push.ref_updates if not refs.is_zero(u.new)]


def enqueue_push_pipeline(session: Session, push: models.Push) -> models.Pipeline | None:
    """Queue the pipeline of ``push``: one pipeline, archiving every updated ref. The caller
    owns the session and commits: the push's final state, the pipeline and its job become
    visible together or not at all. A push that has its pipeline already keeps it (one per
    push: ``pipelines.push_id`` is unique)."""
    live = live_updates(push)
    if not live:
        return None
    existing = session.scalar(select(models.Pipeline).where(models.Pipeline.push_id == push.id))
    if existing is not None:
        return existing
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
