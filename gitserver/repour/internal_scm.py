"""``/internal-scm``: create ``<tenant>/<repo>`` as PNC asks for it, with admin grants for its
owner groups (a missing tenant created for site admins, a project without one in
``repour_default_tenant``)."""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

from sqlalchemy.orm import Session

from gitserver.admin import grants, groups, tenants
from gitserver.api import lookup
from gitserver.db import models
from gitserver.pipelines import oncreate
from gitserver.policy import access
from gitserver.policy.errors import Conflict, GitserverError, NotFound
from gitserver.policy.names import GIT_SUFFIX, name_problem, validate_name
from gitserver.repour.answers import INTERNAL_SCM_RESULT, SUCCESS_ALREADY_EXISTS, SUCCESS_CREATED
from gitserver.repour.giturl import repo_urls
from gitserver.repour.schema import Reply, error
from gitserver.runtime import Runtime

log = logging.getLogger(__name__)

def ensure_tenant(session: Session, principal: access.Principal, name: str) -> None:
    """Create the tenant ``name`` when it does not exist and the caller may create tenants
    (Repour creates the organisation); anyone else gets the 404 of a missing tenant later."""
    if lookup.find_tenant(session, name) is not None:
        return
    if not principal.is_site_admin or not access.scope_covers(principal.scopes, access.ADMIN):
        return
    try:
        with session.begin_nested():
            tenants.create_tenant(session, name, description="created by /internal-scm")
    except Conflict:
        pass  # created by a concurrent request a moment ago
    log.info("internal-scm: tenant %s created for %s", name, principal.display)


def parse_project(project: str, default_tenant: str = "") -> tuple[str, str]:
    """``<tenant>/<repo>``, or ``<repo>`` in ``default_tenant`` (a trailing ``.git`` is accepted,
    as Gerrit's create-project does)."""
    parts = project.removesuffix(GIT_SUFFIX).split("/")
    if len(parts) == 1:
        if not default_tenant:
            raise Reply(400, [error("the project names no organisation (<organisation>/<repository>) and "
                                     "no default tenant is configured (repour_default_tenant)", ["project"])])
        parts = [default_tenant, parts[0]]
    if len(parts) != 2:
        raise Reply(400, [error("expected <tenant>/<repository>", ["project"])])
    for value, what in zip(parts, ("tenant", "repository"), strict=True):
        try:
            validate_name(value, what)
        except GitserverError as exc:
            raise Reply(400, [error(exc.message, ["project"])]) from exc
    return parts[0], parts[1]


@dataclasses.dataclass(frozen=True)
class OwnerGroup:
    """An owner group as sent (``lib-owners``, ``ldap/jboss-prod``) and the gitserver group it
    names: a plain name is a group of the tenant (created when missing, like Gerrit's
    ``--owner``); a ``<provider>/<name>`` one names the tenant's group ``<name>`` when that
    exists, and is only recorded otherwise."""

    sent: str
    local: str
    create: bool


OWNER_GROUP_MAX = 200


def parse_owner_group(name: str, index: int) -> OwnerGroup:
    if len(name) > OWNER_GROUP_MAX or any(not c.isprintable() for c in name):
        raise Reply(400, [error(f"an owner group is at most {OWNER_GROUP_MAX} printable characters",
                                 ["owner_groups", index])])
    provider, slash, local = name.rpartition("/")
    if not slash:
        try:
            validate_name(name, "group")
        except GitserverError as exc:
            raise Reply(400, [error(exc.message, ["owner_groups", index])]) from exc
        return OwnerGroup(sent=name, local=name, create=True)
    if not provider or not local:
        raise Reply(400, [error("expected <group> or <provider>/<group>", ["owner_groups", index])])
    return OwnerGroup(sent=name, local="" if name_problem(local) else local, create=False)


def create_internal_repo(session: Session, runtime: Runtime, tenant: models.Tenant, name: str,
                         groups: list[OwnerGroup], *, description: str = "", parent_project: str | None = None,
                         visibility: str = "private") -> dict[str, Any]:
    """Create the repository with admin grants for its owner groups, recording the groups and
    the parent project as sent. An existing repository is left exactly as it is:
    SUCCESS_ALREADY_EXISTS, no grant changes."""
    urls = repo_urls(runtime.config, tenant.name, name)
    def answer(status: str) -> dict[str, Any]:
        return INTERNAL_SCM_RESULT.render(status=status, readonly_url=urls.readonly, readwrite_url=urls.readwrite)

    if access.find_repo(session, tenant.name, name) is not None:
        return answer(SUCCESS_ALREADY_EXISTS)
    try:
        with session.begin_nested():
            repo = oncreate.create_repository(session, runtime.store, tenant, name, description=description[:2000],
                                              visibility=visibility)
            repo.parent_project = parent_project[:2000] if parent_project else None
            repo.owner_groups = json.dumps(list(dict.fromkeys(g.sent for g in groups)))
            for group in owner_group_rows(session, tenant, groups, name):
                grants.set_grant(session, repo, "admin", group=group)
    except Conflict:
        # Created by a concurrent request a moment ago.
        return answer(SUCCESS_ALREADY_EXISTS)
    return answer(SUCCESS_CREATED)


def owner_group_rows(session: Session, tenant: models.Tenant, owners: list[OwnerGroup],
                     repo_name: str) -> list[models.Group]:
    rows: dict[str, models.Group] = {}
    for owner in owners:
        if not owner.local or owner.local in rows:
            continue
        try:
            rows[owner.local] = groups.get_group(session, tenant, owner.local)
        except NotFound:
            if owner.create:
                rows[owner.local] = groups.create_group(
                    session, tenant, owner.local, description=f"owner group created by /internal-scm for {repo_name}")
    return list(rows.values())
