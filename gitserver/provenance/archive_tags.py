"""The server's own refs: signed archive tags, and every ref the server creates (archive tags
and branches, Repour's adjust and sync tags and their branches), each created in one
transaction with its entry in the reference log, as a push's refs are (docs/provenance.md).

An archive tag (``repour-<commit>``, and Repour's adjust tags) is an annotated tag whose
tagger date is the moment it was made, SSH-signed by the server's current key, so ``git
verify-tag`` with the published allowed-signers file accepts it: git hands ssh-keygen the
tagger date as the time to check the key's window at. Its name still depends on the tree
alone; the tag object, being dated and signed, differs between repositories, but within one
repository it is written once and never replaced (tags never move).

:func:`create_refs` holds the log's lock (gitserver.provenance.loglock) while it looks for the
refs, signs their entries onto the log's tip and runs one ``git update-ref --stdin`` with the
refs (created: compare-and-swap on none) and the log's ref (gitserver.provenance.logmove).
Every writer of these refs holds that lock, so a ref found missing under it is still missing
when the transaction runs, and of two workers archiving the same tree at once the second finds
the first's tag and keeps it. When the log cannot be written (the key is unusable, git cannot
lock the log), no ref moves and :class:`RefsNotWritten` says why.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from pathlib import Path

import pygit2

from gitserver.config import Config
from gitserver.git import archive as git_archive
from gitserver.git import protect, refs
from gitserver.provenance import gitsign, keys, loglock, logmove, reflog
from gitserver.provenance import signer as signing
from gitserver.provenance.entry import Entry

log = logging.getLogger(__name__)

# The reflog message of the server's own ref writes (a push's say "push").
REFLOG_MESSAGE = "gitserver"
KEY_UNUSABLE = reflog.KEY_UNUSABLE
# Why nothing was made when the signature of the tag itself failed.
NOT_SIGNED = "gitserver could not sign the tag ({why}); nothing was changed"
# A ref created outside the log's lock between our look and our transaction: look again, once.
ATTEMPTS = 2


class RefsNotWritten(Exception):
    """No ref was created; the message, one line safe to show (a job's log, a Repour caller),
    says why. The details are in the server's log."""


def load_key(cfg: Config) -> signing.Signer:
    """The signer of the server's own refs (its key file, or its ssh-agent); RefsNotWritten
    when it cannot be used."""
    try:
        return signing.from_config(cfg)
    except keys.SigningKeyError as exc:
        log.error("cannot sign the server's own refs: %s", exc)
        raise RefsNotWritten(logmove.LOG_FAILED.format(why=KEY_UNUSABLE)) from exc


def tag_writer(key: signing.Signer, name: str = git_archive.ARCHIVE_NAME,
               email: str = git_archive.ARCHIVE_EMAIL) -> git_archive.TagWriter:
    """A :data:`gitserver.git.archive.TagWriter` that signs with ``key``."""
    def write(repo: pygit2.Repository, commit_id: str, tag: str, when: int, message: str) -> str:
        tagger = gitsign.Ident(name, email, dt.datetime.fromtimestamp(when, dt.UTC))
        try:
            return gitsign.write_signed_tag(repo, key, commit_id, tag, tagger, message)
        except keys.SigningKeyError as exc:  # an ssh-agent that is gone or refuses
            log.error("%s: signing tag %s failed: %s", repo.path, tag, exc)
            raise RefsNotWritten(NOT_SIGNED.format(why="signing it failed")) from exc
    return write


def ref_creator(path: Path, key: signing.Signer) -> git_archive.RefCreator:
    """A :data:`gitserver.git.archive.RefCreator` for the repository at ``path``."""
    return lambda wanted: create_refs(path, key, wanted)


def create_refs(path: Path, key: signing.Signer, wanted: Sequence[tuple[str, str]]) -> list[str]:
    """Create those of the refs ``wanted`` ((full name, value) pairs) that do not exist yet,
    together, in one transaction with their log entries; the names created (none when all
    exist: a ref that exists is left as it is, a tag never moves). RefsNotWritten when they
    could not be (and then none was); :class:`gitserver.git.archive.RefLocked` when a live
    writer holds one's lock (retry later)."""
    for _attempt in range(ATTEMPTS):
        with loglock.locked(path):
            missing = _missing(path, wanted)
            if not missing:
                return []
            error = _create(path, key, missing)
            if error is None:
                return [ref for ref, _value in missing]
            if _missing(path, missing) != missing:
                continue  # one appeared meanwhile (a writer that does not take the lock)
        raise _why(path, missing, error)
    raise RefsNotWritten(logmove.LOG_FAILED.format(why="the refs kept changing"))


def _missing(path: Path, wanted: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    repo = pygit2.Repository(str(path))
    return [(ref, value) for ref, value in wanted if repo.references.get(ref) is None]


def _create(path: Path, key: signing.Signer, missing: list[tuple[str, str]]) -> str | None:
    """Sign the entries of ``missing`` onto the log's tip and run the transaction (under the
    log's lock); None when it was applied, else git's error line."""
    for ref, _value in missing:
        loglock.clear_stale_ref_lock(path, ref)
    try:
        chained = reflog.signed_chain(path, lambda: key, [Entry(ref, refs.ZERO_OID, value) for ref, value in missing])
    except reflog.LogError as exc:
        raise RefsNotWritten(logmove.LOG_FAILED.format(why=exc)) from exc
    last = chained.written[-1].commit if chained.written else None
    commands = [protect.RefCommand(refs.ZERO_OID, value, ref) for ref, value in missing]
    return logmove.git_transaction(logmove.script(commands, chained.base, last), REFLOG_MESSAGE, path)


def _why(path: Path, missing: list[tuple[str, str]], error: str) -> Exception:
    """What a failed transaction of ``missing`` means for the caller."""
    log.error("%s: creating %s failed: %s", path, ", ".join(ref for ref, _value in missing), error)
    about_log = logmove.log_failure(error)
    if about_log is not None:
        return RefsNotWritten(about_log)
    for ref, _value in missing:
        lock = path / f"{ref}.lock"
        if lock.exists():  # a live writer's (a dead one's was removed under the log's lock)
            return git_archive.RefLocked(f"{ref} is locked by another writer ({lock.name})")
    return RefsNotWritten(logmove.LOG_FAILED.format(why=logmove.without_paths(error)))
