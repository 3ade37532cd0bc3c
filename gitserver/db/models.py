"""The data model of docs/contract.md (Model), as typed SQLAlchemy 2 declarative classes.

Services take a Session and never commit: the caller owns the transaction.
"""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, declared_attr, mapped_column, relationship

from gitserver.db.base import Base, UTCDateTime, created_column, utcnow

# Roles of a user, from most to least powerful.
ROLE_SITE_ADMIN = "site-admin"
ROLE_ADMIN = "admin"
ROLE_MEMBER = "member"
ROLES = (ROLE_SITE_ADMIN, ROLE_ADMIN, ROLE_MEMBER)

# Permissions a grant can give on a repository, ordered.
PERMISSIONS = ("read", "write", "admin")

VISIBILITIES = ("private", "internal", "public")

# Pipeline, step and job states (docs/contract.md, Pipelines and archives).
QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
STATES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
FINAL_STATES = (SUCCEEDED, FAILED, CANCELLED)

# Push states (the ledger, docs/ledger.md). A push is recorded as ``pending`` (its intent)
# before any ref moves; ``done`` once the hook has moved its refs and queued its pipeline;
# ``recovered`` when the reconciler found its refs on disk without that last step (the pusher
# or the server died in between, or a ref was written outside receive-pack); ``failed`` when no
# ref of it moved. Only done and recovered pushes are in the ledger.
PUSH_PENDING, PUSH_DONE, PUSH_RECOVERED, PUSH_FAILED = "pending", "done", "recovered", "failed"
PUSH_STATES = (PUSH_PENDING, PUSH_DONE, PUSH_RECOVERED, PUSH_FAILED)
LEDGER_STATES = (PUSH_DONE, PUSH_RECOVERED)


class PipelineKind(enum.StrEnum):
    """What made a pipeline (``Pipeline.kind``). A StrEnum, so the column and the API hold the
    plain string."""

    PUSH = "push"  # a push to the repository (gitserver.pipelines.push)
    CLONE = "clone"  # Repour's /clone (gitserver.repour)
    ADJUST = "adjust"  # Repour's /adjust
    CREATE = "create"  # the tenant's template, when a repository is created (gitserver.pipelines.oncreate)



class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    # Disk quota of all its repositories together (docs/limits.md); None = no quota.
    quota_bytes: Mapped[int | None] = mapped_column(BigInteger)
    # A repository of this tenant whose .gitserver/pipeline.toml runs (as a ``create``
    # pipeline) whenever a repository is created in the tenant; "" = none.
    create_template: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[dt.datetime] = created_column()


_FIRST = -1  # a mapped_column sort_order before the class's own (0)


class NamedInTenant:
    """The columns of a row named within its tenant (a user, a group, a repository), and its
    tenant, loaded with it. The class declares ``UniqueConstraint("tenant_id", "name")``."""

    # First in the table, where they stood before this mixin (mixin columns go last otherwise).
    id: Mapped[int] = mapped_column(Integer, primary_key=True, sort_order=_FIRST)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True, sort_order=_FIRST)
    name: Mapped[str] = mapped_column(String(100), sort_order=_FIRST)

    @declared_attr
    def tenant(cls) -> Mapped[Tenant]:  # noqa: N805  (declared_attr makes it a class method)
        return relationship(Tenant, lazy="joined")


class User(NamedInTenant, Base):
    __tablename__ = "users"
    __table_args__ = (
        UniqueConstraint("tenant_id", "name"),
        CheckConstraint(f"role IN {ROLES!r}", name="role"),
    )

    role: Mapped[str] = mapped_column(String(20), default=ROLE_MEMBER)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = created_column()


class Group(NamedInTenant, Base):
    __tablename__ = "groups"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = created_column()


class GroupMember(Base):
    __tablename__ = "group_members"

    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True, index=True)
    created_at: Mapped[dt.datetime] = created_column()


class PublicKey(Base):
    """An SSH public key. One key is one identity across the whole site: the fingerprint is
    unique, whether the key belongs to a user or is a repository's deploy key."""

    __tablename__ = "public_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Null for deploy keys, which belong to a repository through DeployKey.
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    fingerprint: Mapped[str] = mapped_column(String(80), unique=True)
    key_type: Mapped[str] = mapped_column(String(64))
    key_data: Mapped[str] = mapped_column(Text)  # the authorized_keys line, without options
    bits: Mapped[int] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[dt.datetime] = created_column()
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    # A key added with an API token that expires expires with it (None: never).
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())

    user: Mapped[User | None] = relationship(lazy="joined")


class Repository(NamedInTenant, Base):
    __tablename__ = "repositories"
    __table_args__ = (
        UniqueConstraint("tenant_id", "name"),
        CheckConstraint(f"visibility IN {VISIBILITIES!r}", name="visibility"),
    )

    description: Mapped[str] = mapped_column(Text, default="")
    visibility: Mapped[str] = mapped_column(String(20), default="private")
    builds_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # Disk quota of this repository (docs/limits.md); None = no quota.
    quota_bytes: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[dt.datetime] = created_column()
    # What the reconciler saw of the refs on disk at its last clean pass (stat of the ref
    # directories and packed-refs): while it is unchanged the repository needs no ref read.
    refs_fingerprint: Mapped[str] = mapped_column(String(64), default="")
    # Recorded from Repour's /internal-scm as the caller sent them (PNC's Gerrit-era fields):
    # the parent project, and the owner groups as a JSON list (``ldap/…`` names included, which
    # name no gitserver group).
    parent_project: Mapped[str | None] = mapped_column(String(2000))
    owner_groups: Mapped[str | None] = mapped_column(Text)

    @property
    def full_name(self) -> str:
        return f"{self.tenant.name}/{self.name}"


class Grant(Base):
    """Gives one user or one group a permission on one repository."""

    __tablename__ = "grants"
    __table_args__ = (
        UniqueConstraint("repo_id", "user_id"),
        UniqueConstraint("repo_id", "group_id"),
        CheckConstraint("(user_id IS NULL) <> (group_id IS NULL)", name="one_grantee"),
        CheckConstraint(f"permission IN {PERMISSIONS!r}", name="permission"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repo_id: Mapped[int] = mapped_column(ForeignKey("repositories.id"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    group_id: Mapped[int | None] = mapped_column(ForeignKey("groups.id"), index=True)
    permission: Mapped[str] = mapped_column(String(10))
    created_at: Mapped[dt.datetime] = created_column()


class DeployKey(Base):
    __tablename__ = "deploy_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repo_id: Mapped[int] = mapped_column(ForeignKey("repositories.id"), index=True)
    public_key_id: Mapped[int] = mapped_column(ForeignKey("public_keys.id"), unique=True)
    write: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = created_column()

    public_key: Mapped[PublicKey] = relationship(lazy="joined")
    repo: Mapped[Repository] = relationship(lazy="joined")


class ApiToken(Base):
    """A bearer token. Only its SHA-256 is stored; the secret is shown once at creation."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    site_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    name: Mapped[str] = mapped_column(String(200), default="")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[str] = mapped_column(String(100), default="read,write,admin")
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[dt.datetime] = created_column()

    user: Mapped[User | None] = relationship(lazy="joined")

    def stands(self, now: dt.datetime) -> bool:
        """Neither revoked nor expired at ``now``: whether the token still authenticates."""
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


class Push(Base):
    """Audit record of one push: its intent first, then what became of it (PUSH_STATES)."""

    __tablename__ = "pushes"
    __table_args__ = (CheckConstraint(f"state IN {PUSH_STATES!r}", name="state"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repo_id: Mapped[int] = mapped_column(ForeignKey("repositories.id"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    public_key_id: Mapped[int | None] = mapped_column(ForeignKey("public_keys.id"))
    key_fingerprint: Mapped[str] = mapped_column(String(80), default="")
    protocol: Mapped[str] = mapped_column(String(20), default="ssh")
    client_address: Mapped[str] = mapped_column(String(100), default="")
    state: Mapped[str] = mapped_column(String(20), default=PUSH_DONE, index=True)
    # ``git push -o`` options as given, a JSON list of strings (gitserver.git.push_options).
    push_options: Mapped[str] = mapped_column(Text, default="[]", server_default="[]")
    # A push made with an SSH certificate: the CA's fingerprint, the certificate's key id and
    # serial (decimal text: serials are unsigned 64-bit); empty and null otherwise.
    cert_ca_fingerprint: Mapped[str] = mapped_column(String(80), default="", server_default="")
    cert_key_id: Mapped[str] = mapped_column(Text, default="", server_default="")
    cert_serial: Mapped[str | None] = mapped_column(String(20))
    created_at: Mapped[dt.datetime] = created_column()
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())

    ref_updates: Mapped[list[RefUpdate]] = relationship(
        back_populates="push", order_by="RefUpdate.id", lazy="selectin")

    @property
    def certificate(self) -> dict[str, str | int] | None:
        """The SSH certificate the push was made with, as the push audit and the ``push``
        webhook show it (docs/certificates.md); None for a plain key."""
        if not self.cert_ca_fingerprint:
            return None
        return {"ca": self.cert_ca_fingerprint, "key_id": self.cert_key_id,
                "serial": int(self.cert_serial or 0)}


class RefUpdate(Base):
    __tablename__ = "ref_updates"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    push_id: Mapped[int] = mapped_column(ForeignKey("pushes.id"), index=True)
    ref: Mapped[str] = mapped_column(String(1024))
    old: Mapped[str] = mapped_column(String(64))
    new: Mapped[str] = mapped_column(String(64))
    # The rule-set id (docs/ref-rules.md) that judged this update; None: no rule list was in
    # force (or the server moved the ref itself). gitserver.push.refjudge.rules_of reads it.
    rules: Mapped[str | None] = mapped_column(String(40))
    # Under a rule's require_signed: the signature result of each new commit and tag, a JSON
    # list of {"commit", "result" (signed | unsigned | bad), "signer"}; None: not checked.
    signatures: Mapped[str | None] = mapped_column(Text)

    push: Mapped[Push] = relationship(back_populates="ref_updates")


def _status_checked(*indexes: Index) -> tuple[CheckConstraint | Index, ...]:
    """The table arguments of pipelines and jobs: the constraint they share (a status is one of
    :data:`STATES`) and the table's own indexes."""
    return (CheckConstraint(f"status IN {STATES!r}", name="status"), *indexes)


class Pipeline(Base):
    __tablename__ = "pipelines"
    # The log retention pass (gitserver.pipelines.logstore) asks for unpruned pipelines that
    # ended before a date, oldest first, every job_reconcile_interval.
    __table_args__ = _status_checked(Index("ix_pipelines_log_retention", "log_pruned_at", "finished_at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repo_id: Mapped[int] = mapped_column(ForeignKey("repositories.id"), index=True)
    # One pipeline per push; unique so the reconciler can never enqueue a second one.
    push_id: Mapped[int | None] = mapped_column(ForeignKey("pushes.id"), unique=True)
    kind: Mapped[str] = mapped_column(String(20), default=PipelineKind.PUSH)
    status: Mapped[str] = mapped_column(String(20), default=QUEUED, index=True)
    ref: Mapped[str] = mapped_column(String(1024), default="")
    commit: Mapped[str] = mapped_column(String(64), default="")
    archive_tag: Mapped[str] = mapped_column(String(300), default="")
    task_id: Mapped[str | None] = mapped_column(String(200), index=True)
    request: Mapped[str] = mapped_column(Text, default="{}")  # JSON
    result: Mapped[str] = mapped_column(Text, default="{}")  # JSON
    error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = created_column()
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    # When its log was deleted by the retention pass (gitserver.pipelines.logstore); None: kept.
    log_pruned_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())

    steps: Mapped[list[Step]] = relationship(order_by="Step.position", lazy="selectin")


class Step(Base):
    __tablename__ = "steps"
    __table_args__ = (UniqueConstraint("pipeline_id", "position"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pipeline_id: Mapped[int] = mapped_column(ForeignKey("pipelines.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), default=QUEUED)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    message: Mapped[str] = mapped_column(Text, default="")
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class LogChunk(Base):
    """A piece of a pipeline's log; ``offset`` is the byte offset of ``data`` in the log, so a
    reader follows the log by asking for chunks past the offset it has."""

    __tablename__ = "log_chunks"
    __table_args__ = (UniqueConstraint("pipeline_id", "offset"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pipeline_id: Mapped[int] = mapped_column(ForeignKey("pipelines.id"), index=True)
    offset: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = created_column()


class Job(Base):
    """The durable queue: claimed with UPDATE … RETURNING, leased, re-claimed on expiry."""

    __tablename__ = "jobs"
    __table_args__ = _status_checked(Index("ix_jobs_claim", "status", "run_after"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))  # pipeline | webhook | callback
    pipeline_id: Mapped[int | None] = mapped_column(ForeignKey("pipelines.id"), index=True)
    payload: Mapped[str] = mapped_column(Text, default="{}")  # JSON
    status: Mapped[str] = mapped_column(String(20), default=QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    run_after: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), index=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = created_column()
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class Archive(Base):
    """Repour's guarantee: one tree in one repository has one tag, forever."""

    __tablename__ = "archives"
    __table_args__ = (UniqueConstraint("repo_id", "tree_id"), UniqueConstraint("repo_id", "tag"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repo_id: Mapped[int] = mapped_column(ForeignKey("repositories.id"), index=True)
    tree_id: Mapped[str] = mapped_column(String(64))
    tag: Mapped[str] = mapped_column(String(300))
    commit_id: Mapped[str] = mapped_column(String(64))  # the archive (orphan or adjust) commit
    source_commit: Mapped[str] = mapped_column(String(64), default="")
    source_ref: Mapped[str] = mapped_column(String(1024), default="")
    pipeline_id: Mapped[int | None] = mapped_column(ForeignKey("pipelines.id"))
    created_at: Mapped[dt.datetime] = created_column()


class Webhook(Base):
    """A repository's webhook, or a tenant's (every event of every repository of the tenant,
    plus ``repository`` events): exactly one of ``repo_id`` and ``tenant_id`` is set."""

    __tablename__ = "webhooks"
    __table_args__ = (CheckConstraint("(repo_id IS NULL) <> (tenant_id IS NULL)", name="one_owner"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repo_id: Mapped[int | None] = mapped_column(ForeignKey("repositories.id"), index=True)
    tenant_id: Mapped[int | None] = mapped_column(ForeignKey("tenants.id"), index=True)
    url: Mapped[str] = mapped_column(String(2000))
    secret: Mapped[str] = mapped_column(String(200), default="")
    events: Mapped[str] = mapped_column(String(100), default="push,pipeline")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = created_column()


class Delivery(Base):
    """One webhook or callback delivery: the outbox row and its log."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    webhook_id: Mapped[int | None] = mapped_column(ForeignKey("webhooks.id"), index=True)
    pipeline_id: Mapped[int | None] = mapped_column(ForeignKey("pipelines.id"), index=True)
    guid: Mapped[str] = mapped_column(String(64), unique=True)
    event: Mapped[str] = mapped_column(String(50))
    url: Mapped[str] = mapped_column(String(2000))
    method: Mapped[str] = mapped_column(String(10), default="POST")
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_excerpt: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = created_column()
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class DeliveryAttempt(Base):
    """One attempt of a delivery, exactly as it went out and came back: the delivery log.

    Written in the transaction that updates the Delivery after the request (never while it is
    in flight). The request headers are stored as sent — in particular the
    ``X-Hub-Signature-256`` computed with the secret of that moment, so changing a webhook's
    secret later does not change what the log says was sent — except that credentials
    (``Authorization`` and the like) are stored redacted. No unique (delivery, number): a worker
    that lost its lease may have sent the same attempt number as the one that took over, and
    both requests reached the receiver, so both are logged.
    """

    __tablename__ = "delivery_attempts"
    __table_args__ = (CheckConstraint("outcome IN ('delivered', 'retrying', 'failed')", name="outcome"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("deliveries.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)  # 1-based, the job attempt that sent it
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    duration_ms: Mapped[int] = mapped_column(Integer)
    request_url: Mapped[str] = mapped_column(String(2000))
    request_method: Mapped[str] = mapped_column(String(10))
    request_headers: Mapped[str] = mapped_column(Text, default="{}")  # JSON object, as sent (redacted)
    request_body_sha256: Mapped[str] = mapped_column(String(64))
    response_status: Mapped[int | None] = mapped_column(Integer)  # null: no answer (not sent, timeout…)
    response_headers: Mapped[str] = mapped_column(Text, default="{}")  # JSON object, a bounded subset
    response_excerpt: Mapped[str] = mapped_column(Text, default="")  # at most 2 KiB of the answer
    error: Mapped[str] = mapped_column(Text, default="")
    outcome: Mapped[str] = mapped_column(String(20))  # delivered | retrying | failed


# The protected-reference, SSH certificate, LFS and console tables live in modules of their own; importing them
# here puts them on the metadata wherever the models are loaded (alembic's env, the app, the
# tests), and keeps models.LfsObject and the rest where callers look for them.
from gitserver.db import refrule_models as refrule_models  # noqa: E402
from gitserver.db.cert_models import SshCa as SshCa  # noqa: E402
from gitserver.db.cert_models import SshCaRevocation as SshCaRevocation  # noqa: E402
from gitserver.db.cert_models import SshPrincipal as SshPrincipal  # noqa: E402
from gitserver.db.console_models import ConsoleLogin as ConsoleLogin  # noqa: E402
from gitserver.db.console_models import ConsoleSession as ConsoleSession  # noqa: E402
from gitserver.db.lfs_models import LfsLock as LfsLock  # noqa: E402
from gitserver.db.lfs_models import LfsObject as LfsObject  # noqa: E402
