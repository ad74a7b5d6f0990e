"""Citations of cards: which ``references.bib`` keys a card cites, and those entries formatted.

The bibliography itself (parsing, APA/BibTeX/Markdown) is :mod:`posenc.cite`, which knows nothing of cards;
this module joins the two (``cards`` may import ``cite``, never the reverse).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from posenc.cards.store import load_card

if TYPE_CHECKING:
    from bibtexparser.model import Entry

__all__ = ["card_keys", "card_entries", "cite_card"]


def card_keys(card: Mapping[str, Any], all_keys: bool = False) -> list[str]:
    """The card's primary ``bibkey`` and, with ``all_keys``, its ``extra_bibkeys`` (in order, no repeats)."""
    keys = [card.get("bibkey")]
    if all_keys:
        keys += list(card.get("extra_bibkeys") or [])
    out: list[str] = []
    for k in keys:
        if isinstance(k, str) and k and k not in out:
            out.append(k)
    if not out:
        raise KeyError(f"card {card.get('id')!r} has no bibkey")
    return out


def card_entries(card: Mapping[str, Any], all_keys: bool = False, root: str | os.PathLike[str] | None = None
                 ) -> tuple[list[Entry], dict[str, str]]:
    """The bibliography entries ``card`` cites, and the card's arXiv id keyed by its primary ``bibkey`` (a
    link for entries that have none). An unknown key raises :class:`KeyError` suggesting close ones."""
    # Imported here: bibtexparser costs ~60 ms at start-up, and `posenc list/show/query` never need it.
    from posenc import cite

    bib = cite.bibliography(root)
    entries = [bib.get(k) for k in card_keys(card, all_keys)]
    arxiv = {card["bibkey"]: card["arxiv"]} if isinstance(card.get("arxiv"), str) else {}
    return entries, arxiv


def cite_card(card_id: str, fmt: str = "bibtex", all_keys: bool = False,
              root: str | os.PathLike[str] | None = None) -> str:
    """The citation(s) of card ``card_id`` in ``fmt`` (see :data:`posenc.cite.FORMATS`); ``posenc`` cites the
    project itself."""
    from posenc import cite  # lazy, as in card_entries

    if card_id == cite.PROJECT_KEY:
        return cite.format_entries(cite.project_entries(root), fmt)
    entries, arxiv = card_entries(load_card(card_id, root), all_keys, root)
    return cite.format_entries(entries, fmt, arxiv)
