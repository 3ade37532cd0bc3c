"""The request fields more than one resource module uses, declared once, so that resources
share them from here instead of borrowing them from one another.

The response fields and shapes they share (a user, a public key's fields, quotas and sizes)
are declared below the fronts, in :mod:`gitserver.shapes`, because the SSH self-service shows
the same objects; they are named here too for the resource modules that import them from here.
"""

from __future__ import annotations

from gitserver.admin import base
from gitserver.api.body import Field
from gitserver.policy.names import NAME_PATTERN, validate_name
from gitserver.shapes import QUOTA, QUOTA_DESCRIPTION, SIZE, public_key_outs, sized
from gitserver.shapes import USER as USER_SHAPE

__all__ = ["DESCRIPTION_FIELD", "NAME_FIELD", "QUOTA", "SIZE", "USER_SHAPE", "public_key_outs", "quota_field",
           "sized"]

DESCRIPTION_FIELD = Field(str, max_length=2000)
# A new tenant's, user's, group's or repository's name (validate_name enforces the pattern).
NAME_FIELD = Field(str, required=True, check=validate_name, doc={"pattern": NAME_PATTERN, "maxLength": 100})


def quota_field(who: str) -> Field:
    """``quota_bytes`` of a PATCH body, which only ``who`` may set."""
    return Field(int, nullable=True, check=base.validate_quota,
                 description=f"{QUOTA_DESCRIPTION}. Set by {who} only.",
                 doc={"minimum": 1, "maximum": base.MAX_QUOTA_BYTES})


# A user's emails (docs/ref-rules.md): ``PATCH …/users/{u}`` and ``PUT …/users/{u}/emails``.
MAX_EMAILS = 20
EMAILS_FIELD = Field(list, items=Field(str, min_length=3, max_length=320), max_length=MAX_EMAILS,
                     description="the user's email addresses; a commit's committer email must be one of "
                                 "them for its signature to count (set by admins)")
