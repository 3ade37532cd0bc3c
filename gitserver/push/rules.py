"""Protected references: the pure evaluation of a repository's rule list (docs/ref-rules.md).

A rule list is ordered; the first rule whose pattern (an ``fnmatch`` glob over the full ref
name, ``*`` also matching ``/``) matches a ref governs it, and no match leaves the grants
alone. This module decides from facts gathered elsewhere (gitserver.push.refjudge reads the
database and the repository): who pushes (:class:`Pusher`), what the update is, and what the
new commits are (:class:`CommitFacts`). It runs no git and reads no database, so it is
table-tested.

Every refusal names the rule by its pattern and the object (commit, tag, file), in the words
of docs/contract.md, for git's ``ng <ref> <reason>``, e.g.
``commit 1a2b3c4 is not signed by a registered key; rule 'refs/heads/main' requires signed commits``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from gitserver.policy.refrules import (
    CREATE,
    DEPLOY_KEYS,
    FORBIDDEN_PATHS,
    GROUPS,
    LINEAR,
    MAX_FILE_BYTES,
    PATTERN,
    PUSH,
    REQUIRE_SIGNED,
    USERS,
)

SHORT_OID = 7
MIB = 1024 * 1024

# What signature verification found for one commit or tag (gitserver.push.signatures).
SIGNED = "signed"  # a valid signature by a key of a user one of whose emails is the signer's
UNSIGNED = "unsigned"
BAD = "bad"  # signed, but not validly by a registered key of the committer


class Allow(NamedTuple):
    """Who a ``push`` or ``create`` list lets through: user names, group names, deploy key ids."""

    users: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    deploy_keys: frozenset[int] = frozenset()

    @classmethod
    def of(cls, value: Mapping[str, Any] | None) -> Allow | None:
        if value is None:
            return None
        return cls(frozenset(value.get(USERS, ())), frozenset(value.get(GROUPS, ())),
                   frozenset(value.get(DEPLOY_KEYS, ())))

    def admits(self, pusher: Pusher) -> bool:
        if pusher.deploy_key_id is not None:
            return pusher.deploy_key_id in self.deploy_keys
        return pusher.user in self.users or bool(self.groups & pusher.groups)

    def describe(self) -> str:
        """``group release, user alice`` (sorted), or ``no one``."""
        parts = [f"group {g}" for g in sorted(self.groups)] + [f"user {u}" for u in sorted(self.users)]
        parts += [f"deploy key {k}" for k in sorted(self.deploy_keys)]
        return ", ".join(parts) or "no one"


class Rule(NamedTuple):
    """One rule, from its JSON object (already validated)."""

    pattern: str
    push: Allow | None = None
    create: Allow | None = None
    require_signed: bool = False
    max_file_bytes: int | None = None
    forbidden_paths: tuple[str, ...] = ()
    linear: bool = False

    @classmethod
    def of(cls, value: Mapping[str, Any]) -> Rule:
        return cls(value[PATTERN], Allow.of(value.get(PUSH)), Allow.of(value.get(CREATE)),
                   bool(value.get(REQUIRE_SIGNED, False)), value.get(MAX_FILE_BYTES),
                   tuple(value.get(FORBIDDEN_PATHS, ())), bool(value.get(LINEAR, False)))

    def matches(self, ref: str) -> bool:
        return fnmatch.fnmatchcase(ref, self.pattern)

    @property
    def needs_commits(self) -> bool:
        """True when judging an update needs its new commits (not only who pushes)."""
        return self.require_signed or self.max_file_bytes is not None or bool(self.forbidden_paths) or self.linear


class RuleSet(NamedTuple):
    """A rule list in force and its id (None: no list, the grants alone)."""

    id: str | None
    rules: tuple[Rule, ...] = ()

    @classmethod
    def of(cls, rule_set_id: str | None, rules: Iterable[Mapping[str, Any]]) -> RuleSet:
        return cls(rule_set_id, tuple(Rule.of(r) for r in rules))

    def governing(self, ref: str) -> Rule | None:
        """The first rule whose pattern matches ``ref``."""
        return next((rule for rule in self.rules if rule.matches(ref)), None)


NO_RULES = RuleSet(None)


class Pusher(NamedTuple):
    """Who moves the ref: a user (with the groups they are in) or a deploy key."""

    user: str = ""
    groups: frozenset[str] = frozenset()
    deploy_key_id: int | None = None

    def describe(self) -> str:
        return f"deploy key {self.deploy_key_id}" if self.deploy_key_id is not None else (self.user or "this pusher")


class FileChange(NamedTuple):
    """A file a new commit adds or changes: its path and its blob's size."""

    path: str
    size: int


class CommitFacts(NamedTuple):
    """What the rules need of one new commit (or, with ``is_tag``, of a new annotated tag)."""

    oid: str
    parents: int = 1
    signature: str = UNSIGNED  # SIGNED, UNSIGNED or BAD
    files: tuple[FileChange, ...] = ()
    is_tag: bool = False
    signer: str = ""  # the user whose key signed it (when SIGNED)


def short(oid: str) -> str:
    return oid[:SHORT_OID]


def access_refusal(rule: Rule, ref: str, creating: bool, pusher: Pusher) -> str | None:
    """``push``/``create``: may ``pusher`` move (or create) ``ref``? A refusal, or None."""
    allow = rule.create if creating and rule.create is not None else rule.push
    if allow is None or allow.admits(pusher):
        return None
    verb = "create" if creating and rule.create is not None else "push to"
    return f"{pusher.describe()} may not {verb} {ref}: rule '{rule.pattern}' allows {allow.describe()}"


def commit_refusal(rule: Rule, commit: CommitFacts) -> str | None:
    """The first rule of ``rule`` that ``commit`` breaks, or None."""
    what = f"{'tag' if commit.is_tag else 'commit'} {short(commit.oid)}"
    if rule.require_signed and commit.signature != SIGNED:
        # One wording for unsigned and badly signed (docs/contract.md's): either way no
        # registered key of the committer vouches for it.
        return f"{what} is not signed by a registered key; rule '{rule.pattern}' requires signed commits"
    if rule.linear and commit.parents > 1:
        return f"{what} is a merge commit; rule '{rule.pattern}' requires linear history"
    for change in commit.files:
        if rule.max_file_bytes is not None and change.size > rule.max_file_bytes:
            return (f"file {change.path} is {size_text(change.size)}, over the {limit_text(rule.max_file_bytes)} limit "
                    f"of rule '{rule.pattern}'")
        hit = forbidden_match(change.path, rule.forbidden_paths)
        if hit is not None:
            return f"file {change.path} matches forbidden path '{hit}' of rule '{rule.pattern}'"
    return None


def judge(rule: Rule | None, ref: str, creating: bool, pusher: Pusher,
          commits: Sequence[CommitFacts] = ()) -> str | None:
    """The refusal of one ref update under its governing ``rule`` (None: no rule), or None.
    ``commits``: the update's new commits and tag (gitserver.push.refjudge.new_objects)."""
    if rule is None:
        return None
    refusal = access_refusal(rule, ref, creating, pusher)
    if refusal is not None:
        return refusal
    for commit in commits:
        refusal = commit_refusal(rule, commit)
        if refusal is not None:
            return refusal
    return None


def forbidden_match(path: str, patterns: Iterable[str]) -> str | None:
    """The first of ``patterns`` that ``path`` matches, or None. A pattern ending in ``/``
    names a directory (everything under it); one without ``/`` matches the file's name at any
    depth as well as the whole path (``*.pem``, ``id_rsa``); any other the whole path."""
    name = path.rpartition("/")[2]
    for pattern in patterns:
        if pattern.endswith("/"):
            if path.startswith(pattern) or fnmatch.fnmatchcase(path, pattern + "*"):
                return pattern
        elif fnmatch.fnmatchcase(path, pattern) or ("/" not in pattern and fnmatch.fnmatchcase(name, pattern)):
            return pattern
    return None


def size_text(size: int) -> str:
    """A file's size as a user reads it: ``105.0 MiB``, or ``1500 bytes`` below one MiB."""
    return f"{size / MIB:.1f} MiB" if size >= MIB else f"{size} bytes"


def limit_text(limit: int) -> str:
    """A limit as it was likely set: ``100 MiB`` for whole MiB, else as :func:`size_text`."""
    return f"{limit // MIB} MiB" if limit >= MIB and limit % MIB == 0 else size_text(limit)
