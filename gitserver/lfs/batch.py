"""The batch API's request and answer (git-lfs's ``docs/api/batch.md``), as pure functions.

A request names an operation and objects; the answer gives each object its actions (basic
transfer: ``upload`` + ``verify``, or ``download``), nothing for an upload the repository
already holds, or a per-object error. Both fronts use this: the HTTP batch endpoint with JSON,
the pure SSH protocol (gitserver.lfs.transfer) with its own lines.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from gitserver.lfs import oids
from gitserver.lfs.tokens import DOWNLOAD, OPERATIONS, UPLOAD
from gitserver.policy.errors import InvalidInput

MEDIA_TYPE = "application/vnd.git-lfs+json"
BASIC = "basic"
# The most objects one batch may name (git-lfs sends 100 at a time by default).
MAX_OBJECTS = 1000
# A ref name as a lock keeps it (its column's width).
MAX_REF_NAME = 1024
# Per-object error codes of batch.md.
MISSING = 404
INVALID = 422


@dataclasses.dataclass(frozen=True)
class Pointer:
    """An object as a batch request or a pointer file names it: its sha256 and its size."""

    oid: str
    size: int


@dataclasses.dataclass(frozen=True)
class BatchRequest:
    operation: str
    objects: tuple[Pointer, ...]
    ref: str | None = None


@dataclasses.dataclass(frozen=True)
class Action:
    """One action of one object: where to send it and the header that authorises it."""

    href: str
    header: Mapping[str, str]
    expires_in: int

    def json(self) -> dict[str, Any]:
        return {"href": self.href, "header": dict(self.header), "expires_in": self.expires_in}


def parse_request(body: object) -> BatchRequest:
    """A batch request body, checked field by field (InvalidInput names the field)."""
    if not isinstance(body, dict):
        raise InvalidInput("the batch request must be a JSON object")
    operation = body.get("operation")
    if operation not in OPERATIONS:
        raise InvalidInput("operation must be 'upload' or 'download'", field="operation")
    transfers = body.get("transfers", [BASIC])
    if not isinstance(transfers, list) or BASIC not in transfers:
        raise InvalidInput("transfers must include 'basic', the only adapter served", field="transfers")
    algo = body.get("hash_algo", oids.HASH_ALGO)
    if algo != oids.HASH_ALGO:
        raise InvalidInput("hash_algo must be 'sha256'", field="hash_algo")
    objects = body.get("objects")
    if not isinstance(objects, list) or not objects:
        raise InvalidInput("objects must be a non-empty list of {oid, size}", field="objects")
    if len(objects) > MAX_OBJECTS:
        raise InvalidInput(f"at most {MAX_OBJECTS} objects per batch", field="objects")
    return BatchRequest(operation, tuple(_pointer(o, i) for i, o in enumerate(objects)),
                        parse_ref(body.get("ref")))


def _pointer(item: object, index: int) -> Pointer:
    if not isinstance(item, dict):
        raise InvalidInput("each object must be {oid, size}", field=f"objects[{index}]")
    return Pointer(oids.check_oid(item.get("oid"), f"objects[{index}].oid"),
                   oids.check_size(item.get("size"), f"objects[{index}].size"))


def parse_ref(ref: object) -> str | None:
    """The ``ref`` of a batch or lock request (``{"name": "refs/heads/…"}``), or None."""
    if ref is None:
        return None
    name = ref.get("name") if isinstance(ref, dict) else None
    if not isinstance(name, str) or len(name) > MAX_REF_NAME:
        raise InvalidInput(f"ref.name must be a ref name of at most {MAX_REF_NAME} characters "
                           "(ref is {\"name\": \"refs/heads/…\"})", field="ref.name")
    return name


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What the server decided for one object: its actions, or an error, or neither (an
    upload the repository already has)."""

    pointer: Pointer
    actions: Mapping[str, Action] = dataclasses.field(default_factory=dict)
    error: tuple[int, str] | None = None

    def json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"oid": self.pointer.oid, "size": self.pointer.size, "authenticated": True}
        if self.error is not None:
            out["error"] = {"code": self.error[0], "message": self.error[1]}
        elif self.actions:
            out["actions"] = {name: action.json() for name, action in self.actions.items()}
        return out


ActionsFor = Callable[[Pointer], dict[str, Action]]


def decide(request: BatchRequest, held: Mapping[str, int], actions_for: ActionsFor,
           refusal: Callable[[Pointer], str | None]) -> list[Outcome]:
    """Each object's outcome. ``held``: oid → size of the objects the repository has;
    ``actions_for``: the upload or download actions of a pointer; ``refusal``: why an upload
    of that pointer is refused (a limit), or None."""
    outcomes = []
    for pointer in request.objects:
        size = held.get(pointer.oid)
        if request.operation == DOWNLOAD:
            if size is None:
                outcomes.append(Outcome(pointer, error=(MISSING, f"object {pointer.oid} not found in this repository")))
            else:
                outcomes.append(Outcome(Pointer(pointer.oid, size), actions_for(Pointer(pointer.oid, size))))
        elif size is not None:
            outcomes.append(Outcome(Pointer(pointer.oid, size)))  # already there: nothing to send
        else:
            why = refusal(pointer)
            outcomes.append(Outcome(pointer, error=(INVALID, why)) if why else Outcome(pointer, actions_for(pointer)))
    return outcomes


def answer_json(outcomes: list[Outcome]) -> dict[str, Any]:
    return {"transfer": BASIC, "objects": [o.json() for o in outcomes], "hash_algo": oids.HASH_ALGO}


def upload_size(request: BatchRequest, held: Mapping[str, int]) -> int:
    """Bytes the request would add to the repository (each new object once)."""
    seen: dict[str, int] = {}
    for p in request.objects:
        if p.oid not in held:
            seen[p.oid] = p.size
    return sum(seen.values())


__all__ = ["DOWNLOAD", "UPLOAD", "Action", "BatchRequest", "Outcome", "Pointer", "answer_json",
           "decide", "parse_request", "upload_size"]
