"""Validation of the names users choose: tenants, users, groups, repositories.

An allow-list, not a deny-list: one pattern, with the reasons for the extra rules in comments.
"""

from __future__ import annotations

import re

from gitserver.policy.errors import InvalidInput

# Starts with a letter or digit (so never "-flag" reaching a git argv, never ".hidden"),
# at most 100 characters, ASCII only (no look-alike unicode, no shell or path metacharacters).
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
_NAME_RE = re.compile(NAME_PATTERN)
# Every repository is stored, and may be named in a URL, as <name>.git.
GIT_SUFFIX = ".git"


def name_problem(name: object) -> str | None:
    """Why ``name`` is not an acceptable name, or None when it is."""
    if not isinstance(name, str):
        return "must be a string"
    if not _NAME_RE.fullmatch(name):
        return f"must match {NAME_PATTERN}"
    # ".." would let a name climb a directory when joined to a path.
    if ".." in name:
        return "must not contain '..'"
    # Repos are stored as <name>.git; a stored name ending in .git would make "x.git" and
    # "x.git.git" ambiguous in URLs that accept the suffix.
    if name.lower().endswith(GIT_SUFFIX):
        return "must not end in '.git'"
    if name.endswith(".lock"):
        return "must not end in '.lock'"
    return None


def validate_name(name: object, what: str = "name") -> str:
    """Return ``name`` if acceptable, else raise :class:`InvalidInput` naming ``what``."""
    problem = name_problem(name)
    if problem is None and isinstance(name, str):  # no problem implies a str; mypy needs both
        return name
    shown = repr(name) if isinstance(name, str) and len(name) <= 120 else "value"
    raise InvalidInput(f"{what} {shown} {problem}", field=what)


class RepoNamed:
    """A mix-in for anything naming a repository by ``tenant`` and ``repo`` (the dataclass
    using it declares both): ``full_name`` is how messages and logs show it."""

    tenant: str
    repo: str

    @property
    def full_name(self) -> str:
        return f"{self.tenant}/{self.repo}"
