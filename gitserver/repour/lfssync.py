"""Repour's sync brings the origin's Git LFS objects along with the refs (docs/repour.md).

Before /clone or /adjust with ``sync`` pushes what it fetched, every LFS pointer reachable from
the refs it is about to push (their whole history, as ``git lfs fetch --all`` would) whose
object the internal repository does not hold yet is fetched from the origin's LFS server
(gitserver.lfs.remote, at the endpoint git-lfs would use: gitserver.repour.lfsorigin; every
connection checked and pinned like the git fetch's), checked for digest and size, put in the object store,
and recorded for the repository, under the LFS limit and the quotas. Only then are the refs
pushed, so a build that clones the archive tag gets the content, and an origin that cannot give
every object fails the operation (``LfsObjectMissing``, exit code 10) before any ref moves.

The bytes are always downloaded, even when the store already has the content: the origin must
prove it has the object, or naming another tenant's digest in a pointer would hand its object
to this repository.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from sqlalchemy.orm import Session, sessionmaker

from gitserver.config import Config
from gitserver.db.session import transaction
from gitserver.git.store import RepoStore
from gitserver.lfs import pointers, remote
from gitserver.lfs.batch import Pointer
from gitserver.lfs.service import Holder, LfsService, QuotaExceeded
from gitserver.lfs.store import ObjectMismatch
from gitserver.repour import lfsorigin
from gitserver.repour.command import ProcessingError, StopCheck, redact
from gitserver.repour.giturl import GitUrl
from gitserver.repour.gitwork import GitWork, Target

log = logging.getLogger(__name__)


def bring_objects(config: Config, sessions: sessionmaker[Session], work: GitWork, target: Target,
                  origin: GitUrl, revs: Sequence[str], stop: StopCheck) -> int:
    """Fetch, store and record the LFS objects ``revs`` (refs or commits of the temporary
    repository) name that ``target`` lacks; the number brought. ProcessingError when the
    origin cannot give them all, or they would go over a limit: nothing is recorded then."""
    revs = [rev for rev in dict.fromkeys(revs) if rev]
    if not revs:
        return 0
    # Whether the refs use LFS is what their trees hold, not what a .gitattributes says (one in
    # a subdirectory, or none at all for pointers committed by hand): one listing of the synced
    # history, about what the fetch's fsck of it has just read.
    found = {p.oid: p for p in pointers.pointers_in(work.git_dir, revs, config.repour_git_timeout)}
    stop()
    if not found:
        return 0
    lfs = LfsService(config, sessions, RepoStore(root=config.repos_dir, hooks_dir=config.hooks_dir))
    holder = Holder(repo_id=target.repo_id, tenant=target.tenant, repo=target.name)
    with transaction(sessions) as session:
        held = lfs.held(session, target.repo_id, found)
        wanted = [p for oid, p in sorted(found.items()) if oid not in held]
        if not wanted:
            return 0
        _check_limits(lfs, session, holder, wanted)
    if origin.transport == "file":
        raise ProcessingError(f"{len(wanted)} LFS object(s) the synced refs name cannot be brought from a "
                              f"local origin ({wanted[0].path} names {wanted[0].oid}); serve the origin over "
                              "http(s)", error_type="LfsObjectMissing")
    started = time.monotonic()
    endpoint = lfsorigin.endpoint_for(work, origin, revs)
    log.info("LFS endpoint of %s: %s (%s)", redact(origin.text), redact(endpoint.url), endpoint.source)
    try:
        _download(lfs, endpoint, wanted, config, stop)
    except remote.RemoteLfsError as exc:
        raise ProcessingError(redact(f"{exc.message} (endpoint: {endpoint.source})"), error_type=exc.kind) from exc
    for pointer in wanted:  # all verified and stored: now the repository holds them
        lfs.record(target.repo_id, pointer.oid, pointer.size)
    log.info("brought %d LFS object(s) (%d bytes) from %s into %s in %.1f s", len(wanted),
             sum(p.size for p in wanted), redact(origin.text), target.full_name, time.monotonic() - started)
    return len(wanted)


def _check_limits(lfs: LfsService, session: Session, holder: Holder, wanted: Sequence[pointers.Pointer]) -> None:
    """The LFS object limit and the quotas, before any byte moves (as for an upload)."""
    for pointer in wanted:
        refusal = lfs.size_refusal(Pointer(pointer.oid, pointer.size))
        if refusal:
            raise ProcessingError(f"{pointer.path}: {refusal}", error_type="LfsObjectTooLarge")
    try:
        lfs.check_quota(session, holder, sum(p.size for p in wanted))
    except QuotaExceeded as exc:
        raise ProcessingError(exc.message, error_type="QuotaExceeded") from exc


def _download(lfs: LfsService, endpoint: lfsorigin.Endpoint, wanted: Sequence[pointers.Pointer],
              config: Config, stop: StopCheck) -> None:
    deadline = time.monotonic() + config.repour_git_timeout
    with remote.RemoteLfs(endpoint.url, headers=endpoint.headers, allow_private=config.allow_private_networks,
                          deadline=deadline, stop=stop) as client:
        by_oid = {p.oid: p for p in wanted}
        try:
            downloads = client.downloads(Pointer(p.oid, p.size) for p in wanted)
        except remote.MissingObjects as exc:
            first = by_oid[exc.missing[0][0].oid]
            raise remote.RemoteLfsError(f"{exc.message} (the first at {first.path})", exc.kind) from exc
        for download in downloads:
            incoming = lfs.objects.receive(download.pointer.oid, download.pointer.size)
            try:
                client.fetch(download, incoming)
                lfs.objects.finish(incoming)  # digest and size checked: ObjectMismatch otherwise
            except ObjectMismatch as exc:
                raise remote.RemoteLfsError(f"the origin's LFS server sent another content than the pointer "
                                            f"names: {exc.message}", "LfsObjectMismatch") from exc
            finally:
                incoming.discard()
