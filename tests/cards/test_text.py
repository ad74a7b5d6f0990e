"""What a card's formula may contain (src/posenc/cards/text.py), and `posenc validate` reporting the rest."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from posenc import cards
from posenc.cards.text import formula_problems, url_problems


def test_every_committed_formula_is_plain_latex() -> None:
    bad = {c.id: formula_problems(c["formula"]) for c in cards.load_cards() if formula_problems(c["formula"])}
    assert bad == {}


@pytest.mark.parametrize(("formula", "message"), [
    ("x```\n```{include} /etc/passwd", "backtick"),
    ("a\n:::{include} /etc/passwd\n:::", "starts with ':'"),
    ("a\n~~~\nb", "'~~~'"),
    ("<script>alert(1)</script>", "raw HTML"),
    ("</div>", "raw HTML"),
    ("x {include} y", "{include}"),
    ("\\href{javascript:alert(1)}{x}", "\\href"),
    ("\\require{html} \\class{x}{y}", "\\class, \\require"),
    ("\\def\\x{1}", "\\def"),
    ("$x$", "'$'"),
    ("{x", "unbalanced"),
    ("x}", "unbalanced"),
    ("a\x07b", "control characters"),
    ("---\ntitle: x", "front matter"),
    ("x" * 5000, "limit"),
])
def test_what_is_not_a_formula(formula: str, message: str) -> None:
    problems = formula_problems(formula)
    assert any(message in p for p in problems), problems


@pytest.mark.parametrize("formula", [
    "q_i k_j^\\top - m_h\\,(i - j),\\qquad j \\le i", "\\sum_{m<k} l_m", "\\{u_k\\} \\lbrace x", "a < b",
    "\\begin{cases} 1 & i \\ge j \\\\ 0 & \\text{else} \\end{cases}"])
def test_latex_passes(formula: str) -> None:
    assert formula_problems(formula) == []


def test_urls() -> None:
    assert url_problems("https://github.com/ofirpress/attention_with_linear_biases") == []
    for bad in ("http://x.org", "https://x.org/a b", "https://x.org/<script>", "https://x.org/`x`", "javascript:x"):
        assert url_problems(bad), bad


def test_validate_reports_a_hostile_formula(repo: Path) -> None:
    path = repo / "taxonomy" / "methods" / "alibi.yaml"
    data = yaml.safe_load(path.read_text())
    data["formula"] = "x```\n```{include} /etc/passwd"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    problems = [str(p) for p in cards.validate(repo)]
    assert any("alibi.yaml" in p and "formula" in p and "backtick" in p for p in problems), problems
