"""Source files with syntax highlighting (Pygments), as escaped HTML with CSS classes (the
CSP allows no inline styles). Large files are shown plain: highlighting is the costly part."""

from __future__ import annotations

from functools import lru_cache

from markupsafe import Markup, escape
from pygments import highlight as pygments_highlight
from pygments.formatters import HtmlFormatter
from pygments.lexer import Lexer
from pygments.lexers import TextLexer, get_lexer_for_filename
from pygments.util import ClassNotFound

MAX_HIGHLIGHT_BYTES = 256 * 1024
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
    formatter = HtmlFormatter(cssclass=CSS_CLASS, linenos="table", nowrap=False)
    return Markup(pygments_highlight(text, _lexer(filename), formatter))  # Pygments escapes the text


@lru_cache(maxsize=1)
def stylesheet() -> str:
    return HtmlFormatter(cssclass=CSS_CLASS, style="default").get_style_defs(f".{CSS_CLASS}")
