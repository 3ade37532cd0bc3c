"""The admins' pages of a tenant: its users and groups (created through forms), and a user's
role and state (changed, as the API's PATCH), SSH keys (added and removed) and API tokens
(created, shown once, and revoked). The rules are
the API's: tenant admins (and site admins) only, through the same ``admin`` services (a
tenant admin never manages a site admin, nor gives that role); a non-admin gets 403, another
tenant 404. A refused form is answered on its page, its error beside the field it names.
A group's members are gitserver.console.group_pages, a repository's grants and deploy keys
gitserver.console.access_pages.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gitserver.admin import base, groups, keys, minting, rules, tokens, users
from gitserver.console import security
from gitserver.console.forms import CreateForm, Form, audit, done
from gitserver.console.web import Page, View
from gitserver.db import models
from gitserver.policy.errors import Forbidden, InvalidInput, NotFound

MAX_ID = 2147483647
MAX_NAME = 100
USER_FIELDS = ("name", "role")
GROUP_FIELDS = ("name", "description")
KEY_FIELDS = ("key", "title")
TOKEN_FIELDS = ("name", "scopes", "expires_at")
CHANGE_FIELDS = ("role", "state")
# The change form's states, and the ``disabled`` each one is.
STATES = {"active": False, "disabled": True}


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


class TenantForm(CreateForm):
    """A form of the tenant's page (its admins'); refused, that page again."""

    show = staticmethod(show_tenant)

    def owner(self, view: View, **params: Any) -> models.Tenant:
        return admin_tenant(view, params["tenant"])


class CreateUser(TenantForm):
    """As the API's ``POST …/users``: a name and a role the admin may give."""

    FORM = ("new-user", "name", USER_FIELDS)
    SHOWN_AS = "user_form"

    def create(self, view: View, owner: models.Tenant, form: Form) -> models.User:
        rules.check_role_assignable(view.principal, form.value("role"))
        return users.create_user(view.session, owner, form.value("name"), form.value("role"))

    def made(self, view: View, owner: models.Tenant, made: models.User) -> None:
        done(view, f"created user {owner.name}/{made.name} ({made.role})", _user_base(made))


class CreateGroup(TenantForm):
    """As the API's ``POST …/groups``: a name and a description."""

    FORM = ("new-group", "name", GROUP_FIELDS)
    SHOWN_AS = "group_form"

    def create(self, view: View, owner: models.Tenant, form: Form) -> models.Group:
        description = base.validate_description(form.value("description"))
        return groups.create_group(view.session, owner, form.value("name"), description)

    def made(self, view: View, owner: models.Tenant, made: models.Group) -> None:
        done(view, f"created group {owner.name}/{made.name}", f"{tenant_base(owner)}#groups")


def managed_user(view: View, tenant: str, user: str) -> models.User:
    """A user of the tenant whose keys and tokens the admin may change (never a site admin's,
    but for a site admin), as the API's ``_managed_user``."""
    person = users.get_user(view.session, admin_tenant(view, tenant), user)
    rules.check_self_or_manager(view.principal, person.id, person.tenant_id, person.role)
    return person


class UserAdmin(Page):
    def get(self, view: View, tenant: str, user: str) -> None:
        show_user(view, users.get_user(view.session, admin_tenant(view, tenant), user))


def _state(user: models.User) -> str:
    return next(state for state, disabled in STATES.items() if disabled == user.disabled)


def show_user(view: View, person: models.User, status: int = 200, **values: Any) -> None:
    forms = {"key_form": Form("add-key", "key"), "token_form": Form("new-token", "name"), "new_token": None,
             "change_form": Form("change-user", "role", {"role": person.role, "state": _state(person)}),
             **values}
    view.render("admin_user.html", status, tenant=person.tenant, user=person, base=_user_base(person),
                scopes=tokens.TOKEN_SCOPES, roles=_assignable_roles(view), states=list(STATES),
                keys=list(view.session.scalars(keys.user_keys_query(person).order_by(models.PublicKey.id))),
                tokens=list(view.session.scalars(tokens.tokens_query(person).order_by(models.ApiToken.id))),
                **forms)


class UserForm(CreateForm):
    """A form of a user's page (the admins who manage that user); refused, that page again."""

    show = staticmethod(show_user)

    def owner(self, view: View, **params: Any) -> models.User:
        return managed_user(view, params["tenant"], params["user"])


class ChangeUser(UserForm):
    """As the API's ``PATCH …/users/{user}``: a role the admin may give, and active or disabled
    (a disabled user's keys and tokens stop working at once). Only who manages the user: never
    a site admin, but by a site admin (as the API)."""

    FORM = ("change-user", "role", CHANGE_FIELDS)
    SHOWN_AS = "change_form"

    def owner(self, view: View, **params: Any) -> models.User:
        person = users.get_user(view.session, admin_tenant(view, params["tenant"]), params["user"])
        rules.check_user_manageable(view.principal, person.tenant_id, person.role)
        return person

    def create(self, view: View, owner: models.User, form: Form) -> models.User:
        state = form.value("state")
        if state not in STATES:
            raise InvalidInput(f"state must be one of {', '.join(STATES)}", field="state")
        rules.check_role_assignable(view.principal, form.value("role"))
        return users.update_user(view.session, owner, role=form.value("role"), disabled=STATES[state])

    def made(self, view: View, owner: models.User, made: models.User) -> None:
        done(view, f"changed user {owner.tenant.name}/{owner.name}: {made.role}, {_state(made)}", _user_base(owner))


class AddKey(UserForm):
    """As the API's ``POST …/keys``: one public key (an ``authorized_keys`` line) and a title."""

    FORM = ("add-key", "key", KEY_FIELDS)
    SHOWN_AS = "key_form"

    def create(self, view: View, owner: models.User, form: Form) -> models.PublicKey:
        return keys.add_user_key(view.session, owner, form.value("key").strip(), form.value("title").strip())

    def made(self, view: View, owner: models.User, made: models.PublicKey) -> None:
        done(view, f"added key {made.fingerprint} to {owner.tenant.name}/{owner.name}", _user_base(owner))


class CreateToken(UserForm):
    """As the API's ``POST …/tokens`` (admin.minting): the new token's secret is shown on the
    answer to this POST only (the page is ``no-store``); it is never stored, nor shown again."""

    FORM = ("new-token", "name", TOKEN_FIELDS)
    SHOWN_AS = "token_form"

    def create(self, view: View, owner: models.User, form: Form) -> tuple[models.ApiToken, str]:
        return minting.mint_token(view.session, view.principal, owner, name=form.value("name").strip(),
                                  scopes=view.form_all("scopes"), expires=form.value("expires_at").strip() or None)

    def made(self, view: View, owner: models.User, made: tuple[models.ApiToken, str]) -> None:
        token, secret = made
        audit(view, f"created API token {token.id} of {owner.tenant.name}/{owner.name} ({token.scopes})")
        show_user(view, owner, 201, new_token={"id": token.id, "secret": secret})


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
        done(view, f"{self.item.what} {item_id} of {person.tenant.name}/{person.name}", _user_base(person))
