"""Git LFS file locks over HTTP, as git-lfs's ``docs/api/locking.md`` has them.

``POST …/info/lfs/locks`` → 201 ``{"lock"}`` (409 ``{"lock", "message"}`` when the path is
locked already); ``GET …/locks`` → ``{"locks", "next_cursor"}``; ``POST …/locks/verify`` →
``{"ours", "theirs", "next_cursor"}``; ``POST …/locks/{id}/unlock`` → 200 ``{"lock"}`` (403 for
another's lock without ``force``, or with it but without admin permission). Listing needs
read permission, the rest write. The rules are gitserver.lfs.locks'.
"""

from __future__ import annotations

from typing import Any

import falcon
from sqlalchemy.orm import Session

from gitserver.api.context import ApiContext
from gitserver.api.lfs import (
    ERRORS,
    MEDIA_TYPE,
    PATH_PARAMETERS,
    PREFIXES,
    SECURITY,
    authorise,
    lfs_errors,
    lfs_json,
    read_json,
    send_json,
    service,
)
from gitserver.db import models
from gitserver.db.session import transaction
from gitserver.lfs import batch, locks
from gitserver.lfs.tokens import DOWNLOAD, UPLOAD
from gitserver.policy.errors import InvalidInput

LOCKS = "/locks"
VERIFY = "/locks/verify"
UNLOCK = "/locks/{lock_id}/unlock"


def _body(req: falcon.Request) -> dict[str, Any]:
    body = read_json(req)
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise InvalidInput("the request body must be a JSON object")
    return body




class _Resource:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    def repository(self, req: falcon.Request, session: Session, tenant: str, repo: str,
                   operation: str) -> tuple[Any, models.Repository]:
        """The caller's access to the repository for ``operation``, and its row."""
        target, _ = authorise(req, session, service(self.ctx), tenant, repo, operation)
        row = session.get(models.Repository, target.repo_id)
        assert row is not None
        return target, row


class Locks(_Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str) -> None:
        with lfs_errors(resp):
            with transaction(self.ctx.runtime.sessions) as session:
                _target, row = self.repository(req, session, tenant, repo, DOWNLOAD)
                page = locks.listing(session, row, path=req.get_param("path"), lock_id=req.get_param("id"),
                                     cursor=req.get_param("cursor"), limit=req.get_param("limit"))
                body: dict[str, Any] = {"locks": [locks.lock_json(lock) for lock in page.locks]}
            if page.next_cursor:
                body["next_cursor"] = page.next_cursor
            send_json(resp, body)

    def on_post(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str) -> None:
        with lfs_errors(resp):
            body = _body(req)
            with transaction(self.ctx.runtime.sessions) as session:
                target, row = self.repository(req, session, tenant, repo, UPLOAD)
                try:
                    lock = locks.create(session, target.principal, row, body.get("path"),
                                        batch.parse_ref(body.get("ref")))
                except locks.LockExists as exc:
                    send_json(resp, {"lock": locks.lock_json(exc.lock), "message": exc.message},
                              falcon.HTTP_409)
                    return
                answer = {"lock": locks.lock_json(lock)}
            send_json(resp, answer, falcon.HTTP_201)


class Verify(_Resource):
    def on_post(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str) -> None:
        with lfs_errors(resp):
            body = _body(req)
            with transaction(self.ctx.runtime.sessions) as session:
                target, row = self.repository(req, session, tenant, repo, UPLOAD)
                page = locks.listing(session, row, cursor=body.get("cursor"), limit=body.get("limit"))
                ours = [locks.lock_json(lk) for lk in page.locks if locks.is_ours(lk, target.principal)]
                theirs = [locks.lock_json(lk) for lk in page.locks if not locks.is_ours(lk, target.principal)]
            answer: dict[str, Any] = {"ours": ours, "theirs": theirs}
            if page.next_cursor:
                answer["next_cursor"] = page.next_cursor
            send_json(resp, answer)


class Unlock(_Resource):
    def on_post(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str, lock_id: str) -> None:
        with lfs_errors(resp):
            body = _body(req)
            force = body.get("force", False)
            if not isinstance(force, bool):
                raise InvalidInput("force must be true or false", field="force")
            with transaction(self.ctx.runtime.sessions) as session:
                target, row = self.repository(req, session, tenant, repo, UPLOAD)
                lock = locks.unlock(session, target.principal, row, lock_id, force)
                answer = {"lock": locks.lock_json(lock)}
            send_json(resp, answer)


def add_routes(app: falcon.App, ctx: ApiContext) -> None:
    for prefix in PREFIXES:
        app.add_route(prefix + LOCKS, Locks(ctx))
        app.add_route(prefix + VERIFY, Verify(ctx))
        app.add_route(prefix + UNLOCK, Unlock(ctx))


# --- OpenAPI ----------------------------------------------------------------------------------

_LOCK = {"type": "object", "required": ["id", "path", "locked_at", "owner"], "properties": {
    "id": {"type": "string"}, "path": {"type": "string"}, "locked_at": {"type": "string"},
    "owner": {"type": "object", "properties": {"name": {"type": "string"}}}}}
_LOCK_ANSWER = {"type": "object", "required": ["lock"], "properties": {"lock": _LOCK, "message": {"type": "string"}}}
_REF = {"type": "object", "properties": {"name": {"type": "string"}}}
_PAGE = {"cursor": {"type": "string"}, "limit": {"type": "integer", "minimum": 1, "maximum": locks.MAX_LIMIT}}


def _op(prefix: str, name: str, summary: str, ok: str, answer: dict[str, Any],
        body: dict[str, Any] | None = None, status: str = "200") -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": ("lfsGit" if prefix.startswith("/git/") else "lfs") + name,
                          "tags": ["lfs"], "security": SECURITY, "summary": summary,
                          "responses": {status: lfs_json(ok, answer), **ERRORS}}
    if body is not None:
        op["requestBody"] = {"required": False, "content": {MEDIA_TYPE: {"schema": body}}}
    return op


def _paths(prefix: str) -> dict[str, Any]:
    listing = {"type": "object", "properties": {"locks": {"type": "array", "items": _LOCK},
                                                "next_cursor": {"type": "string"}}}
    verify = {"type": "object", "properties": {"ours": {"type": "array", "items": _LOCK},
                                               "theirs": {"type": "array", "items": _LOCK},
                                               "next_cursor": {"type": "string"}}}
    create = _op(prefix, "LockCreate", "Lock a file", "The new lock.", _LOCK_ANSWER,
                 {"type": "object", "required": ["path"], "properties": {"path": {"type": "string"}, "ref": _REF}},
                 "201")
    create["responses"]["409"] = lfs_json("The path is locked already: that lock.", _LOCK_ANSWER)
    get = _op(prefix, "LockList", "List locks", "Locks, oldest first.", listing)
    get["parameters"] = [{"name": n, "in": "query", "required": False, "schema": {"type": "string"}}
                         for n in ("path", "id", "cursor", "limit", "refspec")]
    unlock = _op(prefix, "Unlock", "Unlock (force: another's lock, for the repository's admins)",
                 "The lock removed.", _LOCK_ANSWER,
                 {"type": "object", "properties": {"force": {"type": "boolean"}, "ref": _REF}})
    return {
        prefix + LOCKS: {"parameters": PATH_PARAMETERS, "get": get, "post": create},
        prefix + VERIFY: {"parameters": PATH_PARAMETERS, "post": _op(
            prefix, "LockVerify", "The locks of the repository, split into the caller's and others'",
            "ours and theirs.", verify, {"type": "object", "properties": {**_PAGE, "ref": _REF}})},
        prefix + UNLOCK: {"parameters": [*PATH_PARAMETERS, {"name": "lock_id", "in": "path", "required": True,
                                                            "schema": {"type": "string"}}],
                          "post": unlock},
    }


OPENAPI_PATHS: dict[str, Any] = {path: item for prefix in PREFIXES for path, item in _paths(prefix).items()}
