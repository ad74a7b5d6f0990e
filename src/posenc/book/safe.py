"""Card text as data: everything a card says reaches a page escaped, or validated when it cannot be escaped.

Pages are MyST Markdown made from Jinja templates. The template environment (:mod:`posenc.book.pages`)
*finalizes* every ``{{ expression }}`` through :func:`finalize`: a plain string is escaped with :func:`escape`
(so a card's name, summary, notes, claims or hyperparameter meanings show as typed, whatever they contain:
fences, directives, roles, ``{include}``, raw HTML, math or links); only values the book itself built are
wrapped in :class:`Md` and emitted as they are. A formula is LaTeX, which cannot be escaped, so it is checked
by :func:`posenc.cards.text.formula_problems` and refused, naming the card and field, when it holds anything
but math. URLs and arXiv ids are checked the same way before they become links.
"""

from __future__ import annotations

import html
import re
from typing import Any

from posenc.cards.text import formula_problems, url_problems

__all__ = ["CardTextError", "Md", "escape", "finalize", "role_text", "heading", "code", "formula", "url", "attr", "cell"]


class CardTextError(ValueError):
    """A card field whose text cannot be put on a page; the message names the card's file and the field."""


class Md(str):
    """Markup the book built itself (links, roles, tables of escaped cells): emitted without escaping."""

    __slots__ = ()


# Characters with a meaning in MyST Markdown inline text (CommonMark lets every ASCII punctuation character be
# backslash-escaped, so escaping a harmless one costs nothing): emphasis, code, links, images, HTML, math,
# roles, substitutions, tables, headings, block quotes, lists, colon fences, entities and footnotes.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>{}|$#~^&:!+=\-])")
_CODE_SPAN = re.compile(r"(`+)([^`].*?)\1", re.S)
# An ordered-list marker at the start of a block ("1. ", "12) "; "1.5" is not one).
_ORDERED = re.compile(r"^(\s?\d{1,9})([.)])(?=\s|$)")


def _plain(s: str) -> str:
    return _MD_SPECIAL.sub(r"\\\1", s)


def escape(text: Any, *, table: bool = False) -> Md:
    """``text`` as literal MyST Markdown inline text on one line.

    Backtick code spans written in card prose (``original_max_position_embeddings``) stay code spans: MyST shows
    their content literally, so nothing inside them is parsed. Everything else is backslash-escaped. With
    ``table``, pipes inside code spans are escaped too (a GFM table splits cells on them).
    """
    s = re.sub(r"\s+", " ", str(text))  # one line; a single space at either end is kept (separators)
    out: list[str] = []
    pos = 0
    for m in _CODE_SPAN.finditer(s):
        out.append(_plain(s[pos : m.start()]))
        span = m.group(0)
        out.append(span.replace("|", "\\|") if table else span)
        pos = m.end()
    out.append(_plain(s[pos:]))
    joined = "".join(out)
    return Md(_ORDERED.sub(r"\1\\\2", joined))


def cell(text: Any) -> Md:
    """``text`` escaped for a cell of a GFM table."""
    return escape(text, table=True)


def role_text(text: Any) -> Md:
    """``text`` usable as the title of a ``{doc}`` or ``{ref}`` role: one line, no backticks or angle brackets,
    and Markdown punctuation escaped."""
    s = " ".join(str(text).split()).replace("`", "'").replace("<", "‹").replace(">", "›")
    return Md(s)


def heading(text: Any) -> Md:
    """``text`` as a page title: escaped, with angle brackets shown as ‹ › (the theme copies a page's title into
    its print header as HTML, where an escaped ``&lt;`` would turn back into a tag)."""
    return escape(str(text).replace("<", "‹").replace(">", "›"))


def code(value: Any, *, table: bool = True) -> Md:
    """``value`` as an inline code span (a longer fence when it contains backticks)."""
    s = " ".join(str(value).split())
    if table:
        s = s.replace("|", "\\|")
    fence = "`"
    while fence in s:
        fence += "`"
    pad = " " if s.startswith("`") or s.endswith("`") else ""
    return Md(f"{fence}{pad}{s}{pad}{fence}")


def attr(value: Any) -> Md:
    """``value`` escaped for an HTML attribute or element body inside a raw HTML block."""
    return Md(html.escape(" ".join(str(value).split()), quote=True))


def formula(text: Any, where: str) -> Md:
    """A card's formula for a ``{math}`` directive: blank lines removed, refused unless it is LaTeX only."""
    if not isinstance(text, str):
        raise CardTextError(f"{where}: expected text, got {type(text).__name__}")
    problems = formula_problems(text)
    if problems:
        raise CardTextError(f"{where}: " + "; ".join(problems) + " (run `posenc validate`)")
    return Md("\n".join(ln for ln in text.splitlines() if ln.strip()))


def url(text: Any, where: str) -> Md:
    """A card's https URL, refused unless it can be put into a link as is."""
    problems = url_problems(str(text))
    if problems:
        raise CardTextError(f"{where}: {problems[0]}")
    return Md(str(text))


def finalize(value: Any) -> str:
    """What a template's ``{{ expression }}`` prints: :class:`Md` as is, numbers as text, ``None`` as an empty
    string, and any other value escaped as card text."""
    if isinstance(value, Md):
        return str(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return str(escape(value))
