"""The rules pages (docs/ref-rules.md, docs/console.md): a repository's rule list in force
(its id, where it is set, who changed it and when, each rule in words) and its history, and a
tenant's default rules. Their admins replace a list through a form holding the JSON array;
it goes through ``admin.refrules.set_rules``, as the API's ``PUT``, under the API's access
rule: readers of the repository (members of the tenant) read, its admins (the tenant's) change.
A bad list is answered 400 on the same page, naming the field, and the old list stays."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from gitserver.admin import refrules
from gitserver.console import rule_view, security
from gitserver.console.repo_pages import granted, page_values
from gitserver.console.web import Page, View
from gitserver.db import models
from gitserver.db.refrule_models import RuleSet
from gitserver.policy import access
from gitserver.policy.errors import Forbidden, InvalidInput, NotFound

HISTORY_SHOWN = 50
MAX_NAME = 100
RULES_FIELD = "rules"  # the form's textarea; also the field a bad list's error names
TEMPLATE = "rules.html"


def member_tenant(view: View, tenant: str) -> models.Tenant:
    """The tenant when the viewer is one of its members (or a site admin); 404 otherwise, as a
    missing one (the API's ``visible_tenant``)."""
    row = view.session.scalar(select(models.Tenant).where(models.Tenant.name == tenant[:MAX_NAME]))
    if row is None or not (view.principal.is_site_admin or view.principal.tenant_id == row.id):
        raise NotFound(f"tenant {tenant[:100]!r} not found")
    return row


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not valid JSON")


def parse_list(text: str) -> Any:
    """The textarea's JSON, or InvalidInput naming ``rules``. Its shape is checked by
    ``set_rules`` (which takes unchecked input: the console has no API schema)."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError as exc:
        raise InvalidInput(f"{RULES_FIELD} is nested too deeply", field=RULES_FIELD) from exc
    except ValueError as exc:
        raise InvalidInput(f"{RULES_FIELD} is not valid JSON: {exc}", field=RULES_FIELD) from exc


def _version(view: View, row: RuleSet) -> dict[str, Any]:
    repo = view.session.get(models.Repository, row.repo_id) if row.repo_id is not None else None
    return {"id": refrules.rule_set_id(row), "changed_by": row.changed_by, "created_at": row.created_at,
            "previous": f"{refrules.RULE_SET_PREFIX}{row.previous_id}" if row.previous_id is not None else None,
            "repo": repo.name if repo is not None else None,
            "rules": rule_view.describe_all(json.loads(row.rules))}


def rules_values(view: View, tenant: models.Tenant, repo: models.Repository | None, *, can_change: bool,
                 action: str, draft: str | None = None, problem: InvalidInput | None = None) -> dict[str, Any]:
    """What ``rules.html`` shows: the list in force, its history, and (for admins) the form,
    holding ``draft`` (a refused list, as typed) or else the list in force (for a repository
    on its tenant's defaults, those: saving them makes them its own)."""
    held = refrules.in_force(view.session, tenant, repo)
    history = view.session.scalars(refrules.history_query(tenant, repo).order_by(RuleSet.id.desc())
                                   .limit(HISTORY_SHOWN + 1))
    versions = [_version(view, row) for row in history]
    return {"tenant": tenant, "held": held, "held_id": refrules.rule_set_id(held.row) if held.row else None,
            "shown": rule_view.describe_all(held.rules), "versions": versions[:HISTORY_SHOWN],
            "more_history": len(versions) > HISTORY_SHOWN, "can_change": can_change, "action": action,
            "draft": draft if draft is not None else rule_view.as_json(held.rules),
            "problem": problem, "rules_field": RULES_FIELD, "repo_page": repo is not None,
            "tenant_rules_url": tenant_rules_url(tenant)}


def tenant_rules_url(tenant: models.Tenant) -> str:
    return f"{security.CONSOLE_PREFIX}/-/rules/{tenant.name}"


def _replace(view: View, tenant: models.Tenant, repo: models.Repository | None) -> InvalidInput | None:
    """Set the form's list; the refusal (nothing stored: ``set_rules`` checks the whole list
    before it writes) or None."""
    try:
        refrules.set_rules(view.session, tenant, repo, parse_list(view.form(RULES_FIELD)), view.principal)
    except InvalidInput as exc:
        return exc
    return None


class RepoRules(Page):
    """``/ui/<tenant>/<repo>/rules``: readers see the list and its history, admins change it."""

    def _show(self, view: View, tenant: str, repo: str, status: int = 200, **form: Any) -> None:
        opened = granted(view, tenant, repo)
        can_change = opened.permission == access.ADMIN
        values = rules_values(view, opened.row.tenant, opened.row, can_change=can_change,
                              action=f"{opened.base}/rules", **form)
        view.render(TEMPLATE, status, **page_values(view, opened, **values))

    def get(self, view: View, tenant: str, repo: str) -> None:
        self._show(view, tenant, repo)

    def post(self, view: View, tenant: str, repo: str) -> None:
        opened = granted(view, tenant, repo, access.ADMIN)
        problem = _replace(view, opened.row.tenant, opened.row)
        if problem is None:
            view.redirect(f"{opened.base}/rules")
            return
        self._show(view, tenant, repo, problem.status, draft=view.form(RULES_FIELD), problem=problem)


class TenantRules(Page):
    """``/ui/-/rules/<tenant>``: the defaults of every repository without a list of its own;
    members read them, the tenant's admins change them."""

    def _show(self, view: View, tenant: models.Tenant, status: int = 200, **form: Any) -> None:
        values = rules_values(view, tenant, None, can_change=view.principal.is_tenant_admin(tenant.id),
                              action=tenant_rules_url(tenant), **form)
        view.render(TEMPLATE, status, **values)

    def get(self, view: View, tenant: str) -> None:
        self._show(view, member_tenant(view, tenant))

    def post(self, view: View, tenant: str) -> None:
        row = member_tenant(view, tenant)
        if not view.principal.is_tenant_admin(row.id):
            raise Forbidden(f"only the admins of tenant {row.name!r} may change its rules")
        access.require_scope(view.principal, access.ADMIN)
        problem = _replace(view, row, None)
        if problem is None:
            view.redirect(tenant_rules_url(row))
            return
        self._show(view, row, problem.status, draft=view.form(RULES_FIELD), problem=problem)
