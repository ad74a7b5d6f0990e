"""Card text as data (src/posenc/book/safe.py): hostile card fields reach the page as literal text, and a formula
that is not LaTeX stops the book, naming the card and the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from posenc import book
from posenc.book import safe

HOSTILE = [
    "```\n```{include} /etc/passwd\n```",  # close a fence, open an include
    ":::{include} /etc/passwd\n:::",  # a colon fence
    "{include}`/etc/passwd` and {raw}`<b>x</b>`",  # roles
    "<script>alert('x')</script> <img src=x onerror=alert(1)>",  # raw HTML
    "$x$ and $$y$$ and {{ substitution }} and [link](javascript:alert(1)) and ![img](x.png)",
    "# heading\n- list\n1. ordered\n> quote\n| a | b |\n---",
    "&lt;script&gt; &#60;b&#62; *em* _em_ **strong** ~~del~~ <https://example.org>",
]


def _tokens(text: str) -> list[Any]:
    """The MyST tokens of ``text`` (the parser Sphinx uses, without Sphinx)."""
    from markdown_it.renderer import RendererHTML
    from myst_parser.config.main import MdParserConfig
    from myst_parser.parsers.mdit import create_md_parser

    md = create_md_parser(MdParserConfig(enable_extensions={"dollarmath", "colon_fence", "substitution"}),
                          RendererHTML)
    out = []
    for tok in md.parse(text):
        out.append(tok)
        out += tok.children or []
    return out


@pytest.mark.parametrize("text", HOSTILE)
def test_escaped_text_is_one_paragraph_of_plain_text(text: str) -> None:
    escaped = safe.escape(text)
    kinds = {t.type for t in _tokens(str(escaped))}
    assert kinds <= {"paragraph_open", "paragraph_close", "inline", "text", "code_inline", "softbreak"}, kinds
    # Shown as typed (whitespace collapsed to one line).
    rendered = "".join(t.content for t in _tokens(str(escaped)) if t.type in ("text", "code_inline"))
    assert " ".join(rendered.split()) == " ".join(text.split()).replace("`", "") or "`" in text


def test_code_spans_in_card_prose_stay_code() -> None:
    assert safe.escape("a_b `c_d` *e*") == "a\\_b `c_d` \\*e\\*"
    assert safe.escape("x | `y|z`", table=True) == "x \\| `y\\|z`"
    assert safe.escape("multi\nline   text") == "multi line text"
    assert safe.role_text("a <b> `c`") == "a ‹b› 'c'"


def test_templates_escape_by_default() -> None:
    assert safe.finalize("<b>") == "\\<b\\>"
    assert safe.finalize(safe.Md("<b>")) == "<b>"
    assert safe.finalize(None) == "" and safe.finalize(True) == "true" and safe.finalize(3) == "3"


def _set_field(repo: Path, card: str, field: str, value: Any) -> None:
    path = repo / "taxonomy" / "methods" / f"{card}.yaml"
    data = yaml.safe_load(path.read_text())
    data[field] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.mark.parametrize("formula", [
    "x```\n```{include} /etc/passwd",
    "q_i k_j\n:::{include} /etc/passwd",
    "<script>alert(1)</script>",
    "\\href{javascript:alert(1)}{x}",
    "\\require{unicode} x",
    "{x",
])
def test_a_formula_that_is_not_latex_stops_the_book_naming_card_and_field(site_repo: Path, formula: str) -> None:
    _set_field(site_repo, "alibi", "formula", formula)
    with pytest.raises(book.CardTextError, match=r"taxonomy/methods/alibi\.yaml: field 'formula': "):
        book.generate(site_repo)
    assert not (site_repo / "book" / "generated" / "methods").exists()  # nothing half-written


def test_a_code_url_that_is_not_plain_stops_the_book(site_repo: Path) -> None:
    _set_field(site_repo, "alibi", "code", "https://example.org/x>\n```{include} /etc/passwd")
    with pytest.raises(book.CardTextError, match=r"alibi\.yaml: field 'code'"):
        book.generate(site_repo)


def _hostile_prose(repo: Path) -> None:
    _set_field(repo, "alibi", "name", "ALiBi <script>alert('name')</script>")
    _set_field(repo, "alibi", "summary", "Closes a fence.\n```\n```{include} /etc/passwd\n```\nDone.")
    _set_field(repo, "alibi", "notes", [":::{include} /etc/passwd\n:::", "{raw}`<script>alert(2)</script>`"])
    _set_field(repo, "alibi", "aliases", ["<img src=x onerror=alert(3)>"])
    _set_field(repo, "alibi", "venue", "{{ substitution }} $x$")


def test_hostile_prose_renders_literally(site_repo: Path) -> None:
    _hostile_prose(site_repo)
    files = book.render(book.load_context(site_repo))
    page = files["book/generated/methods/alibi.md"].decode()
    kinds = {t.type for t in _tokens(page)}
    assert "html_block" not in kinds and "html_inline" not in kinds
    fences = [t.info for t in _tokens(page) if t.type == "fence"]
    assert all(f in ("{math}", "{literalinclude}", "bibtex", "{figure}") or f.startswith("{literalinclude}")
               for f in fences), fences
    assert "{include}" not in [f.split()[0] for f in fences if f]
    assert "# ALiBi ‹script›" in page and "\\<img src" in page


@pytest.mark.slow
def test_hostile_prose_builds_into_a_page_without_script_or_file_contents(site_repo: Path) -> None:
    _hostile_prose(site_repo)
    assert book.generate(site_repo).files
    res = book.build(site_repo, site_repo / "out" / "_build")
    assert res.returncode == 0, "\n".join(res.warnings) or res.log[-3000:]
    html = (res.html_dir / "book" / "generated" / "methods" / "alibi.html").read_text(encoding="utf-8")
    assert "<script>alert" not in html and "<img src=x" not in html and "root:x:0:0" not in html
    assert "&lt;img src=x onerror=alert(3)&gt;" in html  # the alias is shown as text, not made an element
    # A title's angle brackets are shown as ‹ › (the theme's print header would turn an escaped one into a tag)
    assert "ALiBi ‹script›alert(" in html
    assert "{include} /etc/passwd" in html  # shown as text
