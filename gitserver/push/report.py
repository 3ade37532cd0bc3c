"""What receive-pack's report to the client says about a push: the refs refused, by the rule
that refused them, and the limits a refused push went over; counted as metrics by the
front that relays the report (the SSH session)."""

from __future__ import annotations

import re

from gitserver.git.protect import RULE_MESSAGES
from gitserver.observe import metrics
from gitserver.push import limits

# "ng <ref> <message>" in receive-pack's report, raw or inside (side-band) pkt-lines.
_NG = re.compile(r"(?:^|[\x00-\x02]|[0-9a-f]{4})ng (refs/\S+) ?([^\n]*)", re.M)
RULE_OTHER = "other"
REF_RULE_MARK = "rule 'refs/"


def refusals_from_report(report: bytes | str) -> list[str]:
    """The protection rule of each ``ng`` line in receive-pack output (pure).

    The hook reports a rule's message (gitserver.git.protect.RULE_MESSAGES); it is mapped back
    to the rule name; anything else (git's own refusals, atomic failures) is ``other``.
    """
    by_message = {message: rule for rule, message in RULE_MESSAGES.items()}
    text = report if isinstance(report, str) else report.decode("utf-8", "replace")
    # A refusal with details reads "<rule message>: <detail>".
    return [_rule_of(m.group(2).strip(), by_message) for m in _NG.finditer(text)]


def _rule_of(message: str, by_message: dict[str, str]) -> str:
    if message in by_message:
        return by_message[message]
    if REF_RULE_MARK in message:  # the repository's own rules name theirs (gitserver.push.rules)
        return "ref_rule"
    return by_message.get(message.split(": ", 1)[0], RULE_OTHER)


def count_refusals(report: bytes) -> None:
    """Count refused ref updates, and pushes refused for a limit (gitserver.push.limits: the
    pre-receive hook's message, or git's own when receive.maxInputSize cut the pack off), seen
    in a chunk of receive-pack output; cheap when there are none."""
    if b"ng refs/" in report:
        for rule in refusals_from_report(report):
            metrics.ref_refused(rule)
    if limits.REFUSED.encode() in report or limits.GIT_INPUT_TOO_LARGE.encode() in report:
        for name in limits.limits_named(report.decode("utf-8", "replace")):
            metrics.push_over_limit(name)
