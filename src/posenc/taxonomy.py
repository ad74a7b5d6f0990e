"""Deprecated home of the knowledge base: use :mod:`posenc.cards` (and :mod:`posenc.paths` for the root and YAML).

This module only re-exports the old public names, for one release, so that ``posenc.taxonomy.load()`` and
existing imports keep working. It will then be removed. Where each name lives now:

* ``load``, ``query``, ``records``, ``flatten``, ``parse_query``, ``filter_records``, ``COLUMNS``:
  :mod:`posenc.cards.query`;
* ``load_card`` (now a read-only :class:`posenc.cards.Card` mapping), ``load_cards``, ``card_ids``,
  ``card_path``, ``categories``, ``category_paths``, ``resolve_id``: :mod:`posenc.cards.store`;
* ``validate``, ``static_registry``, ``count_sentences``: :mod:`posenc.cards.validate`;
* ``CARD_SCHEMA``, ``CATEGORY_SCHEMA``, ``Spec``, ``Problem``, ``TaxonomyError``: :mod:`posenc.cards.schema`;
* ``find_root`` and ``read_yaml``: :mod:`posenc.paths` (they raise :class:`posenc.paths.RootError` and
  :class:`posenc.paths.YAMLReadError`, both :class:`ValueError`, instead of ``TaxonomyError``).
"""

from posenc.cards import (
    CARD_SCHEMA,
    CATEGORY_SCHEMA,
    COLUMNS,
    FIELD_ALIASES,
    Condition,
    Problem,
    QueryError,
    RegistryEntry,
    Spec,
    TaxonomyError,
    card_ids,
    card_path,
    categories,
    category_paths,
    check_value,
    count_sentences,
    filter_records,
    flatten,
    load,
    load_card,
    load_cards,
    parse_query,
    query,
    records,
    resolve_id,
    static_registry,
    validate,
)
from posenc.paths import BIB_FILE, CATEGORIES_FILE, METHODS_DIR, PE_DIR, ROOT_ENV, find_root, read_yaml

__all__ = [
    "BIB_FILE",
    "CARD_SCHEMA",
    "CATEGORIES_FILE",
    "CATEGORY_SCHEMA",
    "COLUMNS",
    "FIELD_ALIASES",
    "METHODS_DIR",
    "PE_DIR",
    "ROOT_ENV",
    "Condition",
    "Problem",
    "QueryError",
    "RegistryEntry",
    "Spec",
    "TaxonomyError",
    "card_ids",
    "card_path",
    "categories",
    "category_paths",
    "check_value",
    "count_sentences",
    "filter_records",
    "find_root",
    "flatten",
    "load",
    "load_card",
    "load_cards",
    "parse_query",
    "query",
    "read_yaml",
    "records",
    "resolve_id",
    "static_registry",
    "validate",
]
