"""Reading the knowledge base: the cards ``taxonomy/methods/<id>.yaml`` and the tree ``taxonomy/categories.yaml``.

The root is :func:`posenc.paths.find_root` (``POSENC_ROOT`` honoured) and every file is read by
:func:`posenc.paths.read_yaml` (safe loader, size and alias limits). Errors are :class:`TaxonomyError`
naming the file (and line, for YAML errors). A card's id is its file stem; ids that are not plain
(``[a-z][a-z0-9_]*``, so never a path such as ``../x``) are refused by name before any file is touched.
Loading does not check the schema: that is :func:`posenc.cards.validate`'s job (and each typed accessor of
:class:`~posenc.cards.schema.Card` checks the field it returns).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from posenc import paths
from posenc.cards.schema import ID_RE, Card, TaxonomyError, hint, show

__all__ = [
    "root_of",
    "check_id",
    "card_path",
    "card_ids",
    "load_card",
    "find_card",
    "load_cards",
    "categories",
    "category_paths",
    "resolve_id",
]

Root = str | os.PathLike[str] | None


def root_of(root: Root = None) -> Path:
    """:func:`posenc.paths.find_root`, with a missing repository reported as :class:`TaxonomyError`."""
    try:
        return paths.find_root(root)
    except paths.RootError as exc:
        raise TaxonomyError(str(exc)) from None


def _read(path: Path, root: Path) -> Any:
    try:
        return paths.read_yaml(path, root)
    except paths.YAMLReadError as exc:
        raise TaxonomyError(str(exc)) from None


def check_id(card_id: str) -> str:
    """``card_id`` when it is a plain id, else :class:`TaxonomyError` naming it."""
    if not isinstance(card_id, str) or not ID_RE.fullmatch(card_id):
        raise TaxonomyError(f"{card_id!r} is not a card id: ids are lower-case words joined by '_' "
                            f"({ID_RE.pattern}), never paths")
    return card_id


def card_path(card_id: str, root: Root = None) -> Path:
    """Where the card ``card_id`` lives (whether or not it exists)."""
    return root_of(root) / paths.METHODS_DIR / f"{check_id(card_id)}.yaml"


def card_ids(root: Root = None) -> list[str]:
    """Ids of every card file (file names without ``.yaml``), sorted; does not parse the files."""
    d = root_of(root) / paths.METHODS_DIR
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def _card(path: Path, root: Path) -> Card:
    data = _read(path, root)
    rel = paths.relative(path, root)
    if not isinstance(data, dict):
        raise TaxonomyError(f"{rel}: expected a mapping at the top level, got {show(data)}")
    return Card(data, path, rel)


def load_card(card_id: str, root: Root = None) -> Card:
    """The card ``card_id``; an unknown id raises :class:`TaxonomyError` suggesting close ones."""
    r = root_of(root)
    path = card_path(card_id, r)
    if not path.is_file():
        raise TaxonomyError(f"unknown card id {card_id!r}" + hint(card_id, card_ids(r)))
    return _card(path, r)


def find_card(card_id: str, root: Root = None) -> Card | None:
    """The card ``card_id``, or None when no card file has that id (any other problem raises)."""
    r = root_of(root)
    path = card_path(card_id, r)
    return _card(path, r) if path.is_file() else None


def load_cards(root: Root = None) -> list[Card]:
    """Every card, in file-name order. The first unreadable file raises; schema problems are
    :func:`posenc.cards.validate`'s job."""
    r = root_of(root)
    return [_card(path, r) for path in sorted((r / paths.METHODS_DIR).glob("*.yaml"))]


# ---------------------------------------------------------------------------------------------- categories
def categories(root: Root = None) -> list[dict[str, Any]]:
    """The category tree (a list of root nodes with nested ``children``)."""
    r = root_of(root)
    data = _read(r / paths.CATEGORIES_FILE, r)
    if not isinstance(data, list):
        raise TaxonomyError(f"{paths.CATEGORIES_FILE}: expected a list of root categories, got {show(data)}")
    return data


def category_paths(tree: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """Every node of the tree keyed by its path of ids joined by ``/`` (inner nodes included)."""
    out: dict[str, Mapping[str, Any]] = {}

    def walk(nodes: Any, prefix: str) -> None:
        if not isinstance(nodes, list):
            return
        for node in nodes:
            if isinstance(node, Mapping) and isinstance(node.get("id"), str):
                path = f"{prefix}/{node['id']}" if prefix else node["id"]
                out.setdefault(path, node)
                walk(node.get("children"), path)

    walk(list(tree), "")
    return out


# ---------------------------------------------------------------------------------------------- names
def resolve_id(name: str, root: Root = None) -> str:
    """The card id for ``name``: an id, or a case-insensitive id, display name or alias.

    Raises :class:`TaxonomyError` suggesting the closest ids when nothing matches.
    """
    r = root_of(root)
    ids = card_ids(r)
    if name in ids:
        return name
    low = name.casefold()
    hits: set[str] = set()
    for card in load_cards(r):
        aliases = card.get("aliases")
        names = [card.get("id"), card.get("name"), *(aliases if isinstance(aliases, list) else [])]
        if any(isinstance(n, str) and n.casefold() == low for n in names):
            hits.add(card.id)
    if len(hits) == 1:
        return hits.pop()
    if len(hits) > 1:
        raise TaxonomyError(f"{name!r} is ambiguous: it names {', '.join(sorted(hits))}")
    raise TaxonomyError(f"unknown card id {name!r}" + hint(name.lower(), ids))
