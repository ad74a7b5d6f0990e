"""posenc.cards.citation: which references a card cites, and those entries formatted by posenc.cite."""

from __future__ import annotations

from pathlib import Path

import bibtexparser
import pytest

from posenc import cards


def test_card_keys() -> None:
    card = {"id": "x", "bibkey": "a", "extra_bibkeys": ["b", "a", "c"]}
    assert cards.card_keys(card) == ["a"]
    assert cards.card_keys(card, all_keys=True) == ["a", "b", "c"]
    with pytest.raises(KeyError, match="has no bibkey"):
        cards.card_keys({"id": "x"})


def test_cite_card(repo: Path) -> None:
    out = cards.cite_card("alibi", "bibtex", root=repo)
    assert out.startswith("@inproceedings{press2022train,") and "vaswani2017attention" not in out
    out = cards.cite_card("alibi", "bibtex", all_keys=True, root=repo)
    assert [e.key for e in bibtexparser.parse_string(out).entries] == ["press2022train", "vaswani2017attention"]
    assert cards.cite_card("rope", "apa", root=repo).startswith("Su, J., Ahmed, M.,")
    # the card's arXiv id links an entry that has none of its own
    (repo / "references.bib").write_text(
        (repo / "references.bib").read_text().replace("  eprint = {2108.12409},\n  archiveprefix = {arXiv},\n", "")
        .replace("  url = {https://openreview.net/forum?id=R8sQPpGCv0}\n", "")
    )
    assert "](https://arxiv.org/abs/2108.12409)" in cards.cite_card("alibi", "markdown", root=repo)
    with pytest.raises(ValueError, match="unknown citation format"):
        cards.cite_card("alibi", "chicago", root=repo)


def test_cite_the_project_and_unknown_cards(repo: Path) -> None:
    assert cards.cite_card("posenc", "bibtex", root=repo).startswith("@software{posenc,")
    with pytest.raises(cards.TaxonomyError, match=r"unknown card id 'alibo'; did you mean 'alibi'\?"):
        cards.cite_card("alibo", root=repo)
    with pytest.raises(cards.TaxonomyError, match="is not a card id"):
        cards.cite_card("../references", root=repo)


def test_unresolved_key_names_the_bibliography(repo: Path) -> None:
    p = repo / "taxonomy/methods/rope.yaml"
    p.write_text(p.read_text().replace("bibkey: su2024roformer", "bibkey: su2021roformer"))
    with pytest.raises(KeyError, match=r"'su2021roformer' is not a key of .*references.bib; did you mean su2024"):
        cards.card_entries(cards.load_card("rope", repo), root=repo)
