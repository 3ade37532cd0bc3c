"""``gitserver check``'s audit of the whole ledger against the reflogs (docs/ledger.md).

The reconciler compares the ledger with the values refs hold *now*; a value a ref held and
moved on from is invisible to it. Every ref keeps a reflog (gitserver.git.reflog), so the
audit compares both histories:

* every value a ref's reflog took is recorded by a done or recovered push (or is explained by
  a pending intent the reconciler is about to settle, or is a Repour adjust tag, which
  answers to the Archive table);
* every value a push recorded since the ref's reflog began (a ref created before its reflog
  was enabled has none, or a shorter one) is in that reflog; a ref the ledger says was set,
  not deleted, with neither a reflog nor a value on disk never landed at all. Pushes the
  reconciler recorded from disk (no pusher) are left out: a ref planted by hand has no reflog
  entry.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from pathlib import Path

from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from gitserver.db import models
from gitserver.git import reflog, refs
from gitserver.git.landed import CLOCK_SLACK_SECONDS
from gitserver.push.reconcile import RECOVERED_PROTOCOL, Difference, RepoRef

log = logging.getLogger(__name__)


# One ref update of the ledger, with the facts the audit needs: the columns of _ledger's query
# (push_id, ref, new, protocol, created_at).
Recorded = Row[int, str, str, str, dt.datetime]


@dataclasses.dataclass
class Audit:
    unrecorded: list[Difference] = dataclasses.field(default_factory=list)  # repairable
    never_landed: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (ref, what)


def audit(session: Session, repo: RepoRef, path: Path, on_disk: dict[str, str]) -> Audit:
    """Compare the ledger of ``repo`` with its reflogs. ``on_disk`` (ref → value) are the
    ledger refs now; a value on disk is the reconciler's to report, not repeated here."""
    ledger = _ledger(session, repo.id)
    result = Audit()
    logs = {ref: reflog.read(path, ref) for ref in reflog.logged_refs(path) if not refs.is_reserved(ref)}
    known = {(r.ref, r.new) for r in ledger} | _pending(session, repo.id)
    adjust_tags = {refs.TAGS + t for t in session.scalars(
        select(models.Archive.tag).where(models.Archive.repo_id == repo.id))}
    for ref, entries in sorted(logs.items()):
        seen = set()
        for entry in entries or []:
            pair = (ref, entry.new)
            if refs.is_zero(entry.new) or pair in known or pair in seen or ref in adjust_tags:
                continue
            seen.add(pair)
            if on_disk.get(ref) != entry.new:
                result.unrecorded.append(Difference(repo.full_name, ref, entry.new, on_disk=False))
    last = {row.ref: row for row in ledger}
    for row in ledger:
        what = _landing_problem(row, logs.get(row.ref), on_disk, last[row.ref])
        if what:
            result.never_landed.append((row.ref, what))
    return result


def _landing_problem(row: Recorded, entries: list[reflog.Entry] | None, on_disk: dict[str, str],
                     last: Recorded) -> str:
    """Why ``row`` cannot have landed, or ""."""
    if row.protocol == RECOVERED_PROTOCOL or refs.is_zero(row.new) or refs.is_reserved(row.ref):
        return ""
    if entries:
        began = entries[0].time + CLOCK_SLACK_SECONDS
        if _epoch(row.created_at) < began or any(e.new == row.new for e in entries):
            return ""
        return f"{row.new} recorded by push {row.push_id} never appeared in the ref's reflog"
    if row.ref in on_disk:
        return ""  # the ref predates its reflog
    if last is not row:
        return ""  # only the ref's newest record says what it should hold
    return (f"{row.new} recorded by push {row.push_id} never landed: the ref is not on disk, "
            "was never deleted, and has no reflog")


def _epoch(when: dt.datetime) -> float:
    return (when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)).timestamp()


def _ledger(session: Session, repo_id: int) -> list[Recorded]:
    rows = session.execute(
        select(models.Push.id.label("push_id"), models.RefUpdate.ref, models.RefUpdate.new,
               models.Push.protocol, models.Push.created_at)
        .join(models.RefUpdate, models.RefUpdate.push_id == models.Push.id)
        .where(models.Push.repo_id == repo_id, models.Push.state.in_(models.LEDGER_STATES))
        .order_by(models.RefUpdate.id))
    return list(rows)


def _pending(session: Session, repo_id: int) -> set[tuple[str, str]]:
    """(ref, new) of pending intents: the reconciler settles them (it reports old ones)."""
    rows = session.execute(
        select(models.RefUpdate.ref, models.RefUpdate.new)
        .join(models.Push, models.Push.id == models.RefUpdate.push_id)
        .where(models.Push.repo_id == repo_id, models.Push.state == models.PUSH_PENDING))
    return {(ref, new) for ref, new in rows}
