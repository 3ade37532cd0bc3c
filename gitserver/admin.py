"""Administrative operations shared by the REST API and the CLI mirrors.

Each function takes the caller's Session and never commits. Permission checks belong to the
caller (the API checks the acting principal; the CLI is run by the operator); the rules the API
applies are the pure ``check_*`` functions at the end of this module, table-tested without a
database.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gitserver import access
from gitserver.db import models
from gitserver.db.base import utcnow
from gitserver.errors import Conflict, Forbidden, InvalidInput, NotFound
from gitserver.git import head, refs
from gitserver.git.store import RepoStore
from gitserver.keys import KeyLine, parse_key_lines, parse_public_key
from gitserver.names import name_problem, validate_name

TOKEN_PREFIX = "gst_"
TOKEN_SCOPES = (access.READ, access.WRITE, access.ADMIN)  # ordered: each includes the ones before


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _flush(session: Session, conflict: str) -> None:
    """Flush, turning a unique-constraint race into a 409 naming the conflict."""
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError as exc:
        raise Conflict(conflict) from exc


# --- tenants, users, groups -------------------------------------------------------------------

def get_tenant(session: Session, name: str) -> models.Tenant:
    # A name that could never have been created is simply not found; checking first also keeps
    # hostile strings (NUL bytes, megabytes) away from the database.
    if name_problem(name):
        raise NotFound(f"tenant {name[:100]!r} not found")
    tenant = session.scalar(select(models.Tenant).where(models.Tenant.name == name))
    if tenant is None:
        raise NotFound(f"tenant {name!r} not found")
    return tenant


def create_tenant(session: Session, name: str, description: str = "") -> models.Tenant:
    validate_name(name, "name")
    if session.scalar(select(models.Tenant.id).where(models.Tenant.name == name)) is not None:
        raise Conflict(f"tenant {name!r} already exists")
    tenant = models.Tenant(name=name, description=description)
    session.add(tenant)
    _flush(session, f"tenant {name!r} already exists")
    return tenant


_InTenant = TypeVar("_InTenant", models.User, models.Group)


def _by_name(session: Session, model: type[_InTenant], tenant: models.Tenant, name: str,
             what: str) -> _InTenant:
    """The user or group ``name`` of ``tenant``, or NotFound (a name that could never exist is
    not looked up)."""
    row = None if name_problem(name) else session.scalar(
        select(model).where(model.tenant_id == tenant.id, model.name == name))
    if row is None:
        raise NotFound(f"{what} {tenant.name}/{name[:100]} not found")
    return row


def get_user(session: Session, tenant: models.Tenant, name: str) -> models.User:
    return _by_name(session, models.User, tenant, name, "user")


def validate_role(role: object) -> str:
    if role not in models.ROLES:
        raise InvalidInput(f"role must be one of {', '.join(models.ROLES)}", field="role")
    return role


def create_user(session: Session, tenant: models.Tenant, name: str,
                role: str = models.ROLE_MEMBER) -> models.User:
    validate_name(name, "name")
    validate_role(role)
    if session.scalar(select(models.User.id).where(models.User.tenant_id == tenant.id,
                                                   models.User.name == name)) is not None:
        raise Conflict(f"user {tenant.name}/{name} already exists")
    user = models.User(tenant_id=tenant.id, name=name, role=role, tenant=tenant)
    session.add(user)
    _flush(session, f"user {tenant.name}/{name} already exists")
    return user


def get_group(session: Session, tenant: models.Tenant, name: str) -> models.Group:
    return _by_name(session, models.Group, tenant, name, "group")


def create_group(session: Session, tenant: models.Tenant, name: str, description: str = "") -> models.Group:
    validate_name(name, "name")
    if session.scalar(select(models.Group.id).where(models.Group.tenant_id == tenant.id,
                                                    models.Group.name == name)) is not None:
        raise Conflict(f"group {tenant.name}/{name} already exists")
    group = models.Group(tenant_id=tenant.id, name=name, description=description, tenant=tenant)
    session.add(group)
    _flush(session, f"group {tenant.name}/{name} already exists")
    return group


def add_member(session: Session, group: models.Group, user: models.User) -> None:
    if user.tenant_id != group.tenant_id:
        raise NotFound(f"user {user.name!r} not found in tenant {group.tenant.name}")
    if session.get(models.GroupMember, (group.id, user.id)) is None:
        session.add(models.GroupMember(group_id=group.id, user_id=user.id))
        _flush(session, f"user {user.name!r} was added to group {group.name!r} concurrently")


# --- keys ---------------------------------------------------------------------------------------

def _new_public_key(session: Session, text: str, title: str, user: models.User | None,
                    expires_at: dt.datetime | None = None) -> models.PublicKey:
    key = parse_public_key(text)
    existing = session.scalar(select(models.PublicKey).where(models.PublicKey.fingerprint == key.fingerprint))
    if existing is not None:
        owner = "a deploy key" if existing.user_id is None else "another user's key"
        if user is not None and existing.user_id == user.id:
            owner = "already one of this user's keys"
        raise Conflict(f"key {key.fingerprint} is already registered ({owner}); "
                       "one key is one identity")
    if not isinstance(title, str) or len(title) > 200:
        raise InvalidInput("title must be a string of at most 200 characters", field="title")
    row = models.PublicKey(user_id=user.id if user else None, fingerprint=key.fingerprint,
                           key_type=key.key_type, key_data=key.openssh, bits=key.bits,
                           title=title or key.comment, expires_at=expires_at)
    session.add(row)
    _flush(session, f"key {key.fingerprint} is already registered")
    return row


def add_user_key(session: Session, user: models.User, text: str, title: str = "",
                 expires_at: dt.datetime | None = None) -> models.PublicKey:
    """``expires_at``: the expiry of the API token that adds the key, if it has one. A key
    must not outlive the credential that created it (a short-lived or leaked token would
    otherwise leave a permanent way in)."""
    return _new_public_key(session, text, title, user, expires_at)


@dataclasses.dataclass(frozen=True)
class KeyImport:
    """What :func:`import_user_keys` did: how many keys it added, and each refused line."""

    added: int
    refused: list[KeyLine]
    total: int  # key lines in the batch (blank lines and comments are not keys)

    @property
    def imported(self) -> bool:
        return self.added > 0 or not self.refused


_FINGERPRINT_CHUNK = 500  # fingerprints per IN clause: well inside SQLite's variable limit


def import_user_keys(session: Session, user: models.User, lines: list[str],
                     skip_refused: bool = False, expires_at: dt.datetime | None = None) -> KeyImport:
    """Add every key of an ``authorized_keys`` file to ``user`` in the caller's transaction.

    A line is refused for what :func:`gitserver.keys.parse_key_lines` finds, or because its key
    is registered already (one key is one identity). All or nothing: when any line is refused,
    nothing is added, unless ``skip_refused``, which adds the others. The keys go in with one
    multi-row INSERT, so 10,000 of them take well under a second (docs/performance.md).
    ``expires_at``: as for :func:`add_user_key`, the expiry of the API token that imports them.
    """
    parsed = parse_key_lines(lines)
    fingerprints = [k.key.fingerprint for k in parsed if k.key is not None and not k.refused]
    owners: dict[str, int | None] = {}
    for start in range(0, len(fingerprints), _FINGERPRINT_CHUNK):
        chunk = fingerprints[start:start + _FINGERPRINT_CHUNK]
        owners.update(session.execute(select(models.PublicKey.fingerprint, models.PublicKey.user_id)
                                      .where(models.PublicKey.fingerprint.in_(chunk))).tuples().all())
    checked = []
    for item in parsed:
        if item.key is not None and not item.refused and item.key.fingerprint in owners:
            owner = owners[item.key.fingerprint]
            whose = ("already one of this user's keys" if owner == user.id else
                     "a deploy key" if owner is None else "another user's key")
            item = KeyLine(item.line, item.key, f"key {item.key.fingerprint} is already registered ({whose})")
        checked.append(item)
    refused = [k for k in checked if k.refused]
    accepted = [k.key for k in checked if not k.refused and k.key is not None]
    if refused and not skip_refused:
        return KeyImport(added=0, refused=refused, total=len(checked))
    if accepted:
        rows = [{"user_id": user.id, "fingerprint": key.fingerprint, "key_type": key.key_type,
                 "key_data": key.openssh, "bits": key.bits, "title": key.comment, "expires_at": expires_at}
                for key in accepted]
        try:
            with session.begin_nested():
                session.execute(insert(models.PublicKey), rows)
        except IntegrityError as exc:
            raise Conflict("a key of this batch was registered by someone else meanwhile; "
                           "nothing was imported, retry") from exc
    return KeyImport(added=len(accepted), refused=refused, total=len(checked))


def add_deploy_key(session: Session, repo: models.Repository, text: str, title: str = "",
                   write: bool = False, expires_at: dt.datetime | None = None) -> models.DeployKey:
    """Like :func:`add_user_key`, ``expires_at`` is the adding token's expiry."""
    key = _new_public_key(session, text, title, None, expires_at)
    deploy = models.DeployKey(repo_id=repo.id, public_key_id=key.id, write=bool(write),
                              public_key=key, repo=repo)
    session.add(deploy)
    session.flush()
    return deploy


# --- repositories and grants ----------------------------------------------------------------------

def get_repo(session: Session, tenant: models.Tenant, name: str) -> models.Repository:
    if name.endswith(".git"):
        name = name[:-4]
    if name_problem(name):
        raise NotFound(f"repository {tenant.name}/{name[:100]} not found")
    repo = session.scalar(select(models.Repository).where(models.Repository.tenant_id == tenant.id,
                                                          models.Repository.name == name))
    if repo is None:
        raise NotFound(f"repository {tenant.name}/{name} not found")
    return repo


def validate_visibility(visibility: object) -> str:
    if visibility not in models.VISIBILITIES:
        raise InvalidInput(f"visibility must be one of {', '.join(models.VISIBILITIES)}",
                           field="visibility")
    return visibility


def create_repo(session: Session, store: RepoStore, tenant: models.Tenant, name: str,
                description: str = "", visibility: str = "private") -> models.Repository:
    """Create the row and the bare repository. The directory is made last, after the row is
    flushed, and removed again if the flush fails: no half-created repository remains.

    The fronts (API, CLI, Repour's /internal-scm) call
    :func:`gitserver.pipelines.oncreate.create_repository`, which also announces the new
    repository; this alone announces nothing (tests and the benchmark set up with it)."""
    validate_name(name, "name")
    validate_visibility(visibility)
    if not isinstance(description, str) or len(description) > 2000:
        raise InvalidInput("description must be a string of at most 2000 characters", field="description")
    if session.scalar(select(models.Repository.id).where(models.Repository.tenant_id == tenant.id,
                                                         models.Repository.name == name)) is not None:
        raise Conflict(f"repository {tenant.name}/{name} already exists")
    repo = models.Repository(tenant_id=tenant.id, name=name, description=description,
                             visibility=visibility, tenant=tenant)
    session.add(repo)
    _flush(session, f"repository {tenant.name}/{name} already exists")
    if not store.exists(tenant.name, name):
        store.create(tenant.name, name, description)
    return repo


def set_create_template(session: Session, tenant: models.Tenant, name: str) -> None:
    """Name the repository of ``tenant`` whose pipeline file runs when a repository is created
    in it; "" for none. The repository must exist (a typo would silently never run)."""
    if name:
        validate_name(name, "create_template")
        exists = session.scalar(select(models.Repository.id).where(models.Repository.tenant_id == tenant.id,
                                                                  models.Repository.name == name))
        if exists is None:
            raise InvalidInput(f"create_template: tenant {tenant.name} has no repository {name!r}",
                               field="create_template")
    tenant.create_template = name


def validate_permission(permission: object) -> str:
    if permission not in models.PERMISSIONS:
        raise InvalidInput(f"permission must be one of {', '.join(models.PERMISSIONS)}",
                           field="permission")
    return permission


def _grantee(user: models.User | None, group: models.Group | None) -> ColumnElement[bool]:
    """The WHERE clause that picks the grants of ``user``, else of ``group``."""
    if user is not None:
        return models.Grant.user_id == user.id
    if group is not None:
        return models.Grant.group_id == group.id
    raise ValueError("a grant needs a user or a group")


def set_grant(session: Session, repo: models.Repository, permission: str, *,
              user: models.User | None = None, group: models.Group | None = None) -> models.Grant:
    validate_permission(permission)
    grantee = user or group
    if grantee is None:
        raise ValueError("a grant needs a user or a group")
    grantee_tenant = grantee.tenant_id
    if grantee_tenant != repo.tenant_id:
        raise InvalidInput("grants can only be given to users and groups of the repository's tenant")
    query = select(models.Grant).where(models.Grant.repo_id == repo.id, _grantee(user, group))
    grant = session.scalar(query)
    if grant is None:
        grant = models.Grant(repo_id=repo.id, user_id=user.id if user else None,
                             group_id=group.id if group else None, permission=permission)
        session.add(grant)
    else:
        grant.permission = permission
    # Two writers creating the same grant at once: one wins, the other gets a 409, not a 500.
    _flush(session, "the grant was changed concurrently; retry")
    return grant


def remove_grant(session: Session, repo: models.Repository, *, user: models.User | None = None,
                 group: models.Group | None = None) -> None:
    query = select(models.Grant).where(models.Grant.repo_id == repo.id, _grantee(user, group))
    grant = session.scalar(query)
    if grant is None:
        raise NotFound("no such grant")
    session.delete(grant)
    session.flush()


# --- API tokens -----------------------------------------------------------------------------------

def create_token(session: Session, *, user: models.User | None = None, site_admin: bool = False,
                 name: str = "", scopes: tuple[str, ...] = TOKEN_SCOPES,
                 expires_at: dt.datetime | None = None) -> tuple[models.ApiToken, str]:
    """Create a token; returns the row and the secret, which is never stored."""
    if user is None and not site_admin:
        raise InvalidInput("a token belongs to a user or is a site-admin token")
    bad = [s for s in scopes if s not in TOKEN_SCOPES]
    if bad or not scopes:
        raise InvalidInput(f"scopes must be a non-empty subset of {', '.join(TOKEN_SCOPES)}", field="scopes")
    if expires_at is not None and expires_at <= utcnow():
        raise InvalidInput("expires_at must be in the future", field="expires_at")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = models.ApiToken(user_id=user.id if user else None, site_admin=site_admin, name=name,
                          token_hash=hash_token(secret), scopes=",".join(scopes), expires_at=expires_at)
    session.add(row)
    session.flush()
    return row, secret


def get_token(session: Session, user: models.User, token_id: int) -> models.ApiToken:
    token = session.scalar(select(models.ApiToken).where(models.ApiToken.id == token_id,
                                                         models.ApiToken.user_id == user.id))
    if token is None:
        raise NotFound(f"token {token_id} of {user.tenant.name}/{user.name} not found")
    return token


def revoke_token(session: Session, token: models.ApiToken) -> None:
    """Revoke at once (the auth check reads ``revoked_at`` on every request); idempotent, and
    the first revocation time is kept."""
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        session.flush()


def tokens_query(user: models.User) -> Select[Any]:
    return select(models.ApiToken).where(models.ApiToken.user_id == user.id)


def token_scopes(token: models.ApiToken) -> list[str]:
    return [s for s in token.scopes.split(",") if s]


# --- listing and changing (used by the REST API) ---------------------------------------------------

def tenants_query(visible_tenant_id: int | None = None) -> Select[Any]:
    """All tenants, or only one (what a non-site-admin may see)."""
    query = select(models.Tenant)
    if visible_tenant_id is not None:
        query = query.where(models.Tenant.id == visible_tenant_id)
    return query


def users_query(tenant: models.Tenant) -> Select[Any]:
    return select(models.User).where(models.User.tenant_id == tenant.id)


def update_user(session: Session, user: models.User, *, role: str | None = None,
                disabled: bool | None = None) -> models.User:
    if role is not None:
        user.role = validate_role(role)
    if disabled is not None:
        user.disabled = bool(disabled)
    session.flush()
    return user


def disable_user(session: Session, user: models.User) -> models.User:
    """Disable a user. Nothing is deleted (pushes keep their author); the user's keys and
    tokens stop working at once because the SSH and API auth checks read ``disabled`` on
    every connection and request."""
    return update_user(session, user, disabled=True)


def user_keys_query(user: models.User) -> Select[Any]:
    return select(models.PublicKey).where(models.PublicKey.user_id == user.id)


def get_user_key(session: Session, user: models.User, key_id: int) -> models.PublicKey:
    key = session.scalar(select(models.PublicKey).where(models.PublicKey.id == key_id,
                                                        models.PublicKey.user_id == user.id))
    if key is None:
        raise NotFound(f"key {key_id} of {user.tenant.name}/{user.name} not found")
    return key


def _delete_public_key(session: Session, key: models.PublicKey) -> None:
    # The audit log keeps the fingerprint of the key that pushed (Push.key_fingerprint); only
    # the link to the row goes, so removing a key never rewrites or loses audit history.
    session.execute(update(models.Push).where(models.Push.public_key_id == key.id)
                    .values(public_key_id=None))
    session.delete(key)
    session.flush()


def remove_user_key(session: Session, key: models.PublicKey) -> None:
    _delete_public_key(session, key)


def update_group(session: Session, group: models.Group, *, description: str | None = None) -> models.Group:
    if description is not None:
        group.description = description
    session.flush()
    return group


def delete_group(session: Session, group: models.Group) -> None:
    """Delete a group with its memberships and the grants it held (members lose what the group
    gave them at their next connection)."""
    session.execute(delete(models.GroupMember).where(models.GroupMember.group_id == group.id))
    session.execute(delete(models.Grant).where(models.Grant.group_id == group.id))
    session.delete(group)
    session.flush()


def groups_query(tenant: models.Tenant) -> Select[Any]:
    return select(models.Group).where(models.Group.tenant_id == tenant.id)


def members_query(group: models.Group) -> Select[Any]:
    return (select(models.User)
            .join(models.GroupMember, models.GroupMember.user_id == models.User.id)
            .where(models.GroupMember.group_id == group.id))


def remove_member(session: Session, group: models.Group, user: models.User) -> None:
    member = session.get(models.GroupMember, (group.id, user.id))
    if member is None:
        raise NotFound(f"user {user.name!r} is not a member of group {group.name!r}")
    session.delete(member)
    session.flush()


def validate_description(description: object, field: str = "description") -> str:
    if not isinstance(description, str) or len(description) > 2000:
        raise InvalidInput("description must be a string of at most 2000 characters", field=field)
    return description


# The largest quota accepted: a BIGINT column, and far beyond any disk.
MAX_QUOTA_BYTES = 2**62


def validate_quota(value: object, field: str = "quota_bytes") -> int | None:
    """A disk quota in bytes: a positive integer, or null for none (docs/limits.md)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_QUOTA_BYTES:
        raise InvalidInput(f"{field} must be a positive number of bytes (at most {MAX_QUOTA_BYTES}) "
                           "or null for no quota", field=field)
    return value


def set_repo_quota(session: Session, principal: access.Principal, repo: models.Repository,
                   quota_bytes: int | None) -> None:
    """Only the tenant's admins set a repository's quota: a repository admin raising its own
    quota would defeat it."""
    if not principal.is_tenant_admin(repo.tenant_id):
        raise Forbidden(f"only the admins of tenant {repo.tenant.name!r} may set quota_bytes")
    repo.quota_bytes = validate_quota(quota_bytes)
    session.flush()


def set_tenant_quota(session: Session, principal: access.Principal, tenant: models.Tenant,
                     quota_bytes: int | None) -> None:
    """Only site admins set a tenant's quota (a tenant admin would raise its own)."""
    if not principal.is_site_admin:
        raise Forbidden("only site admins may set a tenant's quota_bytes")
    tenant.quota_bytes = validate_quota(quota_bytes)
    session.flush()


def update_repo(session: Session, repo: models.Repository, store: RepoStore | None = None, *,
                description: str | None = None, visibility: str | None = None,
                builds_enabled: bool | None = None,
                default_branch: str | None = None) -> models.Repository:
    """Change a repository's settings. Nothing about its history can be changed here."""
    if default_branch is not None and store is None:
        raise InvalidInput("default_branch: the repository store is not available")
    if description is not None:
        repo.description = validate_description(description)
    if visibility is not None:
        repo.visibility = validate_visibility(visibility)
    if builds_enabled is not None:
        repo.builds_enabled = bool(builds_enabled)
    if default_branch is not None and store is not None:
        # Last: every other field is valid by now, so a refused request changes nothing.
        _set_default_branch(store.path(repo.tenant.name, repo.name), default_branch,
                            f"{repo.tenant.name}/{repo.name}")
    session.flush()
    if description is not None and store is not None and store.exists(repo.tenant.name, repo.name):
        # gitweb-style tools read the description file; keep it in step with the row.
        (store.path(repo.tenant.name, repo.name) / "description").write_text(
            (description or repo.name)[:500] + "\n")
    return repo


def _set_default_branch(path: Path, branch: str, where: str) -> None:
    """Point HEAD at an existing branch (``main`` or ``refs/heads/main``)."""
    branch = branch.removeprefix(refs.HEADS)
    problem = refs.ref_format_problem(refs.HEADS + branch)
    if problem is not None:
        raise InvalidInput(f"default_branch: {problem}")
    if not head.branch_exists(path, branch):
        raise InvalidInput(f"default_branch: there is no branch '{branch}' in {where}; "
                           "push it first")
    head.set_default_branch(path, branch)


def grants_query(repo: models.Repository) -> Select[Any]:
    return select(models.Grant).where(models.Grant.repo_id == repo.id)


def get_grant(session: Session, repo: models.Repository, *, user: models.User | None = None,
              group: models.Group | None = None) -> models.Grant:
    query = select(models.Grant).where(models.Grant.repo_id == repo.id, _grantee(user, group))
    grant = session.scalar(query)
    if grant is None:
        raise NotFound("no such grant")
    return grant


def deploy_keys_query(repo: models.Repository) -> Select[Any]:
    return select(models.DeployKey).where(models.DeployKey.repo_id == repo.id)


def get_deploy_key(session: Session, repo: models.Repository, deploy_key_id: int) -> models.DeployKey:
    deploy = session.scalar(select(models.DeployKey).where(models.DeployKey.id == deploy_key_id,
                                                           models.DeployKey.repo_id == repo.id))
    if deploy is None:
        raise NotFound(f"deploy key {deploy_key_id} of {repo.full_name} not found")
    return deploy


def remove_deploy_key(session: Session, deploy: models.DeployKey) -> None:
    key = deploy.public_key
    session.delete(deploy)
    session.flush()
    _delete_public_key(session, key)


def ref_candidates(ref: str) -> list[str]:
    """A ref filter matches the full name or a branch or tag short name (``main`` matches
    ``refs/heads/main`` and ``refs/tags/main``)."""
    if ref.startswith("refs/"):
        return [ref]
    return [ref, f"refs/heads/{ref}", f"refs/tags/{ref}"]


def pushes_query(repo: models.Repository, *, ref: str | None = None,
                 user: models.User | bool | None = None, state: str | None = None) -> Select[Any]:
    """The audit log of one repository: the ledger (done and recovered pushes) unless
    ``state`` names one state or is ``all``. ``user=False`` means "a user that does not
    exist": the filter then matches nothing (rather than being ignored)."""
    query = select(models.Push).where(models.Push.repo_id == repo.id)
    if state is None:
        query = query.where(models.Push.state.in_(models.LEDGER_STATES))
    elif state != "all":
        query = query.where(models.Push.state == state)
    if ref:
        query = query.where(models.Push.id.in_(
            select(models.RefUpdate.push_id).where(models.RefUpdate.ref.in_(ref_candidates(ref)))))
    if user is False:
        query = query.where(models.Push.id.is_(None))
    elif isinstance(user, models.User):
        query = query.where(models.Push.user_id == user.id)
    return query


def find_user(session: Session, tenant: models.Tenant, name: str) -> models.User | None:
    if name_problem(name):
        return None
    return session.scalar(select(models.User).where(models.User.tenant_id == tenant.id,
                                                    models.User.name == name))


# --- the rules the API applies to the acting principal (pure) -----------------------------------

def check_role_assignable(principal: access.Principal, role: str) -> None:
    """Tenant admins may make members and admins; only site admins make site admins."""
    validate_role(role)
    if role == models.ROLE_SITE_ADMIN and not principal.is_site_admin:
        raise Forbidden("only site admins can give the site-admin role", field="role")


def check_user_manageable(principal: access.Principal, user_tenant_id: int, user_role: str) -> None:
    """Admins of the user's tenant manage its users, except site admins, whom only site admins
    manage (else a tenant admin could disable, or take over, someone above them)."""
    if not principal.is_tenant_admin(user_tenant_id):
        raise Forbidden("only the admins of the user's tenant may do this")
    if user_role == models.ROLE_SITE_ADMIN and not principal.is_site_admin:
        raise Forbidden("only site admins can manage a site admin")


def check_self_or_manager(principal: access.Principal, user_id: int, user_tenant_id: int,
                          user_role: str) -> None:
    """Users manage their own keys and tokens; admins manage those of users they manage."""
    if principal.kind == "user" and principal.user_id == user_id:
        return
    check_user_manageable(principal, user_tenant_id, user_role)


def check_grantable(held: str | None, requested: str) -> None:
    """Nobody grants more than they hold on the repository."""
    validate_permission(requested)
    if not access.at_least(held, requested):
        raise Forbidden(f"you hold {held or 'no'} access to this repository and cannot grant {requested}",
                        field="permission")


def check_expiry_grantable(held: dt.datetime | None,
                           requested: dt.datetime | None) -> dt.datetime | None:
    """The expiry of a token minted by a token that expires at ``held`` (None: never).

    A token cannot mint one that outlives it (else a short-lived token, leaked or handed out
    for a task, turns into a permanent one); by default the new token expires with it."""
    if held is None:
        return requested
    if requested is None:
        return held
    if requested > held:
        raise Forbidden(f"the token used expires at {held.isoformat()}; it cannot create a token "
                        "that outlives it", field="expires_at")
    return requested


def check_scopes_grantable(held: frozenset[str] | None, requested: Iterable[str]) -> None:
    """A token cannot mint a token with scopes it does not have itself."""
    missing = sorted(s for s in set(requested) if s in TOKEN_SCOPES and not access.scope_covers(held, s))
    if missing:
        raise Forbidden(f"the token used lacks the scope(s) {', '.join(missing)} it tries to give",
                        field="scopes")
