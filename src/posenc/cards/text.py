"""What a card's ``formula`` may contain: LaTeX math, and nothing a page or MathJax would run or include.

The book puts the formula, as written, into a ``{math}`` directive that MathJax typesets; every other free-text
field of a card is escaped as data (:mod:`posenc.book.safe`). A formula cannot be escaped without breaking its
LaTeX, so it is validated instead: ``posenc validate`` reports a formula that fails these rules, and the book
refuses to build it, naming the card and the field. The rules:

* no line that could end the directive or start another one: no backticks or ``~~~`` fences, no line starting
  with ``:`` (directive options or a colon fence), no ``---`` (front matter), no directive or role names such
  as ``{include}``;
* no raw HTML (a tag such as ``<script>``, ``</div>`` or ``<!--``; ``i<j`` is math) and no ``$`` delimiters
  (the page adds them);
* no TeX command that reaches outside the formula: links and HTML attributes (``\\href``, ``\\url``,
  ``\\class``, ``\\cssId``, ``\\style``, ``\\data``, ``\\html``), loading MathJax extensions (``\\require``),
  reading files (``\\input``, ``\\include``), defining macros (``\\def``, ``\\newcommand``, ...);
* balanced braces (an unbalanced formula is a MathJax error on the page), printable characters only, and at
  most :data:`MAX_FORMULA_CHARS` characters.

This module is plain Python (no YAML, torch or pandas), shared by the validator and the book.
"""

from __future__ import annotations

import re

__all__ = ["MAX_FORMULA_CHARS", "FORBIDDEN_COMMANDS", "formula_problems", "url_problems"]

#: The longest formula accepted (the longest committed one is under 600 characters).
MAX_FORMULA_CHARS = 4000

#: TeX control sequences a formula may not use (MathJax's html, require and macro extensions, file access).
FORBIDDEN_COMMANDS = frozenset({
    "href", "url", "class", "cssId", "style", "data", "html", "require", "unicode", "input", "include",
    "includegraphics", "def", "gdef", "edef", "xdef", "let", "newcommand", "renewcommand", "providecommand",
    "DeclareMathOperator", "newenvironment", "renewenvironment", "catcode", "csname", "write", "openin", "read",
    "immediate", "special", "mmlToken", "texttip", "toggle", "mathtip", "tooltip", "fbox", "raw",
})

_COMMAND = re.compile(r"\\([A-Za-z]+)")
# A tag as an HTML parser sees one: "<name" followed by whitespace, "/" or ">", or "</", "<!", "<?" ("i<j" is
# math and stays).
_HTML = re.compile(r"<(?:[A-Za-z][A-Za-z0-9-]*[\s/>]|[/!?])")
_DIRECTIVE = re.compile(r"\{(?:include|literalinclude|raw|eval-rst|code-cell|math|figure|image|iframe|toctree|"
                        r"download|doc|ref|cite[:\w]*)\}")


def formula_problems(text: str) -> list[str]:
    """Every reason ``text`` is not a plain LaTeX formula (empty when it is one)."""
    out: list[str] = []
    if len(text) > MAX_FORMULA_CHARS:
        out.append(f"is {len(text):,} characters long, over the {MAX_FORMULA_CHARS:,}-character limit")
    bad_chars = sorted({c for c in text if (ord(c) < 32 and c not in "\n\t") or ord(c) == 127})
    if bad_chars:
        out.append("contains control characters " + ", ".join(f"U+{ord(c):04X}" for c in bad_chars))
    if "`" in text:
        out.append("contains a backtick: a formula is LaTeX only (backticks open or close code fences)")
    if "~~~" in text:
        out.append("contains '~~~' (a code fence)")
    if "$" in text:
        out.append("must not contain '$' delimiters (the page adds them)")
    for i, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if s.startswith(":"):
            out.append(f"line {i} starts with ':' (directive option syntax)")
        if s.startswith("---") or s.startswith("+++"):
            out.append(f"line {i} starts with {s[:3]!r} (front matter or a block marker)")
    if _HTML.search(text):
        out.append("contains raw HTML (a tag such as <script> or </div>); write a less-than sign as \\lt")
    if _DIRECTIVE.search(text):
        out.append("contains MyST directive or role syntax such as {include} or {raw}")
    used = sorted({m.group(1) for m in _COMMAND.finditer(text)} & FORBIDDEN_COMMANDS)
    if used:
        out.append("uses TeX command(s) not allowed in a formula: " + ", ".join(f"\\{c}" for c in used))
    depth = 0
    for m in re.finditer(r"\\.|[{}]", text, re.S):
        tok = m.group(0)
        if tok == "{":
            depth += 1
        elif tok == "}":
            depth -= 1
            if depth < 0:
                break
    if depth != 0:
        out.append("has unbalanced braces { }")
    return out


_URL = re.compile(r"https://[A-Za-z0-9.-]+(?::\d+)?(?:/[A-Za-z0-9._~:/?#@!&'()*+,;=%-]*)?")


def url_problems(text: str) -> list[str]:
    """Why ``text`` is not a plain https URL that can be put into a link as is (empty when it is one)."""
    if not _URL.fullmatch(text):
        return ["is not a plain https:// URL (letters, digits and URL punctuation only; no spaces, quotes, "
                "angle brackets, braces or backticks)"]
    return []
