"""Administrative operations shared by the REST API and the CLI mirrors.

Each function takes the caller's Session and never commits. Permission checks belong to the
caller (the API checks the acting principal; the CLI is run by the operator).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gitserver.db import models
from gitserver.db.base import utcnow
from gitserver.errors import Conflict, InvalidInput, NotFound
from gitserver.git.store import RepoStore
from gitserver.keys import parse_public_key
from gitserver.names import validate_name

TOKEN_PREFIX = "gst_"
TOKEN_SCOPES = ("read", "write", "admin")


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


def get_user(session: Session, tenant: models.Tenant, name: str) -> models.User:
    user = session.scalar(select(models.User).where(models.User.tenant_id == tenant.id,
                                                    models.User.name == name))
    if user is None:
        raise NotFound(f"user {tenant.name}/{name} not found")
    return user


def validate_role(role: object) -> str:
    if role not in models.ROLES:
        raise InvalidInput(f"role must be one of {', '.join(models.ROLES)}", field="role")
    return role  # type: ignore[return-value]


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
    group = session.scalar(select(models.Group).where(models.Group.tenant_id == tenant.id,
                                                      models.Group.name == name))
    if group is None:
        raise NotFound(f"group {tenant.name}/{name} not found")
    return group


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
        session.flush()


# --- keys ---------------------------------------------------------------------------------------

def _new_public_key(session: Session, text: str, title: str, user: models.User | None) -> models.PublicKey:
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
                           title=title or key.comment)
    session.add(row)
    _flush(session, f"key {key.fingerprint} is already registered")
    return row


def add_user_key(session: Session, user: models.User, text: str, title: str = "") -> models.PublicKey:
    return _new_public_key(session, text, title, user)


def add_deploy_key(session: Session, repo: models.Repository, text: str, title: str = "",
                   write: bool = False) -> models.DeployKey:
    key = _new_public_key(session, text, title, None)
    deploy = models.DeployKey(repo_id=repo.id, public_key_id=key.id, write=bool(write),
                              public_key=key, repo=repo)
    session.add(deploy)
    session.flush()
    return deploy


# --- repositories and grants ----------------------------------------------------------------------

def get_repo(session: Session, tenant: models.Tenant, name: str) -> models.Repository:
    if name.endswith(".git"):
        name = name[:-4]
    repo = session.scalar(select(models.Repository).where(models.Repository.tenant_id == tenant.id,
                                                          models.Repository.name == name))
    if repo is None:
        raise NotFound(f"repository {tenant.name}/{name} not found")
    return repo


def validate_visibility(visibility: object) -> str:
    if visibility not in models.VISIBILITIES:
        raise InvalidInput(f"visibility must be one of {', '.join(models.VISIBILITIES)}",
                           field="visibility")
    return visibility  # type: ignore[return-value]


def create_repo(session: Session, store: RepoStore, tenant: models.Tenant, name: str,
                description: str = "", visibility: str = "private") -> models.Repository:
    """Create the row and the bare repository. The directory is made last, after the row is
    flushed, and removed again if the flush fails: no half-created repository remains."""
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


def validate_permission(permission: object) -> str:
    if permission not in models.PERMISSIONS:
        raise InvalidInput(f"permission must be one of {', '.join(models.PERMISSIONS)}",
                           field="permission")
    return permission  # type: ignore[return-value]


def set_grant(session: Session, repo: models.Repository, permission: str, *,
              user: models.User | None = None, group: models.Group | None = None) -> models.Grant:
    validate_permission(permission)
    grantee_tenant = (user or group).tenant_id  # type: ignore[union-attr]
    if grantee_tenant != repo.tenant_id:
        raise InvalidInput("grants can only be given to users and groups of the repository's tenant")
    query = select(models.Grant).where(models.Grant.repo_id == repo.id)
    query = query.where(models.Grant.user_id == user.id) if user else query.where(models.Grant.group_id == group.id)  # type: ignore[union-attr]
    grant = session.scalar(query)
    if grant is None:
        grant = models.Grant(repo_id=repo.id, user_id=user.id if user else None,
                             group_id=group.id if group else None, permission=permission)
        session.add(grant)
    else:
        grant.permission = permission
    session.flush()
    return grant


def remove_grant(session: Session, repo: models.Repository, *, user: models.User | None = None,
                 group: models.Group | None = None) -> None:
    query = select(models.Grant).where(models.Grant.repo_id == repo.id)
    query = query.where(models.Grant.user_id == user.id) if user else query.where(models.Grant.group_id == group.id)  # type: ignore[union-attr]
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
