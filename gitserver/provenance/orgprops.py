"""The organisation's own SLSA Source properties of a logged update (``ORG_SOURCE_*``, in its
Source VSA beside the level): those of the rule that governed the ref in the rule set that
judged it (the entry's ``rules``; docs/ref-rules.md, ``properties``).

Rule sets are never changed once written (a change is a new set), so what an entry's rule set
says is settled for ever; they are read in the caller's transaction, before anything is
signed, and the answer needs no database afterwards.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy.orm import Session

from gitserver.db.refrule_models import RuleSet
from gitserver.policy import refrules
from gitserver.provenance.entry import Entry

log = logging.getLogger(__name__)

RULE_SET_PREFIX = "rs-"  # the public id of a rule-set row (gitserver.admin.refrules)

Properties = Callable[[Entry], list[str]]


def none(_entry: Entry) -> list[str]:
    """No properties: an update no rule set judged, or a caller with no rules to ask."""
    return []


def lookup(session: Session, entries: Iterable[Entry]) -> Properties:
    """The properties of each of ``entries``, their rule sets read now."""
    sets: dict[str, Sequence[Mapping[str, Any]]] = {}
    for entry in entries:
        if entry.rules is not None and entry.rules not in sets:
            sets[entry.rules] = _rules(session, entry.rules)

    def properties(entry: Entry) -> list[str]:
        rule = refrules.first_match(sets.get(entry.rules or "", ()), entry.ref)
        return [str(p) for p in rule.get(refrules.PROPERTIES, ())] if rule is not None else []
    return properties


def _rules(session: Session, public_id: str) -> Sequence[Mapping[str, Any]]:
    digits = public_id.removeprefix(RULE_SET_PREFIX)
    row = session.get(RuleSet, int(digits)) if public_id.startswith(RULE_SET_PREFIX) and digits.isdigit() else None
    if row is None:
        log.warning("rule set %s of a logged update is not in the database: no properties", public_id[:40])
        return ()
    rules: Any = json.loads(row.rules)
    return [r for r in rules if isinstance(r, Mapping)] if isinstance(rules, list) else ()
