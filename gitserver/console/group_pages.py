"""A group's page, for its tenant's admins: its members, added and removed through forms with
the API's ``admin.groups`` functions (as ``PUT`` and ``DELETE …/groups/{group}/members/{user}``).
A non-admin gets 403, another tenant's admin 404 (gitserver.console.admin_pages.admin_tenant).
"""

from __future__ import annotations

from typing import Any

from gitserver.admin import groups, users
from gitserver.console.admin_pages import admin_tenant, tenant_base
from gitserver.console.forms import CreateForm, Form, done
from gitserver.console.web import Page, View
from gitserver.db import models
from gitserver.policy.errors import NotFound

MEMBER_FIELDS = ("user",)


def admin_group(view: View, tenant: str, group: str) -> models.Group:
    return groups.get_group(view.session, admin_tenant(view, tenant), group)


def _group_base(group: models.Group) -> str:
    return f"{tenant_base(group.tenant)}/groups/{group.name}"


class GroupAdmin(Page):
    def get(self, view: View, tenant: str, group: str) -> None:
        show_group(view, admin_group(view, tenant, group))


def show_group(view: View, group: models.Group, status: int = 200, member_form: Form | None = None) -> None:
    view.render("admin_group.html", status, tenant=group.tenant, group=group, base=_group_base(group),
                tenant_base=tenant_base(group.tenant),
                members=list(view.session.scalars(groups.members_query(group).order_by(models.User.name))),
                member_form=member_form or Form("add-member", "user"))


def _typed_member(view: View, group: models.Group, name: str) -> models.User:
    """The user named in the form: a name naming nobody is answered beside the field."""
    try:
        return users.get_user(view.session, group.tenant, name)
    except NotFound as exc:
        raise NotFound(exc.message, field="user") from exc


class AddMember(CreateForm):
    FORM = ("add-member", "user", MEMBER_FIELDS)
    SHOWN_AS = "member_form"
    show = staticmethod(show_group)

    def owner(self, view: View, **params: Any) -> models.Group:
        return admin_group(view, params["tenant"], params["group"])

    def create(self, view: View, owner: models.Group, form: Form) -> models.User:
        member = _typed_member(view, owner, form.value("user").strip())
        groups.add_member(view.session, owner, member)
        return member

    def made(self, view: View, owner: models.Group, made: models.User) -> None:
        done(view, f"added {made.name} to group {owner.tenant.name}/{owner.name}", _group_base(owner))


class RemoveMember(Page):
    def post(self, view: View, tenant: str, group: str, user: str) -> None:
        row = admin_group(view, tenant, group)
        groups.remove_member(view.session, row, users.get_user(view.session, row.tenant, user))
        done(view, f"removed {user[:100]} from group {row.tenant.name}/{row.name}", _group_base(row))
