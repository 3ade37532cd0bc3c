"""The push ledger: every value a ref holds on disk was recorded as a RefUpdate of a push that
has a pipeline (docs/ledger.md).

The proc-receive hook asks :class:`HookService` to record the push's **intent** (a ``pending``
Push with its RefUpdates) before it moves any ref, and to mark it **done** afterwards, which
drops the refs that did not move and queues the pipeline and the webhooks in the same
transaction. Both steps are compare-and-set on the push's state, so a retry or a race with
the reconciler (gitserver.pipelines.reconcile, which repairs what a crash left between the
steps) records a push once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import socket
import subprocess
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from gitserver.db import models
from gitserver.db.base import utcnow
from gitserver.db.session import rowcount, transaction
from gitserver.git import admission, limits, protect, push_options, refs
from gitserver.pipelines import jobs, outbox
from gitserver.urls import pipeline_url

log = logging.getLogger(__name__)

MAX_HOOK_LINE = 64 * 1024 * 1024


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
    """Answers the hooks of one git process: the proc-receive hook
    (gitserver.hookrun.SocketLedger),
    ``{"op": "intent", "updates": [[old, new, ref], ...]}`` → ``{"push_id": n}`` and
    ``{"op": "done", "push_id": n, "moved": [ref, ...]}`` → ``{"messages": [...]}``;
    and, when given ``push_check``, the pre-receive hook (gitserver/hooks/pre-receive),
    ``{"op": "pre-receive", "quarantine": NAME, "updates": [[old, new, ref], ...]}`` (the
    whole-push refusals of gitserver.git.admission, for a pusher who ``can_write`` or not,
    then the limits) and the limits alone, ``{"op": "limits", "quarantine": NAME}`` (hooks of
    an older release), each → ``{"ok": true}`` or ``{"refused": "..."}`` (lines joined by a
    newline), which decide and record nothing else (pre-receive runs before git's own checks).
    Failures answer ``{"error": "..."}`` with a message safe to show the pusher."""

    def __init__(self, sessions: sessionmaker[Session], ctx: PushContext, http_base_url: str,
                 push_check: limits.QuarantineCheck | None = None, can_write: bool = False) -> None:
        self.sessions = sessions
        self.ctx = ctx
        self.http_base_url = http_base_url
        self.push_check = push_check
        self.can_write = can_write
        self.issued: set[int] = set()
        self.pipeline_ids: list[int] = []

    def handle(self, request: Any, trust_push_ids: bool = False) -> dict[str, object]:
        try:
            return self._handle(request, trust_push_ids)
        except ValueError as exc:
            return {"error": str(exc)[:200]}
        except Exception as exc:  # one line for the pusher; the log has the rest
            log.exception("recording a push to repository %s failed", self.ctx.repo_id)
            return {"error": f"database error ({type(exc).__name__})"}

    def _handle(self, request: Any, trust_push_ids: bool) -> dict[str, object]:
        op = request.get("op") if isinstance(request, dict) else None
        if op == "limits":
            return self._limits(request.get("quarantine"))
        if op == "pre-receive":
            commands = [protect.RefCommand(*row) for row in parse_updates(request.get("updates"))]
            refused = admission.declined(commands, self.can_write)
            return {"refused": "\n".join(refused)} if refused else self._limits(request.get("quarantine"))
        if op == "intent":
            updates = parse_updates(request.get("updates"))
            options = parse_push_options(request.get("push_options", []))
            with transaction(self.sessions) as session:
                push_id = record_intent(session, self.ctx, updates, options).id
            self.issued.add(push_id)
            return {"push_id": push_id}
        if op == "done":
            push_id, moved = request.get("push_id"), request.get("moved")
            if not isinstance(push_id, int) or not (trust_push_ids or push_id in self.issued):
                raise ValueError("done for a push this session did not start")
            if not (isinstance(moved, list) and all(isinstance(r, str) for r in moved)):
                raise ValueError("malformed list of moved refs")
            with transaction(self.sessions) as session:
                pipeline = complete_push(session, push_id, moved)
                pipeline_id = pipeline.id if pipeline is not None else None
            if pipeline_id is None:
                return {"messages": []}
            self.pipeline_ids.append(pipeline_id)
            log.info("push %s to repository %s: %d ref(s), pipeline %s", push_id,
                     self.ctx.repo_id, len(moved), pipeline_id)
            return {"messages": [f"pipeline {pipeline_id} queued: "
                                 f"{pipeline_url(self.http_base_url, pipeline_id)}"]}
        raise ValueError("unknown hook request")

    def _limits(self, name: object) -> dict[str, object]:
        """The pre-receive hook's question: is the push in quarantine ``name`` within the
        limits? Only measures (the hook runs the Python check itself on an error)."""
        if self.push_check is None:
            raise ValueError("push limits are not checked by this process")
        quarantine = self.push_check.quarantine(name)
        try:
            over = self.push_check.check(quarantine, outside_git=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            raise ValueError(f"could not measure the push ({type(exc).__name__})") from exc
        return {"ok": True} if over is None else {"refused": over}


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
    """``[[old, new, ref], ...]`` from the hook; ValueError if malformed."""
    if not isinstance(rows, list) or not rows:
        raise ValueError("malformed ref updates in hook message")
    updates = []
    for row in rows:
        if not (isinstance(row, list) and len(row) == 3 and all(isinstance(x, str) for x in row)):
            raise ValueError("malformed ref update in hook message")
        if not (refs.is_oid(row[0]) and refs.is_oid(row[1])) or refs.ref_format_problem(row[2]):
            raise ValueError("malformed ref update in hook message")
        updates.append((row[0], row[1], row[2]))
    return updates


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
                stream.write(json.dumps(reply).encode() + b"\n")
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
