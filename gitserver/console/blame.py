"""Who last changed each line of a file: pygit2's ``Repository.blame``, bounded.

libgit2's blame walks the history back until every line has its commit: 4.6 s for pytest's
``src/_pytest/python.py`` on its 17,666 commits, and more on longer histories. So:

- it follows first parents only (``git blame --first-parent``: a merged branch's lines are the
  merge's), which makes the walk a line;
- it goes at most :data:`MAX_COMMITS` commits back from the asked one (``oldest_commit``):
  lines last changed at or before that commit are shown as such, with a link to blame the
  file from there;
- files over :data:`MAX_BYTES` or :data:`MAX_LINES` are not blamed (the page says so);
- the page waits at most :data:`WAIT_SECONDS` (libgit2 releases the GIL; the work runs on the
  console's background thread, gitserver.console.prepare) and otherwise says it is being
  computed; the result is kept by commit and path, so the next view is at once.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pygit2

from gitserver.console import gitview

MAX_COMMITS = 500
MAX_BYTES = 256 * 1024
MAX_LINES = 8_000
WAIT_SECONDS = 0.1
_KEPT_COST_PER_HUNK = 256  # bytes, roughly: ids, a name and a summary


@dataclasses.dataclass(frozen=True)
class Hunk:
    commit: str
    start: int  # the first line, from 1
    count: int
    author: str
    when: int  # the commit's author time, seconds since the epoch
    summary: str
    older: bool  # last changed at or before :attr:`Blame.oldest` (the walk stopped there)
    path: str  # the file's path in ``commit`` (renames are followed)


@dataclasses.dataclass(frozen=True)
class Blame:
    hunks: tuple[Hunk, ...]
    oldest: str | None  # where the walk stopped; None when it reached the first commit

    @property
    def cost(self) -> int:
        return _KEPT_COST_PER_HUNK * (len(self.hunks) + 1)


@dataclasses.dataclass(frozen=True)
class Row:
    """One hunk with its lines, for the page."""

    hunk: Hunk
    numbers: str
    code: str


def too_large(size: int, lines: int) -> bool:
    return size > MAX_BYTES or lines > MAX_LINES


def oldest_commit(commit: pygit2.Commit, depth: int = MAX_COMMITS) -> pygit2.Commit | None:
    """The first-parent ancestor ``depth`` commits back; None when the history is shorter."""
    for _ in range(depth):
        if not commit.parents:
            return None
        commit = commit.parents[0]
    return commit


def blame(git_dir: Path, commit_id: str, path: str, depth: int = MAX_COMMITS) -> Blame:
    """The blame of ``path`` at ``commit_id`` (see the module for its bounds). Opens its own
    handle: it runs on the background thread."""
    repo = gitview.open_repo(git_dir)
    commit = repo[commit_id]
    assert isinstance(commit, pygit2.Commit)
    oldest = oldest_commit(commit, depth)
    options: dict[str, pygit2.Oid] = {"oldest_commit": oldest.id} if oldest is not None else {}
    found = repo.blame(path, flags=pygit2.enums.BlameFlag.FIRST_PARENT, newest_commit=commit.id, **options)
    oldest_id = str(oldest.id) if oldest is not None else None
    summaries: dict[str, tuple[str, int, str]] = {}
    hunks = []
    for hunk in found:
        cid = str(hunk.final_commit_id)
        if cid not in summaries:
            who = repo[cid]
            assert isinstance(who, pygit2.Commit)
            summaries[cid] = (who.author.name, who.author.time, gitview.summary(who.message))
        author, when, summary = summaries[cid]
        hunks.append(Hunk(cid, hunk.final_start_line_number, hunk.lines_in_hunk, author, when, summary,
                          cid == oldest_id, hunk.orig_path or path))
    return Blame(tuple(hunks), oldest_id)


def rows(found: Blame, text: str) -> list[Row]:
    """Each hunk with its line numbers and lines (the text the blame was made of)."""
    lines = text.split("\n")
    out = []
    for hunk in found.hunks:
        first = hunk.start - 1
        numbers = range(hunk.start, hunk.start + hunk.count)
        out.append(Row(hunk, "\n".join(map(str, numbers)), "\n".join(lines[first:first + hunk.count])))
    return out
