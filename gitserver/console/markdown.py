"""Pushed Markdown (a README) to HTML that can run nothing.

markdown-it-py in CommonMark mode with raw HTML off: a ``<script>`` in a README is text.
Links and images whose scheme is ``javascript:``, ``data:`` or ``vbscript:`` are dropped
(markdown-it-py's own check allows some ``data:image/…``; we allow none of the three).
"""

from __future__ import annotations

import re

from markdown_it import MarkdownIt
from markupsafe import Markup

MAX_MARKDOWN_BYTES = 512 * 1024
_BAD_SCHEME = re.compile(r"^\s*(javascript|data|vbscript):", re.IGNORECASE)
# Browsers ignore these inside a scheme ("java\tscript:" runs); strip them before checking.
_IGNORED = re.compile(r"[\x00-\x20\x7f]")


def link_allowed(url: str) -> bool:
    return _BAD_SCHEME.match(_IGNORED.sub("", url)) is None


def renderer() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.validateLink = link_allowed  # type: ignore[method-assign]
    return md


def render(text: str, md: MarkdownIt | None = None) -> Markup:
    """``text`` as safe HTML (a refused link stays as its literal text)."""
    return Markup((md or renderer()).render(text[:MAX_MARKDOWN_BYTES]))  # markdown-it escapes the text
