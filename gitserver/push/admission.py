"""Which pushes are refused whole, in pre-receive, while their objects are still in quarantine.

git runs pre-receive with the pushed objects in a quarantine directory and deletes it when the
hook refuses; it moves them into the repository *before* proc-receive runs. A push refused only
by proc-receive therefore leaves its objects behind, and git's upload-pack serves any object a
repository holds to a protocol v2 ``fetch`` that names it by id, whatever the
``uploadpack.allow*SHA1InWant`` settings say (they bind protocol v0 only). So every refusal
that is about *who* may store objects here or *what* they contain is decided here, for the
whole push: then a refused push leaves nothing (docs/architecture.md, "Which hook decides
what").

Refused whole (any one such ref declines every ref of the push, like GitHub's protected
branches): a pusher without write permission, and a ref under the server's reserved names
(with a new value; deleting one brings no objects and is refused ref by ref). The size limits
and quotas are the other whole-push refusal (:mod:`gitserver.push.limits`). Everything else
(fast-forward, moved tags, deletions, other names, the compare-and-swap) stays with
proc-receive, which answers ref by ref with the rule named.

Pure and standard library only: both the pre-receive hook and the daemon answering it import it.
"""

from __future__ import annotations

from gitserver.git import protect, refs

# The rules of gitserver.git.protect that refuse the whole push.
WHOLE_PUSH_RULES = frozenset({"reserved", "no_write"})
NOT_UPDATED = "not updated: another ref of this push was refused, so nothing of it was stored"


def _history_not_judged(_old: str, _new: str) -> bool:
    """Fast-forwards are proc-receive's to judge (it needs git); here every update passes."""
    return True


def declined(commands: list[protect.RefCommand], can_write: bool) -> list[str]:
    """The lines refusing the whole push, one per ref naming it and the rule; [] to let it on.

    Each refused ref gets its rule's message (``refs/tags/repour-x: this name is reserved for
    gitserver archives``); a ref that would have been accepted is named as not updated."""
    verdicts = [protect.check(cmd, can_write=can_write, is_ancestor=_history_not_judged)
                for cmd in commands]
    if not any(_whole_push(cmd, refusal, can_write) for cmd, refusal in zip(commands, verdicts, strict=True)):
        return []
    return [f"{cmd.ref}: {refusal.message if refusal else NOT_UPDATED}"
            for cmd, refusal in zip(commands, verdicts, strict=True)]


def _whole_push(cmd: protect.RefCommand, refusal: protect.Refusal | None, can_write: bool) -> bool:
    """Whether this ref declines the push: it brings a new value and is refused for a
    whole-push rule, or by a pusher who may write nothing (whatever rule names it first, e.g.
    ``refs/pull/1`` is not pushable: a reader's objects are kept out all the same)."""
    if refusal is None or refs.is_zero(cmd.new):
        return False
    return refusal.rule in WHOLE_PUSH_RULES or not can_write
