"""What most resources' handlers do alike, written once: a GET that answers a page of the
objects under the one the URL names (:func:`listing`), and the answer to a POST that made one
(:func:`created`).

A resource declares a list from its parts, as a table row: ``on_get = listing(visible_tenant,
groups.groups_query, models.Group.id, group_json)`` reads "a page of the groups of the tenant
the caller can see, by id, each as its JSON".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import falcon
from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute

from gitserver.api.auth import authenticated
from gitserver.api.context import Resource
from gitserver.api.paging import page

# A falcon responder as a resource class holds it: (resource, req, resp, **URL fields).
Responder = Callable[..., None]


def listing(parent: Callable[..., Any], query: Callable[[Any], Select[Any]], order: InstrumentedAttribute[int],
            render: Callable[[Any], Any], *, descending: bool = False) -> Responder:
    """An ``on_get`` answering a page (:func:`gitserver.api.paging.page`) of ``query(row)``,
    ordered and cut on ``order``, each item ``render(item)``.

    ``row`` is ``parent(session, principal, **fields)``, called with the URL's fields by name
    (``tenant``, ``user``, …): the lookup that answers 404 for what the caller may not see and
    403 for what it may see but not list.
    """

    def on_get(resource: Resource, req: falcon.Request, resp: falcon.Response, **fields: Any) -> None:
        with authenticated(resource.ctx.runtime.sessions, req) as (session, principal):
            row = parent(session, principal, **fields)
            resp.media = page(session, query(row), order, req, serialize=render, descending=descending)

    return on_get


def created(resp: falcon.Response, location: str) -> None:
    """Answer 201 with the new object's ``location``: called once the transaction committed,
    since only then does the object exist (the body was rendered inside it)."""
    resp.status = falcon.HTTP_201
    resp.location = location
