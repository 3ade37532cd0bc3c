"""What every LFS front asks: who may do what, which objects a repository holds, the batch
answer with its signed actions, the limits of an upload, and receiving and serving bytes.

One :class:`LfsService` per process (the object store's client is built once). No method holds
a database transaction while bytes move: the access decision and the quota check come first,
the transfer runs outside any transaction, and only a verified object is recorded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from gitserver.config import Config
from gitserver.db import models
from gitserver.db.session import transaction
from gitserver.git.store import RepoStore
from gitserver.lfs import batch, s3, sources, store, tokens
from gitserver.lfs.batch import Action, Pointer
from gitserver.lfs.tokens import DOWNLOAD, UPLOAD
from gitserver.pipelines import logstore
from gitserver.policy import access
from gitserver.policy.errors import ConfigError, InsufficientStorage, NotFound, PayloadTooLarge, Unauthenticated
from gitserver.policy.names import RepoNamed
from gitserver.push import limits

log = logging.getLogger(__name__)

REFUSED = "LFS upload refused"
MAX_OBJECT_ENV = "GITSERVER_LFS_MAX_OBJECT_BYTES"


class QuotaExceeded(InsufficientStorage):
    code = "lfs_quota"


class ObjectTooLarge(PayloadTooLarge):
    code = "lfs_too_large"


@dataclasses.dataclass(frozen=True)
class Holder(RepoNamed):
    """A repository that holds LFS objects (or is about to), as plain values."""

    repo_id: int
    tenant: str
    repo: str


@dataclasses.dataclass(frozen=True)
class Target(Holder):
    """A repository the caller may use for an operation (no session needed)."""

    principal: access.Principal
    operation: str
    public: bool


def need_for(operation: str) -> str:
    return access.WRITE if operation == UPLOAD else access.READ


class LfsService:
    def __init__(self, config: Config, sessions: sessionmaker[Session], repos: RepoStore,
                 objects: store.ObjectStore | None = None) -> None:
        self.config, self.sessions, self.repos = config, sessions, repos
        self.objects = objects if objects is not None else open_store(config)
        self._key: bytes | None = None

    @property
    def key(self) -> bytes:
        if self._key is None:
            self._key = tokens.signing_key(self.config.lfs_dir)
        return self._key

    def transaction(self) -> contextlib.AbstractContextManager[Session]:
        return transaction(self.sessions)

    def repo_row(self, session: Session, target: Target) -> models.Repository:
        row = session.get(models.Repository, target.repo_id)
        if row is None:
            raise NotFound(f"repository '{target.full_name}' not found or you have no access")
        return row

    # --- who may ---------------------------------------------------------------------------

    def authorise(self, session: Session, principal: access.Principal, tenant: str, repo: str,
                  operation: str, grant: tokens.Grant | None = None) -> Target:
        """The repository when ``principal`` may do ``operation`` there (access.authorise's
        errors otherwise). ``grant``: the token the principal came from, which must be for
        this repository and cover the operation."""
        granted = access.authorise(session, principal, tenant, repo, need_for(operation))
        row = granted.repo
        if grant is not None and (grant.repo_id != row.id or not grant.allows(operation)):
            raise Unauthenticated("this LFS authorization is for another repository or operation; "
                                  "run the git-lfs command again")
        return Target(row.id, row.tenant.name, row.name, principal, operation, row.visibility == "public")

    def principal_for_token(self, session: Session, token: str) -> tokens.Grant:
        """The grant a token carries, its user as the database has them now: a user disabled
        or removed since the token was issued is refused (401), and their role is today's
        (the token's copy would keep a demoted admin an admin until it expires); the SSH key,
        deploy key or API token it came from must still stand (gitserver.lfs.sources)."""
        grant = tokens.verify(self.key, token)
        principal = sources.check(session, grant.principal)
        if principal.kind != access.PrincipalKind.USER:
            return dataclasses.replace(grant, principal=principal)
        user = session.get(models.User, principal.user_id)
        if user is None or user.disabled:
            raise Unauthenticated("the account this LFS authorization was issued to is disabled or gone")
        return dataclasses.replace(grant, principal=dataclasses.replace(principal, role=user.role))

    # --- the batch ---------------------------------------------------------------------------

    def held(self, session: Session, repo_id: int, oids: Iterable[str]) -> dict[str, int]:
        wanted = sorted(set(oids))
        found: dict[str, int] = {}
        for start in range(0, len(wanted), 500):  # bounded IN lists
            rows = session.execute(select(models.LfsObject.oid, models.LfsObject.size).where(
                models.LfsObject.repo_id == repo_id, models.LfsObject.oid.in_(wanted[start:start + 500])))
            found.update({oid: int(size) for oid, size in rows})
        return found

    def batch(self, session: Session, target: Target, request: batch.BatchRequest,
              base_url: str) -> list[batch.Outcome]:
        held = self.held(session, target.repo_id, (p.oid for p in request.objects))
        if request.operation == UPLOAD:
            self.check_quota(session, target, batch.upload_size(request, held))
        return batch.decide(request, held, lambda p: self.actions(target, p, base_url), self.size_refusal)

    def actions(self, target: Target, pointer: Pointer, base_url: str) -> dict[str, Action]:
        expires = self.config.lfs_action_expires_seconds
        base = lfs_url(base_url, target.tenant, target.repo)
        token = tokens.issue(self.key, tokens.Grant(target.principal, target.repo_id, target.operation,
                                                    pointer.oid, pointer.size), expires)
        header = tokens.header(token)
        if target.operation == DOWNLOAD:
            direct = self.objects.download_href(pointer.oid, expires)
            if direct:
                return {"download": Action(direct, {}, expires)}
            return {"download": Action(f"{base}/objects/{pointer.oid}", header, expires)}
        return {"upload": Action(f"{base}/objects/{pointer.oid}", header, expires),
                "verify": Action(f"{base}/verify", header, expires)}

    def authenticate_answer(self, target: Target) -> dict[str, object]:
        """What ``git-lfs-authenticate`` prints: the batch API's URL and a header for it."""
        expires = self.config.lfs_action_expires_seconds
        token = tokens.issue(self.key, tokens.Grant(target.principal, target.repo_id, target.operation), expires)
        return {"href": lfs_url(self.config.http_base_url, target.tenant, target.repo),
                "header": tokens.header(token), "expires_in": expires}

    # --- limits ------------------------------------------------------------------------------

    def size_refusal(self, pointer: Pointer) -> str | None:
        limit = self.config.lfs_max_object_bytes
        if limit and pointer.size > limit:
            return (f"{REFUSED}: {MAX_OBJECT_ENV} is {limits.human(limit)} ({limit} bytes); "
                    f"object {pointer.oid} is {limits.human(pointer.size)} ({pointer.size} bytes)")
        return None

    def check_quota(self, session: Session, target: Holder, incoming: int) -> None:
        """QuotaExceeded when ``incoming`` more bytes would take the repository or its tenant
        over its quota, counted as a push counts them (disk, logs and LFS objects)."""
        if not incoming:
            return
        repo = session.get(models.Repository, target.repo_id)
        assert repo is not None
        if repo.quota_bytes:
            used = (limits.disk_usage(self.repos.path(target.tenant, target.repo))
                    + logstore.repo_held_bytes(session, repo.id))
            if used + incoming > repo.quota_bytes:
                raise QuotaExceeded(_quota_message(f"repository {target.full_name}", repo.quota_bytes,
                                                   used, incoming))
        if repo.tenant.quota_bytes:
            used = (limits.tenant_usage(self.repos.root / target.tenant)
                    + logstore.tenant_held_bytes(session, repo.tenant_id))
            if used + incoming > repo.tenant.quota_bytes:
                raise QuotaExceeded(_quota_message(f"tenant {target.tenant}", repo.tenant.quota_bytes,
                                                   used, incoming))

    # --- bytes -------------------------------------------------------------------------------

    def open_object(self, session: Session, target: Target, oid: str) -> tuple[BinaryIO, int]:
        """The object's bytes and size, when the repository holds it (NotFound otherwise)."""
        size = self.held(session, target.repo_id, [oid]).get(oid)
        if size is None:
            raise NotFound(f"object {oid} not found in this repository")
        try:
            return self.objects.open(oid), size
        except FileNotFoundError:
            log.error("LFS object %s of %s is recorded but missing from the store", oid, target.full_name)
            raise NotFound(f"object {oid} not found in this repository") from None

    def receive(self, oid: str, size: int) -> store.Incoming:
        if self.size_refusal(Pointer(oid, size)):
            raise ObjectTooLarge(self.size_refusal(Pointer(oid, size)) or "")
        return self.objects.receive(oid, size)

    def store_and_record(self, target: Target, incoming: store.Incoming) -> None:
        """Verify the upload, keep it, and record that the repository holds it."""
        self.objects.finish(incoming)
        self.record(target.repo_id, incoming.oid, incoming.size)
        log.info("LFS object %s (%d bytes) stored for %s by %s", incoming.oid, incoming.size,
                 target.full_name, target.principal.user_name or target.principal.kind.value)

    def record(self, repo_id: int, oid: str, size: int) -> None:
        try:
            with transaction(self.sessions) as session:
                if self.held(session, repo_id, [oid]):
                    return
                session.add(models.LfsObject(repo_id=repo_id, oid=oid, size=size))
        except IntegrityError:  # the same object, uploaded twice at once: recorded by the other
            log.info("LFS object %s was recorded by a concurrent upload", oid)

    def verify(self, session: Session, target: Target, oid: str, size: int) -> None:
        """The verify action: NotFound unless the repository holds the object at that size."""
        held = self.held(session, target.repo_id, [oid]).get(oid)
        if held != size:
            raise NotFound(f"object {oid} ({size} bytes) not found in this repository")


def open_store(config: Config) -> store.ObjectStore:
    """The store ``lfs_store`` names: empty for ``<data>/lfs``, ``s3://bucket/prefix``, or a
    directory."""
    where = config.lfs_store.strip()
    if where.startswith(store.S3_SCHEME):
        return s3.S3Store.from_config(config, where)
    if where and "://" in where:
        raise ConfigError(f"GITSERVER_LFS_STORE: {where!r} is neither a directory nor s3://bucket/prefix")
    return store.LocalStore(Path(where) if where else config.lfs_dir)


def lfs_url(base_url: str, tenant: str, repo: str) -> str:
    """The LFS endpoint git-lfs derives from a clone URL: ``<base>/<t>/<r>.git/info/lfs``."""
    return f"{base_url.rstrip('/')}/{tenant}/{repo}.git/info/lfs"


def _quota_message(owner: str, quota: int, used: int, incoming: int) -> str:
    return (f"{REFUSED}: the quota_bytes of {owner} is {limits.human(quota)} ({quota} bytes); "
            f"it would grow from {limits.human(used)} to {limits.human(used + incoming)}")
