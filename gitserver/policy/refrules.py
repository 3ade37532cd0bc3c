"""The language of protected-reference rules (docs/ref-rules.md): the keys of a rule and which
patterns can ever govern a ref. Pure; shared by the administrative side that validates and
stores rule lists (gitserver.admin.refrules) and the push side that evaluates them
(gitserver.push.rules).
"""

from __future__ import annotations

import re

# The keys of a rule, as stored and served (the API validates them: gitserver.admin.refrules).
PATTERN = "pattern"
PUSH = "push"
CREATE = "create"
REQUIRE_SIGNED = "require_signed"
MAX_FILE_BYTES = "max_file_bytes"
FORBIDDEN_PATHS = "forbidden_paths"
LINEAR = "linear"
RULE_KEYS = (PATTERN, PUSH, CREATE, REQUIRE_SIGNED, MAX_FILE_BYTES, FORBIDDEN_PATHS, LINEAR)
USERS, GROUPS, DEPLOY_KEYS = "users", "groups", "deploy_keys"
ALLOW_KEYS = (USERS, GROUPS, DEPLOY_KEYS)

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
