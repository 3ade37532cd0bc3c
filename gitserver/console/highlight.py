"""Source text as escaped HTML with line numbers: highlighted by Pygments (CSS classes; the CSP
allows no inline styles), or plain in the same markup.

Highlighting is the costly part of a file page: about 1 ms per kB of Python on this machine
(70 ms for pytest's 70 kB python.py), several times that when the machine is busy. Plain text
costs almost nothing. gitserver.console.fileview decides which a page shows. The lexer is
chosen by the file name only (Pygments' ``guess_lexer`` reads the content with every lexer).
"""

from __future__ import annotations

from functools import lru_cache

from markupsafe import Markup, escape
from pygments import highlight as pygments_highlight
from pygments.formatters import HtmlFormatter
from pygments.lexer import Lexer
from pygments.lexers import TextLexer, get_lexer_for_filename
from pygments.util import ClassNotFound

CSS_CLASS = "highlight"
LINENOS_CLASS = "linenos"
# Finding a lexer by name tries every lexer's patterns (about 4 ms): kept per file name.
LEXERS_KEPT = 512


@lru_cache(maxsize=LEXERS_KEPT)
def lexer_for(filename: str) -> Lexer:
    """Pygments' lexer for the file name (its patterns, never its content); plain text when
    none matches. Lexers keep no state between texts, so one instance serves every thread."""
    try:
        return get_lexer_for_filename(filename, stripnl=False)
    except ClassNotFound:
        return TextLexer(stripnl=False)


def lexer_name(filename: str) -> str:
    return lexer_for(filename).name


def highlighted(filename: str, text: str) -> Markup:
    """``text`` highlighted for ``filename``'s language (Pygments escapes the text)."""
    formatter = HtmlFormatter(cssclass=CSS_CLASS, linenos="inline")
    return Markup(pygments_highlight(text, lexer_for(filename), formatter))


def plain(text: str) -> Markup:
    """``text`` escaped, with line numbers, in the markup :func:`highlighted` makes (so the
    page looks the same but for colour)."""
    lines = str(escape(text)).split("\n")  # escaping leaves newlines as they are
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line starts no line of its own
    width = len(str(len(lines)))
    numbered = "".join(f'<span class="{LINENOS_CLASS}">{number:>{width}}</span>{line}\n'
                       for number, line in enumerate(lines, start=1))
    return Markup(f'<div class="{CSS_CLASS}"><pre><span></span>{numbered}</pre></div>\n')


def line_count(text: str) -> int:
    return text.count("\n") + (0 if text.endswith("\n") or not text else 1)


@lru_cache(maxsize=1)
def stylesheet() -> str:
    return HtmlFormatter(cssclass=CSS_CLASS, style="default").get_style_defs(f".{CSS_CLASS}")
