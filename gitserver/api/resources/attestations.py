"""``GET …/repos/{repo}/attestations/{commit}``: a commit's attestations as an in-toto bundle
(docs/provenance.md): one DSSE envelope per line, the same lines as its git note in
``refs/notes/attestations``. Readable by whoever may read the repository (anonymous callers
too, for a public one), like the note itself."""

from __future__ import annotations

import re
from typing import Any

import falcon

from gitserver.api import openapi as oa
from gitserver.api.auth import authenticated
from gitserver.api.context import ApiContext
from gitserver.api.lookup import visible_repo
from gitserver.api.paths import REPO, REPO_PARAM, TENANT_PARAM
from gitserver.policy import access
from gitserver.policy.errors import InvalidInput, NotFound
from gitserver.provenance import attest

ATTESTATIONS = f"{REPO}/attestations/{{commit}}"
TAG = "provenance"
_COMMIT_RE = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
COMMIT_PARAM = oa.path_param("commit", "the full commit id", {"type": "string", "pattern": _COMMIT_RE.pattern})


class Attestations:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str, commit: str) -> None:
        if not _COMMIT_RE.match(commit):
            raise InvalidInput("commit must be a full commit id (40 or 64 lower-case hex digits)", field="commit")
        with authenticated(self.ctx.runtime.sessions, req, optional=True) as (session, principal):
            row = visible_repo(session, principal, tenant, repo, need=access.READ)
            path = self.ctx.runtime.store.path(row.tenant.name, row.name)
        bundle = attest.read_bundle(path, commit)
        if bundle is None:
            raise NotFound(f"no attestations for commit {commit} in {tenant}/{repo}")
        resp.content_type = attest.BUNDLE_MEDIA_TYPE
        resp.text = bundle


def add_routes(app: falcon.App, ctx: ApiContext) -> None:
    app.add_route(ATTESTATIONS, Attestations(ctx))


_BUNDLE = {"description": "In-toto bundle: one DSSE envelope (JSON) per line, source provenance and a "
                          "Source VSA per accepted update that set the commit",
           "content": {attest.BUNDLE_MEDIA_TYPE: {"schema": {"type": "string"}}}}

OPENAPI_PATHS: dict[str, Any] = {
    ATTESTATIONS: {
        "parameters": [TENANT_PARAM, REPO_PARAM, COMMIT_PARAM],
        "get": oa.op("getAttestations", "A commit's signed attestations (in-toto bundle)", TAG, {200: _BUNDLE},
                     errors=(400, 401, 403, 404), public=True),
    },
}
