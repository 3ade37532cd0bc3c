"""Source files with syntax highlighting (Pygments), as escaped HTML with CSS classes (the
CSP allows no inline styles). Highlighting is the costly part of a file page (about 0.3 s
for pytest's 70 kB python.py): files over :data:`MAX_HIGHLIGHT_BYTES` are shown plain, and
the last :data:`CACHED_FILES` highlighted ones are kept (a file's text never changes under
its name and content, so the cache can never be stale)."""

from __future__ import annotations

from functools import lru_cache

from markupsafe import Markup, escape
from pygments import highlight as pygments_highlight
from pygments.formatters import HtmlFormatter
from pygments.lexer import Lexer
from pygments.lexers import TextLexer, get_lexer_for_filename
from pygments.util import ClassNotFound

MAX_HIGHLIGHT_BYTES = 128 * 1024
# At most ~6x the input each (HTML of the highlighted text): about 12 MiB per process at worst.
CACHED_FILES = 16
CSS_CLASS = "highlight"


def _lexer(filename: str) -> Lexer:
    try:
        return get_lexer_for_filename(filename, stripnl=False)
    except ClassNotFound:
        return TextLexer(stripnl=False)


def render(filename: str, text: str) -> Markup:
    """``text`` as HTML: highlighted when small enough, escaped in a ``<pre>`` always."""
    if len(text) > MAX_HIGHLIGHT_BYTES:
        return Markup(f'<pre class="{CSS_CLASS}">') + escape(text) + Markup("</pre>")
    return Markup(_highlighted(filename, text))  # Pygments escapes the text


@lru_cache(maxsize=CACHED_FILES)
def _highlighted(filename: str, text: str) -> str:
    formatter = HtmlFormatter(cssclass=CSS_CLASS, linenos="inline")
    return str(pygments_highlight(text, _lexer(filename), formatter))


@lru_cache(maxsize=1)
def stylesheet() -> str:
    return HtmlFormatter(cssclass=CSS_CLASS, style="default").get_style_defs(f".{CSS_CLASS}")


def forget() -> None:
    """Drop the highlighted files kept (the benchmark measures a first view with it)."""
    _highlighted.cache_clear()
