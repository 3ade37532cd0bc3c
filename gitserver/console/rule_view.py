"""A rule list in words, for the console's rules pages (docs/ref-rules.md): each rule's
pattern and its controls as label and text, so a reader need not know the JSON keys. The
templates escape every piece; nothing here is markup."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from gitserver.policy import refrules as keys

KIB = 1024
_ALLOW_LABELS = ((keys.GROUPS, "groups"), (keys.USERS, "users"), (keys.DEPLOY_KEYS, "deploy keys"))


class Control(NamedTuple):
    label: str
    text: str


class ShownRule(NamedTuple):
    pattern: str
    controls: list[Control]


def size_text(size: int) -> str:
    """``10485760`` as ``10.0 MiB (10485760 bytes)``."""
    value, unit = float(size), "bytes"
    for name in ("KiB", "MiB", "GiB", "TiB"):
        if value < KIB:
            break
        value, unit = value / KIB, name
    return f"{size} bytes" if unit == "bytes" else f"{value:.1f} {unit} ({size} bytes)"


def allow_text(allow: Mapping[str, Sequence[Any]]) -> str:
    """Who an allow-list names, e.g. ``groups release; users alice``; ``nobody`` when empty."""
    parts = [f"{label} {', '.join(str(v) for v in allow[key])}"
             for key, label in _ALLOW_LABELS if allow.get(key)]
    return "; ".join(parts) or "nobody"


def describe(rule: Mapping[str, Any]) -> ShownRule:
    """One stored rule (as ``admin.refrules.validate_rule`` keeps it) in words."""
    push, create = rule.get(keys.PUSH), rule.get(keys.CREATE)
    controls = [Control("Who may push", allow_text(push) if push is not None
                        else "whoever the grants let write"),
                Control("Who may create", allow_text(create) if create is not None
                        else "as for pushing")]
    if rule.get(keys.REQUIRE_SIGNED):
        controls.append(Control("Signatures", "every new commit and annotated tag must be signed by a "
                                              "registered key of its committer"))
    if rule.get(keys.LINEAR):
        controls.append(Control("History", "linear: no merge commits"))
    if rule.get(keys.MAX_FILE_BYTES) is not None:
        controls.append(Control("Largest file", size_text(int(rule[keys.MAX_FILE_BYTES]))))
    if rule.get(keys.FORBIDDEN_PATHS):
        controls.append(Control("Forbidden paths", ", ".join(str(p) for p in rule[keys.FORBIDDEN_PATHS])))
    if rule.get(keys.PROPERTIES):
        controls.append(Control("SLSA properties in the VSA", ", ".join(str(p) for p in rule[keys.PROPERTIES])))
    return ShownRule(str(rule.get(keys.PATTERN, "")), controls)


def describe_all(rules: Sequence[Mapping[str, Any]]) -> list[ShownRule]:
    return [describe(rule) for rule in rules]


def as_json(rules: Sequence[Mapping[str, Any]]) -> str:
    """The list as the form's textarea shows it: indented, one key per line."""
    return json.dumps(list(rules), indent=2)
