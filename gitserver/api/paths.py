"""The URL templates, path parameters and path builders more than one resource module uses,
declared once: a resource nested under another (a repository's webhooks, a group's members)
names its parent's path from here, not from the sibling module."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import falcon

from gitserver.api import openapi as oa
from gitserver.api.context import ApiContext
from gitserver.policy.names import NAME_PATTERN

API = "/api/v1"
TENANTS = f"{API}/tenants"
TENANT = f"{TENANTS}/{{tenant}}"
REPOS = f"{TENANT}/repos"
REPO = f"{REPOS}/{{repo}}"
# Ids are bounded so an absurd number in a URL is a 404, never an integer overflow in SQL.
ID_CONVERTER = "int(min=1, max=2147483647)"
ID_SCHEMA: dict[str, Any] = {"type": "integer", "minimum": 1, "maximum": 2147483647}
NAME_SCHEMA: dict[str, Any] = {"type": "string", "pattern": NAME_PATTERN, "maxLength": 100}
# A user of a tenant: its keys, tokens, emails, signing keys and certificate principals hang below.
USER = f"{TENANT}/users/{{user}}"

TENANT_PARAM = oa.path_param("tenant", "tenant name", NAME_SCHEMA)
USER_PARAM = oa.path_param("user", "user name", NAME_SCHEMA)
GROUP_PARAM = oa.path_param("group", "group name", NAME_SCHEMA)
REPO_PARAM = oa.path_param("repo", "repository name (without .git)", NAME_SCHEMA)


def tenant_path(tenant: str) -> str:
    return f"{TENANTS}/{tenant}"


def repo_path(tenant: str, repo: str) -> str:
    return f"{tenant_path(tenant)}/repos/{repo}"


def mount(app: falcon.App, ctx: ApiContext, routes: Iterable[tuple[str, Callable[[ApiContext], object]]]) -> None:
    """Add a route module's resources: each (URL template, resource class), made with ``ctx``."""
    for template, resource in routes:
        app.add_route(template, resource(ctx))
