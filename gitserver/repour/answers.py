"""The JSON objects the Repour-compatible endpoints answer with (Repour's own field names),
each declared once as a :class:`~gitserver.jsonshape.Shape`: the handlers render them and the
OpenAPI document shows their schemas (:mod:`gitserver.repour.resources`)."""

from __future__ import annotations

from typing import Any

from gitserver.jsonshape import BOOLEAN, NULLABLE_STRING, STRING, Out, Shape, enum, nested

SUCCESS_CREATED = "SUCCESS_CREATED"
SUCCESS_ALREADY_EXISTS = "SUCCESS_ALREADY_EXISTS"

VERSION = Shape("RepourVersion", {
    "name": Out(STRING, given=True), "version": Out(STRING, given=True), "commit": Out(STRING, given=True),
    "builtOn": Out(NULLABLE_STRING, given=True), "components": Out({"type": "array"}, given=True)})
EXTERNAL_TO_INTERNAL = Shape("RepourExternalToInternal", {
    "external_url": Out(STRING, given=True), "internal_url": Out(STRING, given=True)})
_CALLBACK = Shape("RepourCallbackId", {"id": Out(STRING, given=True)})
CALLBACK_ACCEPTED = Shape("RepourCallbackAccepted", {"callback": nested(_CALLBACK, given=True)})
_URLS = Shape("RepourUrls", {"readwrite": Out(STRING, given=True), "readonly": Out(STRING, given=True)})
ADJUST_RESULT = Shape("RepourAdjustResult", {
    "tag": Out(STRING, given=True), "commit": Out(STRING, given=True), "url": nested(_URLS, given=True),
    "upstream_commit": Out(STRING, given=True), "is_ref_revision_internal": Out(BOOLEAN, given=True),
    "adjustResultData": Out({"type": "object"}, given=True)})
INTERNAL_SCM_RESULT = Shape("RepourInternalScmResult", {
    "status": Out(enum([SUCCESS_CREATED, SUCCESS_ALREADY_EXISTS]), given=True),
    "readonly_url": Out(STRING, given=True), "readwrite_url": Out(STRING, given=True)})


def callback_accepted(callback_id: str) -> dict[str, Any]:
    """The 202 of callback mode: the result goes to the callback URL later."""
    return CALLBACK_ACCEPTED.render(callback=_CALLBACK.render(id=callback_id))


def adjust_result(*, tag: str, commit: str, internal_url: dict[str, str], upstream_commit: str,
                  internal: bool, result_data: dict[str, Any]) -> dict[str, Any]:
    """``internal_url`` is the caller's own (the URLs PNC stored), as Repour answers."""
    return ADJUST_RESULT.render(tag=tag, commit=commit,
                                url=_URLS.render(readwrite=internal_url["readwrite"],
                                                 readonly=internal_url["readonly"]),
                                upstream_commit=upstream_commit, is_ref_revision_internal=internal,
                                adjustResultData=result_data)
