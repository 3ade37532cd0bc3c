"""How a file's text is shown on a page, within the time a page has (docs/console.md, "Bounded
on long histories").

A small file is highlighted (or its Markdown rendered) in the request: a few milliseconds. A
larger one is highlighted on the background thread (gitserver.console.prepare): the page waits
:data:`WAIT_SECONDS` for it (not at all above :data:`HIGHLIGHT_IN_WAIT_BYTES`, which could not
be done in that time) and otherwise shows the plain text, with line numbers and a note, and the
next view gets the highlighted one, kept by blob id. Above :data:`MAX_HIGHLIGHT_BYTES`
or :data:`MAX_HIGHLIGHT_LINES` a file is always plain; above :data:`MAX_SHOWN_BYTES` or
:data:`MAX_SHOWN_LINES` only its beginning is shown (the Raw link has all of it).
"""

from __future__ import annotations

import codecs
import dataclasses
import enum
from collections.abc import Callable

from markupsafe import Markup

from gitserver.console import highlight, markdown
from gitserver.console.prepare import Prepared

HIGHLIGHT_NOW_BYTES = 8 * 1024
MAX_HIGHLIGHT_BYTES = 256 * 1024
MAX_HIGHLIGHT_LINES = 8_000
MARKDOWN_NOW_BYTES = 8 * 1024
MAX_MARKDOWN_BYTES = markdown.MAX_MARKDOWN_BYTES
MAX_SHOWN_BYTES = 1024 * 1024
MAX_SHOWN_LINES = 20_000
# How long a page waits for the background thread before it answers with the plain text.
WAIT_SECONDS = 0.05
# Above this a page does not wait at all: at about 1 ms per kB of Pygments (more when the machine
# is busy) the thread could not finish within WAIT_SECONDS, and the wait only made the first view
# slower (85 ms instead of 20 for pytest's 71 kB python.py, issue 28).
HIGHLIGHT_IN_WAIT_BYTES = 32 * 1024
_TEXT_PROBE = 8000  # git's own test for binary: a NUL in the first 8000 bytes


class State(enum.StrEnum):
    DONE = "done"  # highlighted, or Markdown rendered
    PREPARING = "preparing"  # plain for now; highlighted (rendered) on the background thread
    TOO_LARGE = "too-large"  # plain: too large to highlight (render)
    CUT = "cut"  # plain, and only the first part of the file


@dataclasses.dataclass(frozen=True)
class Text:
    """A blob's text, or its first :data:`MAX_SHOWN_BYTES` / :data:`MAX_SHOWN_LINES`."""

    text: str
    size: int  # bytes of ``text`` in the blob
    cut: bool


@dataclasses.dataclass(frozen=True)
class Shown:
    html: Markup
    state: State
    lines: int  # lines shown
    rendered: bool  # Markdown rendered (else source)


def text_of(data: bytes, max_bytes: int = MAX_SHOWN_BYTES, max_lines: int = MAX_SHOWN_LINES) -> Text | None:
    """The blob's text when it is UTF-8 without NUL bytes (what git calls text), cut after
    ``max_bytes`` or ``max_lines``; None for a binary file. A cut in the middle of a character
    drops that character, not the file."""
    if b"\0" in data[:_TEXT_PROBE]:
        return None
    head = data[:max_bytes]
    try:  # the incremental decoder keeps an unfinished last character instead of failing on it
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=len(head) == len(data))
    except UnicodeDecodeError:
        return None
    cut = len(head) < len(data)
    newlines = -1
    for _ in range(max_lines):
        newlines = text.find("\n", newlines + 1)
        if newlines < 0:
            break
    if newlines >= 0 and newlines + 1 < len(text):
        text, cut = text[:newlines + 1], True
    return Text(text, len(text.encode()) if cut else len(data), cut)


def source(prepared: Prepared, blob_id: str, filename: str, text: Text) -> Shown:
    """The text highlighted for ``filename`` when it can be, else plain (see the module)."""
    lines = highlight.line_count(text.text)
    if text.cut or text.size > MAX_HIGHLIGHT_BYTES or lines > MAX_HIGHLIGHT_LINES:
        return Shown(highlight.plain(text.text), State.CUT if text.cut else State.TOO_LARGE, lines, False)
    key = f"highlight:{blob_id}:{highlight.lexer_name(filename)}"
    html = _prepared(prepared, key, lambda: highlight.highlighted(filename, text.text),
                     now=text.size <= HIGHLIGHT_NOW_BYTES, wait=text.size <= HIGHLIGHT_IN_WAIT_BYTES)
    if html is None:
        return Shown(highlight.plain(text.text), State.PREPARING, lines, False)
    return Shown(html, State.DONE, lines, False)


def document(prepared: Prepared, blob_id: str, filename: str, text: Text) -> Shown:
    """Markdown rendered when it can be, else its source (highlighted or plain)."""
    if text.cut or text.size > MAX_MARKDOWN_BYTES:
        return source(prepared, blob_id, filename, text)  # too large to highlight as well
    html = _prepared(prepared, f"markdown:{blob_id}", lambda: markdown.render(text.text),
                     now=text.size <= MARKDOWN_NOW_BYTES)
    if html is None:
        return Shown(highlight.plain(text.text), State.PREPARING, highlight.line_count(text.text), False)
    return Shown(html, State.DONE, highlight.line_count(text.text), True)


def _prepared(prepared: Prepared, key: str, work: Callable[[], Markup], *, now: bool,
              wait: bool = True) -> Markup | None:
    if now:
        return prepared.now(key, work, len)
    return prepared.prepare(key, work, WAIT_SECONDS if wait else 0.0, len)
