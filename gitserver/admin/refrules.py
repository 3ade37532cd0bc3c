"""Protected references, the administrative side: a repository's or tenant's rule list,
validated, versioned and read back (docs/ref-rules.md). Rules are evaluated by
gitserver.push.rules; this module only stores them.

A list is replaced whole. Each change adds a ``rule_sets`` row (who, when, the list it
replaced) whose id (``rs-<n>``) every ref update it judges records. A bad list raises
:class:`InvalidInput` naming the field (``rules.0.push.users.1``) and stores nothing, so the
old list stays in force.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from gitserver.db import models
from gitserver.db.refrule_models import RuleSet
from gitserver.policy import access
from gitserver.policy import refrules as rules
from gitserver.policy.errors import InvalidInput, NotFound

FIELD = "rules"
MAX_RULES = 100
MAX_PATTERN = 1024  # as the API's schema: the console's form comes here unchecked
MAX_ALLOWED = 200
MAX_NAME = 100
MAX_FORBIDDEN_PATHS = 100
SOURCE_REPOSITORY, SOURCE_TENANT, SOURCE_NONE = "repository", "tenant", "none"

RULE_SET_PREFIX = "rs-"


def rule_set_id(row: RuleSet) -> str:
    """The public id of a rule-set row: ``rs-<n>``."""
    return f"{RULE_SET_PREFIX}{row.id}"


def rule_set_row_id(public_id: str) -> int | None:
    """The row id of ``rs-<n>``, or None for anything else."""
    digits = public_id.removeprefix(RULE_SET_PREFIX)
    return int(digits) if public_id.startswith(RULE_SET_PREFIX) and digits.isdigit() and len(digits) < 10 else None


def newest_rule_set(session: Session, tenant_id: int, repo_id: int | None) -> RuleSet | None:
    """The newest rule-set row of a repository (or, with ``repo_id`` None, of the tenant)."""
    owner = RuleSet.repo_id.is_(None) if repo_id is None else RuleSet.repo_id == repo_id
    return session.scalar(select(RuleSet).where(RuleSet.tenant_id == tenant_id, owner)
                          .order_by(RuleSet.id.desc()).limit(1))


class InForce(NamedTuple):
    """The list that judges a repository's pushes: its row (None: none) and where it is set."""

    row: RuleSet | None
    source: str

    @property
    def rules(self) -> list[dict[str, Any]]:
        return json.loads(self.row.rules) if self.row is not None else []


def in_force(session: Session, tenant: models.Tenant, repo: models.Repository | None) -> InForce:
    """A repository's own list, else its tenant's; for ``repo`` None, the tenant's."""
    if repo is not None:
        own = newest_rule_set(session, tenant.id, repo.id)
        if own is not None:
            return InForce(own, SOURCE_REPOSITORY)
    row = newest_rule_set(session, tenant.id, None)
    return InForce(row, SOURCE_TENANT if row is not None else SOURCE_NONE)


def set_rules(session: Session, tenant: models.Tenant, repo: models.Repository | None,
              value: Sequence[Mapping[str, Any]], principal: access.Principal) -> RuleSet:
    """Replace the list of ``repo`` (or, with None, the tenant's defaults) with ``value``,
    whose shape the caller checked (every key known, every type right); here, what only the
    database can tell: users, groups and deploy keys exist, patterns can match."""
    if not isinstance(value, list):
        raise InvalidInput(f"{FIELD} must be an array of rules", field=FIELD)
    checked = [validate_rule(session, tenant, repo, rule, f"{FIELD}.{i}") for i, rule in enumerate(value)]
    _refuse_shadowed(checked)
    if len(checked) > MAX_RULES:
        raise InvalidInput(f"at most {MAX_RULES} rules", field=FIELD)
    previous = newest_rule_set(session, tenant.id, repo.id if repo else None)
    row = RuleSet(tenant_id=tenant.id, repo_id=repo.id if repo else None, rules=json.dumps(checked),
                  previous_id=previous.id if previous else None, changed_by=principal.display[:300],
                  changed_by_user_id=principal.user_id if principal.kind == access.PrincipalKind.USER else None)
    session.add(row)
    session.flush()
    return row


def history_query(tenant: models.Tenant, repo: models.Repository | None) -> Select[Any]:
    """Every version of a list, for paging newest first."""
    owner = RuleSet.repo_id.is_(None) if repo is None else RuleSet.repo_id == repo.id
    return select(RuleSet).where(RuleSet.tenant_id == tenant.id, owner)


def get_rule_set(session: Session, tenant: models.Tenant, public_id: str) -> RuleSet:
    """A rule-set row of ``tenant`` by its public id (``rs-<n>``): what judged a ref update."""
    row_id = rule_set_row_id(public_id)
    row = session.get(RuleSet, row_id) if row_id is not None else None
    if row is None or row.tenant_id != tenant.id:
        raise NotFound(f"rule set {public_id[:40]!r} not found")
    return row


def previous_rules(session: Session, row: RuleSet) -> list[dict[str, Any]] | None:
    """The list ``row`` replaced (None: it was the first)."""
    previous = session.get(RuleSet, row.previous_id) if row.previous_id is not None else None
    return json.loads(previous.rules) if previous is not None else None


# --- one rule ----------------------------------------------------------------------------------

def validate_rule(session: Session, tenant: models.Tenant, repo: models.Repository | None,
                  rule: Mapping[str, Any], field: str) -> dict[str, Any]:
    """``rule`` as stored (only the keys given), or InvalidInput naming its bad field. The API
    checked the shape already; the CLI's JSON file comes here unchecked."""
    if not isinstance(rule, Mapping):
        raise InvalidInput(f"{field} must be an object", field=field)
    unknown = sorted(str(k) for k in rule if k not in rules.RULE_KEYS)
    if unknown:
        allowed = ", ".join(sorted(rules.RULE_KEYS))
        raise InvalidInput(f"{field}: unknown field {unknown[0][:100]!r} (allowed: {allowed})",
                           field=f"{field}.{unknown[0][:100]}")
    for key in (rules.REQUIRE_SIGNED, rules.LINEAR):
        if key in rule and not isinstance(rule[key], bool):
            raise InvalidInput(f"{field}.{key} must be a boolean", field=f"{field}.{key}")
    out: dict[str, Any] = {}
    pattern = rule.get(rules.PATTERN)
    if not isinstance(pattern, str) or not pattern:
        raise InvalidInput(f"{field}.pattern is required", field=f"{field}.pattern")
    if len(pattern) > MAX_PATTERN:
        raise InvalidInput(f"{field}.pattern is longer than {MAX_PATTERN} characters", field=f"{field}.pattern")
    problem = rules.pattern_problem(pattern)
    if problem is not None:
        raise InvalidInput(f"{field}.pattern {pattern[:200]!r} {problem}", field=f"{field}.pattern")
    out[rules.PATTERN] = pattern
    for key in (rules.PUSH, rules.CREATE):
        if rule.get(key) is not None:
            out[key] = _validate_allow(session, tenant, repo, rule[key], f"{field}.{key}")
    for key in (rules.REQUIRE_SIGNED, rules.LINEAR):
        if key in rule:
            out[key] = bool(rule[key])
    if rule.get(rules.MAX_FILE_BYTES) is not None:
        size = rule[rules.MAX_FILE_BYTES]
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise InvalidInput(f"{field}.max_file_bytes must be a positive number of bytes",
                               field=f"{field}.max_file_bytes")
        out[rules.MAX_FILE_BYTES] = size
    paths = rule.get(rules.FORBIDDEN_PATHS)
    if paths is not None and (not isinstance(paths, list) or len(paths) > MAX_FORBIDDEN_PATHS):
        raise InvalidInput(f"{field}.forbidden_paths must be an array of at most {MAX_FORBIDDEN_PATHS} path globs",
                           field=f"{field}.forbidden_paths")
    if rule.get(rules.FORBIDDEN_PATHS):
        out[rules.FORBIDDEN_PATHS] = [_validate_path_glob(p, f"{field}.forbidden_paths.{i}")
                                      for i, p in enumerate(rule[rules.FORBIDDEN_PATHS])]
    if rule.get(rules.PROPERTIES) is not None:
        out[rules.PROPERTIES] = _validate_properties(rule[rules.PROPERTIES], f"{field}.properties")
    return out


def _validate_properties(names: object, field: str) -> list[str]:
    """The organisation's ``ORG_SOURCE_*`` names, each once, in the order given."""
    if not isinstance(names, list) or len(names) > rules.MAX_PROPERTIES:
        raise InvalidInput(f"{field} must be an array of at most {rules.MAX_PROPERTIES} names", field=field)
    for i, name in enumerate(names):
        problem = rules.property_problem(name)
        if problem is not None:
            raise InvalidInput(f"{field}.{i} {str(name)[:100]!r} {problem}", field=f"{field}.{i}")
    return list(dict.fromkeys(names))


def _validate_allow(session: Session, tenant: models.Tenant, repo: models.Repository | None,
                    allow: Mapping[str, Any], field: str) -> dict[str, list[Any]]:
    if not isinstance(allow, Mapping) or any(k not in rules.ALLOW_KEYS for k in allow):
        raise InvalidInput(f"{field} must be an object of {', '.join(rules.ALLOW_KEYS)}", field=field)
    if any(not isinstance(allow[k], list) or len(allow[k]) > MAX_ALLOWED for k in allow):
        raise InvalidInput(f"{field}: each of {', '.join(rules.ALLOW_KEYS)} must be an array "
                           f"of at most {MAX_ALLOWED}", field=field)
    for key in (rules.USERS, rules.GROUPS):  # names: the console's form and the CLI come unchecked
        for i, name in enumerate(allow.get(key, [])):
            if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME:
                raise InvalidInput(f"{field}.{key}.{i} must be a name of 1 to {MAX_NAME} characters",
                                   field=f"{field}.{key}.{i}")
    out: dict[str, list[Any]] = {}
    for i, name in enumerate(allow.get(rules.USERS, [])):
        if session.scalar(select(models.User.id).where(models.User.tenant_id == tenant.id,
                                                       models.User.name == name)) is None:
            raise InvalidInput(f"{field}.users.{i}: no user {str(name)[:100]!r} in tenant {tenant.name!r}",
                               field=f"{field}.users.{i}")
    for i, name in enumerate(allow.get(rules.GROUPS, [])):
        if session.scalar(select(models.Group.id).where(models.Group.tenant_id == tenant.id,
                                                        models.Group.name == name)) is None:
            raise InvalidInput(f"{field}.groups.{i}: no group {str(name)[:100]!r} in tenant {tenant.name!r}",
                               field=f"{field}.groups.{i}")
    for i, key_id in enumerate(allow.get(rules.DEPLOY_KEYS, [])):
        if not _deploy_key_exists(session, tenant, repo, key_id):
            where = f"repository {repo.name!r}" if repo is not None else f"tenant {tenant.name!r}"
            raise InvalidInput(f"{field}.deploy_keys.{i}: no deploy key {key_id} in {where}",
                               field=f"{field}.deploy_keys.{i}")
    for key in rules.ALLOW_KEYS:
        if key in allow:
            out[key] = list(dict.fromkeys(allow[key]))
    return out


def _deploy_key_exists(session: Session, tenant: models.Tenant, repo: models.Repository | None,
                       key_id: object) -> bool:
    if isinstance(key_id, bool) or not isinstance(key_id, int) or not 0 < key_id < 2**31:
        return False
    query = select(models.DeployKey.id).join(models.Repository, models.Repository.id == models.DeployKey.repo_id)
    query = query.where(models.DeployKey.id == key_id, models.Repository.tenant_id == tenant.id)
    if repo is not None:
        query = query.where(models.DeployKey.repo_id == repo.id)
    return session.scalar(query) is not None


def _validate_path_glob(pattern: object, field: str) -> str:
    if not isinstance(pattern, str) or not pattern.strip("/") or len(pattern) > 1000:
        raise InvalidInput(f"{field} must be a path glob such as '*.pem' or 'secrets/'", field=field)
    if pattern.startswith("/") or "\x00" in pattern:
        raise InvalidInput(f"{field} must be relative to the repository root (no leading '/')", field=field)
    return pattern


def _refuse_shadowed(checked: Sequence[Mapping[str, Any]]) -> None:
    """A rule after one with the same pattern can never apply (the first match wins)."""
    seen: dict[str, int] = {}
    for i, rule in enumerate(checked):
        pattern = rule[rules.PATTERN]
        if pattern in seen:
            raise InvalidInput(f"{FIELD}.{i}.pattern {pattern!r} can never match: rule {seen[pattern]} "
                               "has the same pattern and comes first", field=f"{FIELD}.{i}.pattern")
        seen[pattern] = i
