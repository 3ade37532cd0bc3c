"""A repository's access, for its admins: grants (given and removed through forms, never above
the admin's own permission) and deploy keys (added through a form, a writing one only by who
may give write; and removed), through the API's ``admin`` services and rules."""

from __future__ import annotations

from typing import Any

from gitserver.admin import deploy_keys, grants, groups, rules, users
from gitserver.console.admin_pages import MAX_ID
from gitserver.console.forms import CreateForm, Form, done
from gitserver.console.repo_pages import Opened, granted, page_values
from gitserver.console.web import Page, View
from gitserver.db import models
from gitserver.policy import access
from gitserver.policy.errors import InvalidInput

GRANTEE_KINDS = ("user", "group")
DEPLOY_KEY_FIELDS = ("key", "title", "write")
CHECKED = "on"  # what a browser sends for a ticked checkbox without a value


class RepoAccess(Page):
    def get(self, view: View, tenant: str, repo: str) -> None:
        show_access(view, granted(view, tenant, repo, access.ADMIN))


def show_access(view: View, opened: Opened, status: int = 200, deploy_form: Form | None = None) -> None:
    rows = []
    for grant in view.session.scalars(grants.grants_query(opened.row).order_by(models.Grant.id)):
        if grant.user_id is not None:
            who = view.session.get(models.User, grant.user_id)
            rows.append(("user", who.name if who else "?", grant.permission))
        else:
            group = view.session.get(models.Group, grant.group_id)
            rows.append(("group", group.name if group else "?", grant.permission))
    view.render("admin_repo.html", status, **page_values(
        view, opened, grants=rows, deploy_form=deploy_form or Form("new-deploy-key", "key"),
        deploy_keys=list(view.session.scalars(deploy_keys.deploy_keys_query(opened.row)
                                              .order_by(models.DeployKey.id)))))


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
        done(view, f"granted {permission} on {opened.row.full_name} to {view.form('kind')} {view.form('name')}",
             f"{opened.base}/access")


class RemoveGrant(Page):
    def post(self, view: View, tenant: str, repo: str) -> None:
        opened = granted(view, tenant, repo, access.ADMIN)
        grants.remove_grant(view.session, opened.row, **_grantee(view, opened.row.tenant))  # type: ignore[arg-type]
        done(view, f"removed the grant on {opened.row.full_name} of {view.form('kind')} {view.form('name')}",
             f"{opened.base}/access")


class AddDeployKey(CreateForm):
    """As the API's ``POST …/deploy-keys``: a key line, a title, read-only unless ``write``
    (which needs the right to give write)."""

    FORM = ("new-deploy-key", "key", DEPLOY_KEY_FIELDS)
    SHOWN_AS = "deploy_form"
    show = staticmethod(show_access)

    def owner(self, view: View, **params: Any) -> Opened:
        return granted(view, params["tenant"], params["repo"], access.ADMIN)

    def create(self, view: View, owner: Opened, form: Form) -> models.DeployKey:
        write = form.value("write") == CHECKED
        if write:
            rules.check_grantable(owner.permission, access.WRITE)
        return deploy_keys.add_deploy_key(view.session, owner.row, form.value("key").strip(),
                                          form.value("title").strip(), write)

    def made(self, view: View, owner: Opened, made: models.DeployKey) -> None:
        done(view, f"added deploy key {made.public_key.fingerprint} to {owner.row.full_name}"
                   f" ({'write' if made.write else 'read-only'})", f"{owner.base}/access#deploy-keys")


class RemoveDeployKey(Page):
    """As the API's ``DELETE …/deploy-keys/{id}``: the key stops working at once."""

    def post(self, view: View, tenant: str, repo: str, deploy_key_id: int) -> None:
        opened = granted(view, tenant, repo, access.ADMIN)
        deploy = deploy_keys.get_deploy_key(view.session, opened.row, min(deploy_key_id, MAX_ID))
        fingerprint = deploy.public_key.fingerprint
        deploy_keys.remove_deploy_key(view.session, deploy)
        done(view, f"removed deploy key {deploy_key_id} ({fingerprint}) of {opened.row.full_name}",
             f"{opened.base}/access#deploy-keys")
