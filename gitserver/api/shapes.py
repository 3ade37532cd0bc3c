"""The fields and shapes more than one resource module uses, declared once (request Fields and
response Outs alike), so that resources share them from here instead of borrowing them from
one another."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gitserver.admin import base
from gitserver.api.body import Field
from gitserver.api.response import BOOLEAN, DATETIME, INTEGER, NULLABLE_DATETIME, STRING, Out, Shape, enum
from gitserver.db import models
from gitserver.policy.names import NAME_PATTERN, validate_name

DESCRIPTION_FIELD = Field(str, max_length=2000)
# A new tenant's, user's, group's or repository's name (validate_name enforces the pattern).
NAME_FIELD = Field(str, required=True, check=validate_name, doc={"pattern": NAME_PATTERN, "maxLength": 100})

QUOTA_DESCRIPTION = "disk quota in bytes; pushes that would exceed it are refused; null: no quota"
QUOTA = Out({"type": ["integer", "null"], "minimum": 1, "maximum": base.MAX_QUOTA_BYTES}, QUOTA_DESCRIPTION,
            attr="quota_bytes")
# Measured on disk by the handler; lists leave it out (it costs a walk of the repositories).
SIZE = Out({"type": "integer", "minimum": 0}, "bytes on disk now, as quotas count them (not in lists)",
           given=True, required=False)


def quota_field(who: str) -> Field:
    """``quota_bytes`` of a PATCH body, which only ``who`` may set."""
    return Field(int, nullable=True, check=base.validate_quota,
                 description=f"{QUOTA_DESCRIPTION}. Set by {who} only.",
                 doc={"minimum": 1, "maximum": base.MAX_QUOTA_BYTES})


def sized(size_bytes: int | None) -> dict[str, int]:
    """The ``size_bytes`` to give a shape with :data:`SIZE`: none when it was not measured."""
    return {} if size_bytes is None else {"size_bytes": size_bytes}


# A user, as its own resource and as a group's member.
USER_SHAPE = Shape("User", {
    "id": Out(INTEGER), "tenant": Out(STRING, value=lambda user: user.tenant.name), "name": Out(STRING),
    "role": Out(enum(models.ROLES)), "disabled": Out(BOOLEAN), "created_at": Out(DATETIME)})

KEY_EXPIRY_DESCRIPTION = "the expiry of the API token that added the key; null: never"


def public_key_outs(key_of: Callable[[Any], models.PublicKey]) -> dict[str, Out]:
    """The fields a user's key and a deploy key show of their public key (``key_of(row)``)."""
    def of(attr: str) -> Callable[[Any], Any]:
        return lambda row: getattr(key_of(row), attr)
    return {"fingerprint": Out(STRING, "SHA256:…, as ssh-keygen -lf", value=of("fingerprint")),
            "key_type": Out(STRING, value=of("key_type")), "bits": Out(INTEGER, value=of("bits")),
            "title": Out(STRING, value=of("title")), "key": Out(STRING, value=of("key_data")),
            "last_used_at": Out(NULLABLE_DATETIME, value=of("last_used_at")),
            "expires_at": Out(NULLABLE_DATETIME, KEY_EXPIRY_DESCRIPTION, value=of("expires_at"))}

# A user's emails (docs/ref-rules.md): ``PATCH …/users/{u}`` and ``PUT …/users/{u}/emails``.
MAX_EMAILS = 20
EMAILS_FIELD = Field(list, items=Field(str, min_length=3, max_length=320), max_length=MAX_EMAILS,
                     description="the user's email addresses; a commit's committer email must be one of "
                                 "them for its signature to count (set by admins)")
