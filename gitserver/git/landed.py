"""Did a ref update land? Asked of a pending intent whose hook never said (it died, or the
database did between the intent and the done step), long after: the ref may have moved on.

A value landed when:

* it is the ref's value now (for a tag, the only test: a tag is the intended one or not);
* the ref's reflog (gitserver.git.reflog) has the ref taking it at or after the intent; a
  reflog that began before the intent and never has it says it did not land;
* for a branch with no reflog that old, the value is an ancestor of the ref's value now:
  branches only ever fast-forward (``receive.denyNonFastForwards``), so a later push that
  moved the branch on built on it.

A deletion landed when the ref is gone.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pygit2

from gitserver.git import reflog, refs

log = logging.getLogger(__name__)

# The intent's time comes from the database's clock, the reflog's from git's (whole seconds).
CLOCK_SLACK_SECONDS = 2


class Landing:
    """Answers "did (ref, new) land after ``since``?" for one repository, opening it once."""

    def __init__(self, path: Path, on_disk: dict[str, str]) -> None:
        self.path = path
        self.on_disk = on_disk
        self._git: pygit2.Repository | None = None
        self._reflogs: dict[str, list[reflog.Entry] | None] = {}

    def landed(self, ref: str, new: str, since: float) -> bool:
        current = self.on_disk.get(ref)
        if refs.is_zero(new):
            return current is None
        if current == new:
            return True
        entries = self._reflog(ref)
        if entries:
            after = since - CLOCK_SLACK_SECONDS
            if any(e.new == new and e.time >= after for e in entries):
                return True
            if entries[0].time < after:
                return False  # logged since before the intent, and never took the value
        if ref.startswith(refs.HEADS) and current is not None:
            return self._descends(current, new)
        return False

    def _reflog(self, ref: str) -> list[reflog.Entry] | None:
        if ref not in self._reflogs:
            self._reflogs[ref] = reflog.read(self.path, ref)
        return self._reflogs[ref]

    def _descends(self, current: str, new: str) -> bool:
        if self._git is None:
            self._git = pygit2.Repository(str(self.path))
        try:
            return bool(self._git.descendant_of(current, new))
        except (KeyError, ValueError, pygit2.GitError):
            return False  # an object is missing: the value cannot be in the branch's history
