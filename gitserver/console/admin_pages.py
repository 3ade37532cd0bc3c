"""The admins' pages of a tenant: its users and groups, a user's keys (added and removed
through forms) and API tokens (revoked through a form), and a repository's grants and deploy
keys. The rules are the API's: tenant admins (and site admins) only, through the same
``admin`` services; a non-admin gets 403, another tenant 404."""

from __future__ import annotations

from sqlalchemy import select

from gitserver.admin import deploy_keys, grants, groups, keys, rules, tokens, users
from gitserver.console import security
from gitserver.console.repo_pages import granted, page_values
from gitserver.console.web import Page, View
from gitserver.db import models
from gitserver.policy import access
from gitserver.policy.errors import Forbidden, InvalidInput, NotFound

MAX_ID = 2147483647
MAX_NAME = 100


def admin_tenant(view: View, tenant: str) -> models.Tenant:
    row = view.session.scalar(select(models.Tenant).where(models.Tenant.name == tenant[:MAX_NAME]))
    if row is None or not (view.principal.is_site_admin or view.principal.tenant_id == row.id):
        raise NotFound(f"tenant {tenant[:100]!r} not found")
    if not view.principal.is_tenant_admin(row.id):
        raise Forbidden(f"only the admins of tenant {row.name!r} may see this page")
    return row


def _user_base(tenant: models.Tenant, user: models.User) -> str:
    return f"{security.CONSOLE_PREFIX}/-/admin/{tenant.name}/users/{user.name}"


class TenantAdmin(Page):
    def get(self, view: View, tenant: str) -> None:
        row = admin_tenant(view, tenant)
        user_rows = list(view.session.scalars(users.users_query(row).order_by(models.User.name)))
        group_rows = list(view.session.scalars(groups.groups_query(row).order_by(models.Group.name)))
        members = {g.id: list(view.session.scalars(groups.members_query(g))) for g in group_rows}
        view.render("admin_tenant.html", tenant=row, users=user_rows, groups=group_rows, members=members)


class UserAdmin(Page):
    def get(self, view: View, tenant: str, user: str) -> None:
        row = admin_tenant(view, tenant)
        person = users.get_user(view.session, row, user)
        view.render("admin_user.html", tenant=row, user=person, base=_user_base(row, person),
                    keys=list(view.session.scalars(keys.user_keys_query(person).order_by(models.PublicKey.id))),
                    tokens=list(view.session.scalars(tokens.tokens_query(person).order_by(models.ApiToken.id))))


class AddKey(Page):
    def post(self, view: View, tenant: str, user: str) -> None:
        row = admin_tenant(view, tenant)
        person = users.get_user(view.session, row, user)
        keys.add_user_key(view.session, person, view.form("key").strip(), view.form("title").strip())
        view.redirect(_user_base(row, person))


class RemoveKey(Page):
    def post(self, view: View, tenant: str, user: str, key_id: int) -> None:
        row = admin_tenant(view, tenant)
        person = users.get_user(view.session, row, user)
        keys.remove_user_key(view.session, keys.get_user_key(view.session, person, min(key_id, MAX_ID)))
        view.redirect(_user_base(row, person))


class RevokeToken(Page):
    def post(self, view: View, tenant: str, user: str, token_id: int) -> None:
        row = admin_tenant(view, tenant)
        person = users.get_user(view.session, row, user)
        tokens.revoke_token(view.session, tokens.get_token(view.session, person, min(token_id, MAX_ID)))
        view.redirect(_user_base(row, person))


class RepoAccess(Page):
    """A repository's grants and deploy keys (its admins)."""

    def get(self, view: View, tenant: str, repo: str) -> None:
        opened = granted(view, tenant, repo, access.ADMIN)
        rows = []
        for grant in view.session.scalars(grants.grants_query(opened.row).order_by(models.Grant.id)):
            if grant.user_id is not None:
                who = view.session.get(models.User, grant.user_id)
                rows.append(("user", who.name if who else "?", grant.permission))
            else:
                group = view.session.get(models.Group, grant.group_id)
                rows.append(("group", group.name if group else "?", grant.permission))
        view.render("admin_repo.html", **page_values(
            view, opened, grants=rows,
            deploy_keys=list(view.session.scalars(deploy_keys.deploy_keys_query(opened.row)))))


GRANTEE_KINDS = ("user", "group")


def _grantee(view: View, tenant: models.Tenant) -> dict[str, models.User | models.Group]:
    """The form's grantee (``kind`` user or group, ``name``) in the repository's tenant."""
    kind, name = view.form("kind"), view.form("name").strip()
    if kind not in GRANTEE_KINDS:
        raise InvalidInput(f"kind must be one of {', '.join(GRANTEE_KINDS)}", field="kind")
    if kind == "user":
        return {"user": users.get_user(view.session, tenant, name)}
    return {"group": groups.get_group(view.session, tenant, name)}


class SetGrant(Page):
    """Give a user or group a permission (never more than the admin holds), as the API's PUT."""

    def post(self, view: View, tenant: str, repo: str) -> None:
        opened = granted(view, tenant, repo, access.ADMIN)
        permission = view.form("permission")
        rules.check_grantable(opened.permission, permission)
        grants.set_grant(view.session, opened.row, permission, **_grantee(view, opened.row.tenant))  # type: ignore[arg-type]
        view.redirect(f"{opened.base}/access")


class RemoveGrant(Page):
    def post(self, view: View, tenant: str, repo: str) -> None:
        opened = granted(view, tenant, repo, access.ADMIN)
        grants.remove_grant(view.session, opened.row, **_grantee(view, opened.row.tenant))  # type: ignore[arg-type]
        view.redirect(f"{opened.base}/access")
