"""The knowledge base: method cards, the category tree, their schema, validation, queries and citations.

Every method is a YAML card ``taxonomy/methods/<id>.yaml``; the tree of categories (the branches of Zhao et
al. 2024, "Length Extrapolation of Transformers: A Survey from the Perspective of Positional Encoding",
Findings of EMNLP 2024, plus the branches after it) is ``taxonomy/categories.yaml``. The card format is
``book/card_format.md``. One module per question:

* :mod:`~posenc.cards.schema`: the schema as data, typed cards (:class:`Card`, :class:`Claim`,
  :class:`Expect`) and the only ``expect`` validator (:func:`parse_expect`);
* :mod:`~posenc.cards.store`: the root, loading cards and categories, resolving names to ids;
* :mod:`~posenc.cards.validate`: every rule of the format at once, and the registry read statically;
* :mod:`~posenc.cards.query`: flat records, the filter language and the pandas view;
* :mod:`~posenc.cards.citation`: the references of a card (through :mod:`posenc.cite`).

Importing the package is light: YAML only (through :mod:`posenc.paths`); pandas only in :func:`load`,
bibtexparser only when citing or validating, torch never.
"""

from posenc.cards.citation import card_entries, card_keys, cite_card
from posenc.cards.query import (
    COLUMNS,
    FIELD_ALIASES,
    Condition,
    QueryError,
    filter_records,
    flatten,
    load,
    parse_query,
    query,
    records,
)
from posenc.cards.schema import (
    CARD_SCHEMA,
    CATEGORY_SCHEMA,
    CLAIM_SCHEMA,
    CONTROL,
    EXPECT_SCHEMA,
    EXPECT_TASKS,
    EXPECT_VARIANTS,
    ID_RE,
    Card,
    Claim,
    Expect,
    Point,
    Problem,
    Spec,
    TaxonomyError,
    check_value,
    hint,
    parse_expect,
)
from posenc.cards.store import (
    card_ids,
    card_path,
    categories,
    category_paths,
    check_id,
    find_card,
    load_card,
    load_cards,
    resolve_id,
    root_of,
)
from posenc.cards.validate import RegistryEntry, count_sentences, static_registry, validate

__all__ = [
    "CARD_SCHEMA",
    "CATEGORY_SCHEMA",
    "CLAIM_SCHEMA",
    "COLUMNS",
    "EXPECT_SCHEMA",
    "EXPECT_VARIANTS",
    "FIELD_ALIASES",
    "ID_RE",
    "Card",
    "Claim",
    "Condition",
    "CONTROL",
    "EXPECT_TASKS",
    "Expect",
    "Point",
    "Problem",
    "QueryError",
    "RegistryEntry",
    "Spec",
    "TaxonomyError",
    "card_entries",
    "card_ids",
    "card_keys",
    "card_path",
    "categories",
    "category_paths",
    "check_id",
    "check_value",
    "cite_card",
    "count_sentences",
    "filter_records",
    "find_card",
    "flatten",
    "hint",
    "load",
    "load_card",
    "load_cards",
    "parse_expect",
    "parse_query",
    "query",
    "records",
    "resolve_id",
    "root_of",
    "static_registry",
    "validate",
]
