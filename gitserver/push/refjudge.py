"""Judging a push's ref updates against the repository's rule list (docs/ref-rules.md): the
database and repository side of gitserver.push.rules.

The hook socket's service (gitserver.push.ledger.HookService) asks :func:`judge_updates` when
proc-receive sends its intent, before any ref moves, for every way a ref moves through
receive-pack: SSH pushes, Repour's internal pushes, the hook's own database fallback. This
module gathers the facts (the rule set in force, who pushes, the new commits with their
signatures, files and sizes) and leaves every decision to :mod:`gitserver.push.rules`.

The rule set's id is recorded on each ref update it judged (``ref_updates.rules``):
:func:`rules_of` is how anyone (the reference log, provenance) reads it back.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import pygit2
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from gitserver.admin.refrules import in_force, rule_set_id
from gitserver.db import models
from gitserver.db.base import utcnow
from gitserver.db.refrule_models import KEY_GPG, KEY_SSH, SigningKey, UserEmail
from gitserver.git import refs
from gitserver.push import rules, signatures

log = logging.getLogger(__name__)

Update = tuple[str, str, str]  # (old, new, ref), as the hook sends them


def rules_of(update: models.RefUpdate) -> str | None:
    """The id of the rule set that judged ``update`` (None: no rule list was in force, or the
    update is older than rules): ``ref_updates.rules``, written by :func:`judge_updates`'s
    caller in the intent's own transaction."""
    return update.rules


def effective_rules(session: Session, repo: models.Repository) -> rules.RuleSet:
    """The rule list in force: the repository's own, else its tenant's (the defaults)."""
    row = in_force(session, repo.tenant, repo).row
    if row is None:
        return rules.NO_RULES
    return rules.RuleSet.of(rule_set_id(row), json.loads(row.rules))


def pusher_of(session: Session, repo_id: int, user_id: int | None, key_id: int | None) -> rules.Pusher:
    """Who pushes: the user and their groups, or the repository's deploy key."""
    if user_id is None and key_id is not None:
        deploy = session.scalar(select(models.DeployKey).where(
            models.DeployKey.public_key_id == key_id, models.DeployKey.repo_id == repo_id))
        return rules.Pusher(deploy_key_id=deploy.id if deploy is not None else -1)
    user = session.get(models.User, user_id) if user_id is not None else None
    if user is None:
        return rules.Pusher()
    groups = session.scalars(select(models.Group.name).join(
        models.GroupMember, models.GroupMember.group_id == models.Group.id).where(
        models.GroupMember.user_id == user.id))
    return rules.Pusher(user.name, frozenset(groups))


def verifier_for(session: Session, tenant_id: int) -> signatures.Verifier:
    """A verifier holding every registered key of the tenant's enabled users who have emails
    (login keys that expired with their token excluded)."""
    emails: dict[int | None, list[str]] = {}
    owners: dict[str, str] = {}
    for user_id, name, email in session.execute(
            select(UserEmail.user_id, models.User.name, UserEmail.email)
            .join(models.User, models.User.id == UserEmail.user_id)
            .where(UserEmail.tenant_id == tenant_id, models.User.disabled.is_(False))
            .order_by(UserEmail.position)):
        emails.setdefault(user_id, []).append(email)
        owners[email] = name
    live = or_(models.PublicKey.expires_at.is_(None), models.PublicKey.expires_at > utcnow())
    ssh = [signatures.SshSigner(key, tuple(emails[user_id])) for user_id, key in session.execute(
        select(models.PublicKey.user_id, models.PublicKey.key_data).where(models.PublicKey.user_id.in_(emails), live))]
    gpg = []
    for row in session.scalars(select(SigningKey).where(SigningKey.tenant_id == tenant_id,
                                                        SigningKey.user_id.in_(emails))):
        if row.kind == KEY_SSH:
            ssh.append(signatures.SshSigner(row.key_data, tuple(emails[row.user_id])))
        elif row.kind == KEY_GPG:
            gpg.append(signatures.GpgSigner(row.fingerprint, row.key_data, tuple(emails[row.user_id])))
    return signatures.Verifier([s._replace(key=_key_only(s.key)) for s in ssh], gpg, owners)


def _key_only(line: str) -> str:
    """``type base64`` of an authorized_keys line (its comment dropped)."""
    return " ".join(line.split()[:2])


# --- the new objects of an update ------------------------------------------------------------

class Judged(NamedTuple):
    """What judging a push's updates found: the rule set's id, the refusal of each refused
    ref, and for each admitted ref judged under ``require_signed`` the signature result of
    each new commit and tag (``{"commit", "result", "signer"}``: signed / unsigned / bad)."""

    rule_set: str | None
    refused: dict[str, str]
    signatures: dict[str, list[dict[str, str]]]


def judge_updates(session: Session, repo_id: int, user_id: int | None, key_id: int | None,
                  repo_path: Path, updates: Sequence[Update]) -> Judged:
    """Judge each update by the rule list in force (gitserver.push.rules.judge)."""
    repo = session.get(models.Repository, repo_id)
    if repo is None:
        return Judged(None, {}, {})
    ruleset = effective_rules(session, repo)
    governed = [(u, ruleset.governing(u[2])) for u in updates]
    if not any(rule is not None for _u, rule in governed):
        return Judged(ruleset.id, {}, {})
    pusher = pusher_of(session, repo_id, user_id, key_id)
    refused: dict[str, str] = {}
    signed: dict[str, list[dict[str, str]]] = {}
    git: pygit2.Repository | None = None
    verifier: signatures.Verifier | None = None
    try:
        for (old, new, ref), rule in governed:
            creating = refs.is_zero(old)
            refusal = rules.judge(rule, ref, creating, pusher)
            if refusal is None and rule is not None and rule.needs_commits and not refs.is_zero(new):
                git = git or pygit2.Repository(str(repo_path))
                if rule.require_signed and verifier is None:
                    verifier = verifier_for(session, repo.tenant_id)
                hide = [old] if not creating else governed_refs(git, ruleset, rule)
                facts = new_objects(git, new, hide, rule, verifier)
                refusal = rules.judge(rule, ref, creating, pusher, facts)
                if rule.require_signed:
                    signed[ref] = [{"commit": f.oid, "result": f.signature, "signer": f.signer} for f in facts]
            if refusal is not None:
                refused[ref] = refusal
    finally:
        if verifier is not None:
            verifier.close()
    return Judged(ruleset.id, refused, signed)


def governed_refs(git: pygit2.Repository, ruleset: rules.RuleSet, rule: rules.Rule) -> list[str]:
    """The values of the existing refs that ``rule`` governs: a new ref under the rule brings
    only what none of them already has (a new ``release/*`` branch cut from an old one is not
    asked to re-sign the old one's history; one cut from an unprotected branch is)."""
    out = []
    for name in git.references:
        if name.startswith((refs.HEADS, refs.TAGS)) and ruleset.governing(name) == rule:
            target = git.references[name].resolve().target
            out.append(str(target))
    return out


def new_objects(git: pygit2.Repository, new: str, hide: Iterable[str], rule: rules.Rule,
                verifier: signatures.Verifier | None) -> list[rules.CommitFacts]:
    """The facts of the new annotated tag (if ``new`` is one) and of every commit reachable
    from ``new`` and from none of ``hide``, newest first."""
    out: list[rules.CommitFacts] = []
    target = git[new]
    while isinstance(target, pygit2.Tag):
        out.append(_tag_facts(git, target, verifier))
        target = git[target.target]
    if not isinstance(target, pygit2.Commit):
        return out
    walker = git.walk(target.id, pygit2.enums.SortMode.TOPOLOGICAL)
    for oid in hide:
        if not refs.is_zero(oid) and oid in git:
            walker.hide(oid)
    for commit in walker:
        out.append(_commit_facts(git, commit, rule, verifier))
    return out


def _commit_facts(git: pygit2.Repository, commit: pygit2.Commit, rule: rules.Rule,
                  verifier: signatures.Verifier | None) -> rules.CommitFacts:
    signature, signer = rules.UNSIGNED, ""
    if rule.require_signed and verifier is not None:
        sig, payload = commit.gpg_signature
        signature = verifier.verify(sig, payload or b"", commit.committer.email)
        signer = verifier.signer(commit.committer.email) if signature == rules.SIGNED else ""
    files: tuple[rules.FileChange, ...] = ()
    if rule.max_file_bytes is not None or rule.forbidden_paths:
        files = _changed_files(git, commit)
    return rules.CommitFacts(str(commit.id), len(commit.parent_ids), signature, files, signer=signer)


def _changed_files(git: pygit2.Repository, commit: pygit2.Commit) -> tuple[rules.FileChange, ...]:
    """The files ``commit`` adds or changes against its first parent (all of a root
    commit's), with their sizes. A merge's diff against its first parent holds whatever it
    brings from the others."""
    diff = commit.tree.diff_to_tree(swap=True) if not commit.parents else git.diff(commit.parents[0], commit)
    out = []
    for delta in diff.deltas:
        if delta.status in (pygit2.enums.DeltaStatus.DELETED,):
            continue
        new_file = delta.new_file
        if new_file.mode == pygit2.enums.FileMode.COMMIT:
            continue  # a submodule's commit is not stored here
        # The header alone: a 1 GiB blob is not read to learn its size.
        size = git.odb.read_header(new_file.id)[1] if git.odb.exists(new_file.id) else 0
        out.append(rules.FileChange(new_file.path, size))
    return tuple(out)


def _tag_facts(git: pygit2.Repository, tag: pygit2.Tag, verifier: signatures.Verifier | None) -> rules.CommitFacts:
    signature, signer = rules.UNSIGNED, ""
    if verifier is not None:
        raw = git.odb.read(tag.id)[1]
        sig, payload = signatures.split_tag(raw)
        email = signatures.tag_tagger_email(raw)
        signature = verifier.verify(sig, payload, email)
        signer = verifier.signer(email) if signature == rules.SIGNED else ""
    return rules.CommitFacts(str(tag.id), 1, signature, is_tag=True, signer=signer)


# --- after the fact: refs that moved without being judged (gitserver check) -------------------

def unjudged_moves(session: Session, repo_id: int, repo_path: Path) -> list[tuple[str, str]]:
    """(ref, what) for each ledger update that a rule in force governs but nothing judged: a
    ref written outside receive-pack while the list held, which the reconciler recorded
    (``recovered``, with no rule-set id). What its rule says of the commits it brought is
    judged now; who moved it cannot be known."""
    repo = session.get(models.Repository, repo_id)
    if repo is None:
        return []
    held = in_force(session, repo.tenant, repo)
    if held.row is None:
        return []
    ruleset = rules.RuleSet.of(rule_set_id(held.row), held.rules)
    moved = session.scalars(
        select(models.RefUpdate).join(models.Push, models.Push.id == models.RefUpdate.push_id).where(
            models.Push.repo_id == repo_id, models.Push.state == models.PUSH_RECOVERED,
            models.RefUpdate.rules.is_(None), models.Push.created_at >= held.row.created_at)
        .order_by(models.RefUpdate.id))
    out = []
    git: pygit2.Repository | None = None
    for update in moved:
        rule = ruleset.governing(update.ref)
        if rule is None or refs.is_zero(update.new):
            continue
        what = (f"moved to {update.new[:rules.SHORT_OID]} outside receive-pack, judged by no rule "
                f"(rule '{rule.pattern}')")
        git = git or pygit2.Repository(str(repo_path))
        if rule.needs_commits and update.new in git:
            with contextlib.ExitStack() as stack:
                verifier = stack.enter_context(verifier_for(session, repo.tenant_id)) if rule.require_signed else None
                facts = new_objects(git, update.new, [update.old], rule, verifier)
            refusal = next((r for f in facts if (r := rules.commit_refusal(rule, f)) is not None), None)
            what += f"; {refusal}" if refusal else ""
        out.append((update.ref, what))
    return out
