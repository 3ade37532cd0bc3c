"""The ledger's side of the reference log: entries for recorded pushes, and catching the log
up with the refs on disk.

:meth:`PushLog.chain` signs a push's entries while its hook holds the log's lock, before any
of its refs moves; the hook moves each ref and the log together (gitserver.push.refmove), so a
log that cannot be written leaves the ref where it was. :meth:`PushLog.record` runs inside the
transaction that marks the push done: it attests the entries the hook logged (and logs, for a
hook of an older release that moved the refs alone). :meth:`PushLog.catch_up` is the reconciler's:
every ref whose value on disk is not the log's latest gets an entry, described from the ledger
when a push recorded that value (else as the server's own ref, or as recovered with no
pusher). That also covers, once, every ref of a repository that predates the log.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pygit2
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gitserver.config import Config
from gitserver.db import models
from gitserver.db.session import transaction
from gitserver.git import refs, refstate
from gitserver.net.urls import http_clone_url
from gitserver.provenance import attest, orgprops, reflog
from gitserver.provenance import signer as signing
from gitserver.provenance.entry import PROTOCOL_RECOVERED, PROTOCOL_SERVER, Entry, EntryError, is_logged, parse
from gitserver.provenance.reflog import LogError

log = logging.getLogger(__name__)


def rules_of(update: models.RefUpdate) -> str | None:
    """The rule-set id of the per-ref rules that judged ``update`` (an entry's ``rules``): the
    ``ref_updates.rules`` column gitserver.push.refjudge writes in the intent's transaction;
    None where no rule list was in force, for the server's own refs and recovered ones."""
    return update.rules


def entry_of(session: Session, push: models.Push, update: models.RefUpdate) -> Entry:
    user = session.get(models.User, push.user_id) if push.user_id is not None else None
    return Entry(ref=update.ref, old=update.old, new=update.new, push_id=push.id,
                 pusher=user.name if user is not None else None,
                 key_fingerprint=push.key_fingerprint or None, protocol=push.protocol,
                 rules=rules_of(update))


class PushLog:
    """Writes one server's reference logs with its current signing key (loaded when first
    needed, so a process that never logs never reads it)."""

    def __init__(self, cfg: Config, key: signing.Signer | None = None) -> None:
        self.cfg = cfg
        self._key = key

    def key(self) -> signing.Signer:
        if self._key is None:
            self._key = signing.from_config(self.cfg)
        return self._key

    def chain(self, path: Path, entries: list[Entry]) -> reflog.Chained:
        """Sign a push's ``entries`` onto the log's tip (gitserver.provenance.reflog.chain): the
        caller holds the log's lock and moves the log's ref with the pushed refs. LogError
        names, for the pusher, what failed."""
        return reflog.signed_chain(path, self.key, entries)

    def record(self, session: Session, path: Path, push_id: int,
               logged: list[tuple[str, str]] | None = None) -> list[reflog.Logged]:
        """Attest the ref updates of the recorded push ``push_id`` (those that stayed)
        (gitserver.provenance.attest): ``logged`` are the (ref, log commit) pairs its hook moved
        with the refs. Without them (a hook of an older release moved the refs alone), log the
        updates first."""
        push = session.get(models.Push, push_id)
        if push is None or push.state not in models.LEDGER_STATES:
            return []
        if logged is None:
            entries = reflog.append(path, self.key(), [entry_of(session, push, u) for u in push.ref_updates])
        else:
            entries = own_entries(path, push_id, logged)
        repo = session.get(models.Repository, push.repo_id)
        if entries and repo is not None:
            uri = http_clone_url(self.cfg.http_base_url, repo.tenant.name, repo.name)
            attest.attest(path, self.key(), entries, uri, self.cfg.http_base_url,
                          orgprops.lookup(session, [item.entry for item in entries]))
        return entries

    def catch_up(self, sessions: sessionmaker[Session], path: Path, repo_id: int) -> list[reflog.Logged]:
        """Log every ref whose value on disk the log does not hold as its latest. The refs are
        read before the ledger, in a transaction of its own, so a push caught between
        its ref move and its done step shows as a pending intent: such a ref is left to that
        push's own done step (or to the reconciler's next pass)."""
        # The log before the refs: a writer creates its ref before logging it, so a ref the
        # log holds and the disk then lacks was deleted, not merely read mid-write.
        logged = reflog.logged_values(path)
        on_disk = {ref: oid for ref, oid in refstate.read_refs(path).items() if is_logged(ref)}
        changed = {ref: oid for ref, oid in on_disk.items() if logged.get(ref) != oid}
        changed.update({ref: refs.ZERO_OID for ref, oid in logged.items()
                        if ref not in on_disk and not refs.is_zero(oid)})
        if not changed:
            self._mend_attestations(sessions, path, repo_id, attest.unattested(path))
            return []
        with transaction(sessions) as session:
            described = [self._describe(session, repo_id, ref, oid) for ref, oid in sorted(changed.items())]
        entries = [e for e in described if e is not None]
        written = reflog.append(path, self.key(), entries) if entries else []
        if written:
            log.warning("%s: the reference log caught up with %d ref(s): %s", path, len(written),
                        ", ".join(e.entry.ref for e in written[:5]))
        self._attest_pushed(sessions, path, repo_id, written)
        self._mend_attestations(sessions, path, repo_id, attest.unattested(path))
        return written

    def _mend_attestations(self, sessions: sessionmaker[Session], path: Path, repo_id: int,
                           missing: list[reflog.Logged]) -> None:
        if missing:
            log.warning("%s: %d log entries had no attestation (their writer died); attesting them",
                        path, len(missing))
            self._attest_pushed(sessions, path, repo_id, missing)

    def _attest_pushed(self, sessions: sessionmaker[Session], path: Path, repo_id: int,
                       written: list[reflog.Logged]) -> None:
        """Attest the caught-up entries of accepted pushes (a push whose done step committed but
        whose process died before it logged): they get what :meth:`record` would have given."""
        pushed = [w for w in written if w.entry.push_id is not None
                  and w.entry.protocol not in (PROTOCOL_RECOVERED, PROTOCOL_SERVER)]
        if not pushed:
            return
        with transaction(sessions) as session:
            repo = session.get(models.Repository, repo_id)
            uri = http_clone_url(self.cfg.http_base_url, repo.tenant.name, repo.name) if repo else None
            properties = orgprops.lookup(session, [item.entry for item in pushed])
        if uri is not None:
            attest.attest(path, self.key(), pushed, uri, self.cfg.http_base_url, properties)

    def _describe(self, session: Session, repo_id: int, ref: str, value: str) -> Entry | None:
        """The entry for ``ref`` at ``value``, from the push that recorded it; None while a
        pending intent claims it."""
        found = session.execute(
            select(models.Push, models.RefUpdate)
            .join(models.RefUpdate, models.RefUpdate.push_id == models.Push.id)
            .where(models.Push.repo_id == repo_id, models.RefUpdate.ref == ref, models.RefUpdate.new == value)
            .order_by(models.RefUpdate.id.desc())).all()
        recorded = [(p, u) for p, u in found if p.state in models.LEDGER_STATES]
        if recorded:
            return entry_of(session, *recorded[0])
        if any(p.state == models.PUSH_PENDING for p, _u in found):
            return None
        if refs.is_reserved(ref) or ref.startswith(refs.TAGS):
            # Archive refs, and Repour's adjust tags under a version name: the server's own.
            return Entry(ref=ref, old=refs.ZERO_OID, new=value, protocol=PROTOCOL_SERVER)
        return Entry(ref=ref, old=refs.ZERO_OID, new=value, protocol=PROTOCOL_RECOVERED)


def own_entries(path: Path, push_id: int, logged: list[tuple[str, str]]) -> list[reflog.Logged]:
    """The log commits ``logged`` ((ref, commit) pairs, from the hook) that are entries of push
    ``push_id`` for that ref: a pair that is not (the hook is another process) is left out,
    and the reconciler's catch-up attests what is left unattested."""
    repo = pygit2.Repository(str(path))
    found: list[reflog.Logged] = []
    for ref, commit in logged:
        try:
            obj = repo[commit]
            entry = parse(obj.message) if isinstance(obj, pygit2.Commit) else None
        except (KeyError, ValueError, EntryError):
            entry = None
        if entry is not None and entry.push_id == push_id and entry.ref == ref:
            found.append(reflog.Logged(commit, entry))
        else:
            log.warning("%s: push %s named %s as its log entry for %s, which it is not", path, push_id, commit, ref)
    return found


def push_entries(session: Session, push_id: int, ref_names: list[str]) -> list[Entry]:
    """The entries of the pending push ``push_id`` for ``ref_names``, in that order. LogError
    when the push is not pending (the reconciler settled it) or did not record one of them."""
    push = session.get(models.Push, push_id)
    if push is None or push.state != models.PUSH_PENDING:
        raise LogError("the push is no longer pending")
    updates = {u.ref: u for u in push.ref_updates}
    if any(ref not in updates for ref in ref_names):
        raise LogError("a ref the push did not record")
    return [entry_of(session, push, updates[ref]) for ref in ref_names]
