"""Reqour's REST API (pnc-api ``org.jboss.pnc.api.reqour.dto``) as a second face of the Repour
operations: pure translations of request bodies into Repour's and of results into Reqour's.

Reqour, Repour's successor, serves the same paths (/clone, /adjust, /internal-scm,
/external-to-internal) with the same operations; what differs is the spelling (``internalUrl``
with ``readonlyUrl``/``readwriteUrl``, ``buildConfigParameters``, ``pncDefaultAlignmentParameters``),
that every work request is asynchronous (``taskId`` and a pnc-api ``Request`` callback are
required), and the result shapes (``AdjustResponse``, ``RepositoryCloneResponse``,
``InternalSCMCreationResponse``) whose ``callback`` is a ``ReqourCallback``
``{"status": SUCCESS|FAILED|SYSTEM_ERROR|CANCELLED, "id": <taskId>, "exceptionResolution"}``.
So a Reqour body is recognised (:func:`is_reqour_body`), turned into the Repour spec the
operations already run (:func:`to_repour_spec`), and the outcome turned back
(:func:`callback_body`). /cancel takes ``{"taskId", "callback"}`` in the body.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gitserver.repour.records import RepourOp

FACE = "reqour"
SUCCESS, FAILED, SYSTEM_ERROR, CANCELLED = "SUCCESS", "FAILED", "SYSTEM_ERROR", "CANCELLED"
# Reqour's proposals, as its endpoints word them.
_PROPOSAL_FAILED = "Check the request (ref, parameters, repository state); the reason says what went wrong"
_PROPOSAL_SYSTEM = "There is an internal system error, please contact the gitserver administrators"


def is_reqour_body(op_name: str, body: Any) -> bool:
    """Whether ``body`` is Reqour's spelling of ``op_name``'s request (keys only Reqour uses)."""
    if not isinstance(body, Mapping):
        return False
    if op_name == RepourOp.ADJUST:
        return "internalUrl" in body
    if op_name == RepourOp.CLONE:
        return "type" not in body and "taskId" in body
    if op_name == RepourOp.INTERNAL_SCM:
        return "owner_groups" not in body and "taskId" in body
    if op_name == RepourOp.EXTERNAL_TO_INTERNAL:
        return "externalUrl" in body
    return False


def to_repour_spec(op_name: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """The Repour request a Reqour request means (``heartbeatConfig`` is kept: the adjust
    sends its heartbeats, :mod:`gitserver.pipelines.heartbeat`); unknown keys stay, so the
    Repour schema names them."""
    spec = dict(body)
    if op_name == RepourOp.ADJUST:
        urls = spec.pop("internalUrl", None)
        if isinstance(urls, Mapping):
            spec["internal_url"] = {"readwrite": urls.get("readwriteUrl"), "readonly": urls.get("readonlyUrl")}
        else:
            spec["internal_url"] = urls
        for reqour_key, repour_key in (("buildConfigParameters", "adjustParameters"),
                                       ("pncDefaultAlignmentParameters", "defaultAlignmentParams")):
            if reqour_key in spec:
                value = spec.pop(reqour_key)
                if value is not None:
                    spec[repour_key] = value
    elif op_name == RepourOp.CLONE:
        spec["type"] = "git"
    elif op_name == RepourOp.INTERNAL_SCM:
        spec.setdefault("owner_groups", [])
    elif op_name == RepourOp.EXTERNAL_TO_INTERNAL:
        spec = {"external_url": spec.pop("externalUrl"), **{k: v for k, v in spec.items()}}
    return spec


def result_status(status: int | None) -> str:
    if status is None:
        return CANCELLED
    if status == 200:
        return SUCCESS
    return SYSTEM_ERROR if status >= 500 else FAILED


def reqour_callback(status: int | None, task_id: str | None, body: Mapping[str, Any]) -> dict[str, Any]:
    """pnc-api ``ReqourCallback``: the id is the request's taskId, as Reqour sends it."""
    out: dict[str, Any] = {"status": result_status(status), "id": task_id}
    if status != 200:
        reason = str(body.get("desc") or body.get("error_type") or "the operation failed")
        out["exceptionResolution"] = {"reason": reason,
                                      "proposal": _PROPOSAL_SYSTEM if status is None or status >= 500
                                      else _PROPOSAL_FAILED}
    return out


def execution_root_name(gav: Mapping[str, Any], build_type: str) -> str | None:
    """Reqour's ``executionRootName``: ``groupId:artifactId`` (artifactId alone without a
    groupId); npm names lose ``@``, ``/`` becomes ``-`` and ``-npm`` is appended (NpmProvider)."""
    group, artifact = gav.get("groupId"), gav.get("artifactId")
    if not isinstance(artifact, str):
        return None
    if build_type in ("NPM", "NODEJS"):
        return artifact.replace("@", "").replace("/", "-") + "-npm"
    return f"{group}:{artifact}" if isinstance(group, str) and group else artifact


def manipulator_result(result_data: Mapping[str, Any], build_type: str) -> dict[str, Any]:
    """pnc-api ``ManipulatorResult`` from Repour's ``adjustResultData``."""
    state = result_data.get("VersioningState")
    gav = state.get("executionRootModified") if isinstance(state, Mapping) else None
    versioning = None
    if isinstance(gav, Mapping):
        versioning = {"executionRootName": execution_root_name(gav, build_type),
                      "executionRootVersion": gav.get("version")}
    removed = result_data.get("RemovedRepositories")
    return {"versioningState": versioning, "removedRepositories": list(removed) if isinstance(removed, list) else []}


def callback_body(op_name: str, spec: Mapping[str, Any], status: int | None,
                  body: Mapping[str, Any]) -> dict[str, Any]:
    """What Reqour sends to the callback for a Repour-style outcome ``(status, body)`` of the
    request ``spec`` (already in Repour's spelling)."""
    callback = reqour_callback(status, spec.get("taskId"), body)
    ok = status == 200
    if op_name == RepourOp.ADJUST:
        given = spec.get("internal_url")
        urls: Mapping[str, Any] = given if isinstance(given, Mapping) else {}
        out: dict[str, Any] = {"internalUrl": {"readonlyUrl": urls.get("readonly"),
                                               "readwriteUrl": urls.get("readwrite")}, "callback": callback}
        if ok:
            out.update({"tag": body.get("tag"), "downstreamCommit": body.get("commit"),
                        "upstreamCommit": body.get("upstream_commit"),
                        "isRefRevisionInternal": body.get("is_ref_revision_internal"),
                        "manipulatorResult": manipulator_result(body.get("adjustResultData") or {},
                                                                str(spec.get("buildType") or "MVN"))})
        return out
    if op_name == RepourOp.CLONE:
        return {"originRepoUrl": spec.get("originRepoUrl"), "targetRepoUrl": spec.get("targetRepoUrl"),
                "ref": spec.get("ref"), "callback": callback}
    if op_name == RepourOp.INTERNAL_SCM:
        return {"readonlyUrl": body.get("readonly_url"), "readwriteUrl": body.get("readwrite_url"),
                "status": body.get("status") if ok else "FAILED", "callback": callback}
    if op_name == RepourOp.CANCEL:
        return {"callback": callback}
    raise ValueError(f"no Reqour response for {op_name!r}")
