"""Protected history: the per-ref rules of docs/contract.md, as a pure function.

Nobody may delete a branch or tag, move a tag, push a non-fast-forward, or write the
server's reserved names. The hooks adapt this to git; the tests table-test it directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from gitserver.git import refs

# Rule names: stable identifiers (metrics labels, audit) and the message the pusher sees.
RULE_MESSAGES = {
    "invalid_ref": "invalid ref name",
    "not_pushable": "only branches (refs/heads/) and tags (refs/tags/) may be pushed",
    "reserved": "this name is reserved for gitserver archives",
    "no_write": "you do not have write permission",
    "delete": "deleting branches and tags is not allowed",
    "tag_move": "existing tags cannot be moved",
    "non_fast_forward": "non-fast-forward pushes are not allowed",
    "bad_object": "the new value is not a commit or tag id",
    "ambiguous": "a branch named HEAD would be confused with HEAD",
    "duplicate": "this push names the ref more than once; nothing was changed",
    "unrecorded": "gitserver could not record the push; nothing was changed, retry later",
    "push_option": "push option refused",
    # A rule of the repository's own list (docs/ref-rules.md): its refusal is all in the
    # detail, which names the rule and the object.
    "ref_rule": "",
}


# Refs that only a 'git push --mirror' of a clone sends: GitHub's pull requests, GitLab's merge
# requests, Gerrit's changes, the clone's remote-tracking branches.
MIRROR_ONLY_PREFIXES = ("refs/pull/", "refs/merge-requests/", "refs/changes/", "refs/remotes/")
MIRROR_HINT = ("'git push --mirror' copies and deletes every ref; "
               "push with 'git push --all && git push --tags' instead")


# NamedTuple rather than a dataclass: the proc-receive hook imports this module on every push,
# and ``dataclasses`` pulls in ``inspect`` (with ast, dis and tokenize), ~6 ms of CPU per push.
class RefCommand(NamedTuple):
    old: str
    new: str
    ref: str

    @classmethod
    def parse(cls, line: str) -> RefCommand:
        """Parse ``<old> <new> <ref>`` as git gives it to hooks."""
        old, new, ref = line.rstrip("\n").split(" ", 2)
        return cls(old=old, new=new, ref=ref)


class Refusal(NamedTuple):
    ref: str
    rule: str
    detail: str = ""  # what exactly was wrong, after the rule's message

    @property
    def message(self) -> str:
        base = RULE_MESSAGES[self.rule]
        return f"{base}: {self.detail}" if self.detail and base else self.detail or base


def duplicated(commands: list[RefCommand]) -> set[str]:
    """Refs named more than once in one push. git applies such a push ref by ref, so the
    second command would move a ref the first one already moved: the push is refused whole."""
    seen: set[str] = set()
    twice: set[str] = set()
    for cmd in commands:
        (twice if cmd.ref in seen else seen).add(cmd.ref)
    return twice


def check(cmd: RefCommand, *, can_write: bool, is_ancestor: Callable[[str, str], bool]) -> Refusal | None:
    """The refusal for one ref update, or None when it is allowed.

    ``is_ancestor(old, new)`` is asked only for branch updates that need it, so callers can
    back it with a git call.
    """
    problem = refs.ref_format_problem(cmd.ref)
    if problem is not None:
        return Refusal(cmd.ref, "invalid_ref", problem)
    if refs.is_reserved(cmd.ref):
        # A second 'git push --mirror' deletes the archive refs the server made.
        return Refusal(cmd.ref, "reserved", MIRROR_HINT if refs.is_zero(cmd.new) else "")
    if not cmd.ref.startswith(refs.PUSHABLE_PREFIXES):
        mirrored = cmd.ref.startswith(MIRROR_ONLY_PREFIXES)
        return Refusal(cmd.ref, "not_pushable", MIRROR_HINT if mirrored else "")
    if cmd.ref == refs.AMBIGUOUS_BRANCH:
        return Refusal(cmd.ref, "ambiguous")
    if not can_write:
        return Refusal(cmd.ref, "no_write")
    if not (refs.is_oid(cmd.old) and refs.is_oid(cmd.new)):
        return Refusal(cmd.ref, "bad_object")
    if refs.is_zero(cmd.new):
        return Refusal(cmd.ref, "delete")
    if refs.is_zero(cmd.old) or cmd.old == cmd.new:
        return None
    if refs.is_tag(cmd.ref):
        return Refusal(cmd.ref, "tag_move")
    if not is_ancestor(cmd.old, cmd.new):
        return Refusal(cmd.ref, "non_fast_forward")
    return None
