"""The admins' pages of a tenant: its users and groups (created through forms), and a user's
SSH keys (added and removed) and API tokens (created, shown once, and revoked). The rules are
the API's: tenant admins (and site admins) only, through the same ``admin`` services (a
tenant admin never manages a site admin, nor gives that role); a non-admin gets 403, another
tenant 404. A refused form is answered on its page, its error beside the field it names.
A repository's grants and deploy keys are gitserver.console.access_pages.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gitserver.admin import base, groups, keys, minting, rules, tokens, users
from gitserver.console import security
from gitserver.console.forms import Form, attempt, audit, typed
from gitserver.console.web import Page, View
from gitserver.db import models
from gitserver.policy.errors import Forbidden, NotFound

MAX_ID = 2147483647
MAX_NAME = 100
USER_FIELDS = ("name", "role")
GROUP_FIELDS = ("name", "description")
KEY_FIELDS = ("key", "title")
TOKEN_FIELDS = ("name", "scopes", "expires_at")


def admin_tenant(view: View, tenant: str) -> models.Tenant:
    row = view.session.scalar(select(models.Tenant).where(models.Tenant.name == tenant[:MAX_NAME]))
    if row is None or not (view.principal.is_site_admin or view.principal.tenant_id == row.id):
        raise NotFound(f"tenant {tenant[:100]!r} not found")
    if not view.principal.is_tenant_admin(row.id):
        raise Forbidden(f"only the admins of tenant {row.name!r} may see this page")
    return row


def tenant_base(tenant: models.Tenant) -> str:
    return f"{security.CONSOLE_PREFIX}/-/admin/{tenant.name}"


def _user_base(user: models.User) -> str:
    return f"{tenant_base(user.tenant)}/users/{user.name}"


def new_user_form() -> Form:
    return Form("new-user", "name", {"role": models.ROLE_MEMBER})


class TenantAdmin(Page):
    """Its users and groups, and the forms that create them."""

    def get(self, view: View, tenant: str) -> None:
        show_tenant(view, admin_tenant(view, tenant))


def show_tenant(view: View, row: models.Tenant, status: int = 200, **forms: Form) -> None:
    group_rows = list(view.session.scalars(groups.groups_query(row).order_by(models.Group.name)))
    values: dict[str, Any] = {"user_form": new_user_form(), "group_form": Form("new-group", "name"), **forms}
    view.render("admin_tenant.html", status, tenant=row, base=tenant_base(row),
                users=list(view.session.scalars(users.users_query(row).order_by(models.User.name))),
                groups=group_rows, roles=_assignable_roles(view),
                members={g.id: list(view.session.scalars(groups.members_query(g))) for g in group_rows},
                **values)


def _assignable_roles(view: View) -> list[str]:
    return [r for r in models.ROLES if r != models.ROLE_SITE_ADMIN or view.principal.is_site_admin]


class CreateUser(Page):
    """As the API's ``POST …/users``: a name and a role the admin may give."""

    def post(self, view: View, tenant: str) -> None:
        row = admin_tenant(view, tenant)
        form = dataclasses.replace(new_user_form(), values=typed(view, USER_FIELDS))

        def create() -> models.User:
            rules.check_role_assignable(view.principal, form.value("role"))
            return users.create_user(view.session, row, form.value("name"), form.value("role"))

        user, form = attempt(view, form, create)
        if user is None:
            show_tenant(view, row, form.status, user_form=form)
            return
        audit(view, f"created user {row.name}/{user.name} ({user.role})")
        view.redirect(_user_base(user))


class CreateGroup(Page):
    """As the API's ``POST …/groups``: a name and a description."""

    def post(self, view: View, tenant: str) -> None:
        row = admin_tenant(view, tenant)
        form = Form("new-group", "name", typed(view, GROUP_FIELDS))
        group, form = attempt(view, form, lambda: groups.create_group(
            view.session, row, form.value("name"), base.validate_description(form.value("description"))))
        if group is None:
            show_tenant(view, row, form.status, group_form=form)
            return
        audit(view, f"created group {row.name}/{group.name}")
        view.redirect(f"{tenant_base(row)}#groups")


def managed_user(view: View, tenant: str, user: str) -> models.User:
    """A user of the tenant whose keys and tokens the admin may change (never a site admin's,
    but for a site admin), as the API's ``_managed_user``."""
    person = users.get_user(view.session, admin_tenant(view, tenant), user)
    rules.check_self_or_manager(view.principal, person.id, person.tenant_id, person.role)
    return person


class UserAdmin(Page):
    def get(self, view: View, tenant: str, user: str) -> None:
        show_user(view, users.get_user(view.session, admin_tenant(view, tenant), user))


def show_user(view: View, person: models.User, status: int = 200, **values: Any) -> None:
    forms = {"key_form": Form("add-key", "key"), "token_form": Form("new-token", "name"), "new_token": None,
             **values}
    view.render("admin_user.html", status, tenant=person.tenant, user=person, base=_user_base(person),
                scopes=tokens.TOKEN_SCOPES,
                keys=list(view.session.scalars(keys.user_keys_query(person).order_by(models.PublicKey.id))),
                tokens=list(view.session.scalars(tokens.tokens_query(person).order_by(models.ApiToken.id))),
                **forms)


class AddKey(Page):
    def post(self, view: View, tenant: str, user: str) -> None:
        person = managed_user(view, tenant, user)
        form = Form("add-key", "key", typed(view, KEY_FIELDS))
        key, form = attempt(view, form, lambda: keys.add_user_key(
            view.session, person, form.value("key").strip(), form.value("title").strip()))
        if key is None:
            show_user(view, person, form.status, key_form=form)
            return
        audit(view, f"added key {key.fingerprint} to {person.tenant.name}/{person.name}")
        view.redirect(_user_base(person))


class CreateToken(Page):
    """As the API's ``POST …/tokens`` (admin.minting): the new token's secret is shown on the
    answer to this POST only (the page is ``no-store``); it is never stored, nor shown again."""

    def post(self, view: View, tenant: str, user: str) -> None:
        person = managed_user(view, tenant, user)
        form = Form("new-token", "name", typed(view, TOKEN_FIELDS))
        made, form = attempt(view, form, lambda: minting.mint_token(
            view.session, view.principal, person, name=form.value("name").strip(),
            scopes=view.form_all("scopes"), expires=form.value("expires_at").strip() or None))
        if made is None:
            show_user(view, person, form.status, token_form=form)
            return
        token, secret = made
        audit(view, f"created API token {token.id} of {person.tenant.name}/{person.name} ({token.scopes})")
        show_user(view, person, 201, new_token={"id": token.id, "secret": secret})


@dataclasses.dataclass(frozen=True)
class UserItem:
    """One kind of a user's items an admin removes through a form: keys, tokens."""

    what: str
    find: Callable[[Session, models.User, int], Any]
    remove: Callable[[Session, Any], None]


KEY = UserItem("removed key", keys.get_user_key, keys.remove_user_key)
TOKEN = UserItem("revoked API token", tokens.get_token, tokens.revoke_token)


class RemoveUserItem(Page):
    def __init__(self, ctx: Any, item: UserItem) -> None:
        super().__init__(ctx)
        self.item = item

    def post(self, view: View, tenant: str, user: str, item_id: int) -> None:
        person = managed_user(view, tenant, user)
        self.item.remove(view.session, self.item.find(view.session, person, min(item_id, MAX_ID)))
        audit(view, f"{self.item.what} {item_id} of {person.tenant.name}/{person.name}")
        view.redirect(_user_base(person))
