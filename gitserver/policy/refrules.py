"""The language of protected-reference rules (docs/ref-rules.md): the keys of a rule and which
patterns can ever govern a ref. Pure; shared by the administrative side that validates and
stores rule lists (gitserver.admin.refrules) and the push side that evaluates them
(gitserver.push.rules).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from typing import Any

# The keys of a rule, as stored and served (the API validates them: gitserver.admin.refrules).
PATTERN = "pattern"
PUSH = "push"
CREATE = "create"
REQUIRE_SIGNED = "require_signed"
MAX_FILE_BYTES = "max_file_bytes"
FORBIDDEN_PATHS = "forbidden_paths"
LINEAR = "linear"
# The organisation's own SLSA Source properties (``ORG_SOURCE_*``) that an accepted update of a
# matching ref carries in its Source VSA (docs/provenance.md).
PROPERTIES = "properties"
RULE_KEYS = (PATTERN, PUSH, CREATE, REQUIRE_SIGNED, MAX_FILE_BYTES, FORBIDDEN_PATHS, LINEAR, PROPERTIES)
USERS, GROUPS, DEPLOY_KEYS = "users", "groups", "deploy_keys"
ALLOW_KEYS = (USERS, GROUPS, DEPLOY_KEYS)

# SLSA: organisation-defined properties are named ``ORG_SOURCE_`` and upper-case words.
ORG_PROPERTY_PREFIX = "ORG_SOURCE_"
ORG_PROPERTY_RE = re.compile(r"^ORG_SOURCE_[A-Z0-9]+(?:_[A-Z0-9]+)*$")
MAX_PROPERTY = 100
MAX_PROPERTIES = 20

_GLOB_CHARS = re.compile(r"[*?\[]")
# Only these refs can be pushed at all (gitserver.git.protect refuses the rest).
PUSHABLE_PREFIXES = ("refs/heads/", "refs/tags/")
# Characters no ref name holds (git check-ref-format): a pattern's literal text with one can
# never match.
_BAD_REF_TEXT = re.compile(r"[\x00-\x20\x7f~^:\\]|\.\.|@\{|//")


def pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` can never govern a pushable ref, or None."""
    literal = _GLOB_CHARS.split(pattern, maxsplit=1)[0]
    if not any(literal.startswith(p) or p.startswith(literal) for p in PUSHABLE_PREFIXES):
        return "must match refs under refs/heads/ or refs/tags/ (a full ref name, e.g. refs/heads/main)"
    literal_parts = re.sub(r"\[[^\]]*\]", "", pattern).replace("*", "").replace("?", "")
    if _BAD_REF_TEXT.search(literal_parts) or pattern.endswith(("/", ".lock", ".")):
        return "can never match a valid ref name"
    if pattern in PUSHABLE_PREFIXES:
        return "can never match a valid ref name (add a name or a glob after the prefix)"
    return None


def first_match(rules: Sequence[Mapping[str, Any]], ref: str) -> Mapping[str, Any] | None:
    """The rule that governs ``ref``: the first whose pattern matches it (stored rules, as
    validated)."""
    return next((rule for rule in rules if fnmatch.fnmatchcase(ref, str(rule.get(PATTERN, "")))), None)


def property_problem(name: object) -> str | None:
    """Why ``name`` is not an organisation property of SLSA's form, or None."""
    if not isinstance(name, str) or len(name) > MAX_PROPERTY or not ORG_PROPERTY_RE.match(name):
        return (f"must be a name of the form {ORG_PROPERTY_PREFIX}WORD[_WORD…] in capitals and digits, "
                f"at most {MAX_PROPERTY} characters")
    return None
