"""The cards as flat records, a small filter language over them, and the pandas view.

:func:`records` lifts ``table1.*`` and ``relations.*`` to top-level :data:`COLUMNS`; :func:`parse_query`
reads ``'category~rope learnable=false year>=2022'`` by hand (nothing is evaluated) and checks each
condition against the field's schema; :func:`filter_records` applies it to records and :func:`query` to the
DataFrame of :func:`load`.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from posenc.cards.schema import CARD_SCHEMA, Card, Spec, hint
from posenc.cards.store import load_cards

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "COLUMNS",
    "FIELD_ALIASES",
    "OPERATORS",
    "Condition",
    "QueryError",
    "filter_records",
    "flatten",
    "load",
    "parse_query",
    "query",
    "records",
]

#: Flattened column names of :func:`load` / :func:`records`, in order. Nested ``table1`` and
#: ``relations`` keys become top-level columns (``table1.source`` → ``table1_source``).
COLUMNS: tuple[str, ...] = (
    "id", "name", "aliases", "category", "coverage", "survey_section", "year", "year_venue", "venue",
    "bibkey", "extra_bibkeys", "arxiv", "code", "summary", "formula",
    "manifestation", "learnable", "integration", "injection", "table1_source",
    "hyperparameters", "needs", "builds_on", "variant_of", "implementation", "implementation_note",
    "notebook", "claims", "notes", "file",
)  # fmt: skip

#: Dotted card paths that a query may use in place of the flattened column name.
FIELD_ALIASES = {
    "table1.manifestation": "manifestation",
    "table1.learnable": "learnable",
    "table1.integration": "integration",
    "table1.injection": "injection",
    "table1.source": "table1_source",
    "relations.builds_on": "builds_on",
    "relations.variant_of": "variant_of",
}


def _column_spec(column: str) -> Spec | None:
    """The schema node behind a flattened column (None for ``file``)."""
    fields = CARD_SCHEMA.fields or {}
    if column in fields:
        return fields[column]
    for dotted, col in FIELD_ALIASES.items():
        if col == column:
            parent, child = dotted.split(".")
            return (fields[parent].fields or {})[child]
    return None


# ---------------------------------------------------------------------------------------------- records
def flatten(card: Mapping[str, Any]) -> dict[str, Any]:
    """One card as a flat record with the :data:`COLUMNS` (``table1.*`` and ``relations.*`` lifted; ``file``
    is the card's repo-relative file)."""
    table1 = card.get("table1") if isinstance(card.get("table1"), Mapping) else {}
    relations = card.get("relations") if isinstance(card.get("relations"), Mapping) else {}
    rec: dict[str, Any] = {}
    for col in COLUMNS:
        if col in ("manifestation", "learnable", "integration", "injection"):
            rec[col] = table1.get(col)
        elif col == "table1_source":
            rec[col] = table1.get("source")
        elif col in ("builds_on", "variant_of"):
            rec[col] = relations.get(col, [])
        elif col == "file":
            rec[col] = card.file if isinstance(card, Card) else card.get("__file__")
        elif col == "id" and isinstance(card, Card):
            rec[col] = card.get("id", card.id)
        else:
            rec[col] = card.get(col)
    return rec


def records(root: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """Every card flattened (see :func:`flatten`), without pandas."""
    return [flatten(c) for c in load_cards(root)]


def load(root: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """The cards as a pandas DataFrame: one row per card, the flattened :data:`COLUMNS`."""
    # Imported here, not at the top: pandas takes about a second to import, and the knowledge-base commands
    # (`posenc list/show/query/cite/validate`) must start fast; they work on records() instead.
    import pandas as pd

    return pd.DataFrame(records(root), columns=list(COLUMNS))


# ---------------------------------------------------------------------------------------------- queries
class QueryError(ValueError):
    """A query that cannot be parsed or does not fit the fields; the message names the bad token."""


OPERATORS = ("<=", ">=", "!=", "=", "<", ">", "~")
_FIELD_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_NUMBER_RE = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


@dataclass(frozen=True)
class Condition:
    """``field op value``; ``raw`` is the value as typed, ``text`` the whole condition (for messages)."""

    field: str
    op: str
    value: Any
    text: str
    raw: str = ""

    def matches(self, record: Mapping[str, Any]) -> bool:
        return _matches(self, record.get(self.field))


def _scalar(raw: str, quoted: bool) -> Any:
    """Typed value of an unquoted token: true/false, null, numbers; quoted text is always a string."""
    if quoted:
        return raw
    low = raw.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("null", "none"):
        return None
    if _NUMBER_RE.fullmatch(raw):
        return float(raw) if any(c in raw for c in ".eE") else int(raw)
    return raw


def _tokenize(text: str) -> Iterator[tuple[str, str, Any, str, str]]:
    """Yield ``(field, op, value, raw_value, token_text)`` for each whitespace-separated condition.

    Grammar: ``field op value`` where ``field`` is a name (dots allowed, e.g. ``table1.learnable``),
    ``op`` one of :data:`OPERATORS` and ``value`` either a bare word or a '…' / "…" quoted string
    (a backslash escapes the quote). Spaces around the operator are allowed.
    """
    i, n = 0, len(text)
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            return
        start = i
        m = _FIELD_RE.match(text, i)
        if m is None:
            bad = text[i:].split()[0]
            raise QueryError(f"expected a field name at {bad!r} (position {i + 1})")
        name = m.group(0)
        i = m.end()
        while i < n and text[i].isspace():
            i += 1
        op = next((o for o in OPERATORS if text.startswith(o, i)), None)
        if op is None:
            rest = text[i:].split()[0] if text[i:].strip() else ""
            what = f"found {rest!r}" if rest else "found the end of the query"
            raise QueryError(f"expected an operator ({' '.join(OPERATORS)}) after {name!r}, {what}")
        i += len(op)
        if text.startswith("=", i) and op in ("=", "!="):  # tolerate '==' / '!=='
            i += 1
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            raise QueryError(f"missing value after {text[start:i].strip()!r}")
        if text[i] in "'\"":
            quote, i = text[i], i + 1
            buf = []
            while i < n and text[i] != quote:
                if text[i] == "\\" and i + 1 < n and text[i + 1] in (quote, "\\"):
                    i += 1
                buf.append(text[i])
                i += 1
            if i >= n:
                raise QueryError(f"unterminated {quote} quote in {text[start:].strip()!r}")
            i += 1
            raw, quoted = "".join(buf), True
            if i < n and not text[i].isspace():
                raise QueryError(f"expected a space after the closing quote in {text[start:i + 1]!r}")
        else:
            j = i
            while j < n and not text[j].isspace():
                j += 1
            raw, quoted, i = text[i:j], False, j
            if raw[0] in OPERATORS[-1] + "<>=!":
                raise QueryError(f"unexpected operator in {text[start:i]!r}")
        yield name, op, _scalar(raw, quoted), raw, text[start:i]


def _check_condition(cond: Condition) -> None:
    """Reject comparisons that can never make sense for the field's type (named in the error)."""
    spec = _column_spec(cond.field)
    v = cond.value
    is_num = isinstance(v, (int, float)) and not isinstance(v, bool)
    if cond.op in ("<", "<=", ">", ">="):
        if not is_num:
            raise QueryError(f"{cond.text!r}: operator {cond.op!r} needs a number, got {v!r}")
        if spec is not None and spec.kind not in ("int", "number"):
            raise QueryError(f"{cond.text!r}: field {cond.field!r} is not numeric")
        return
    if spec is None or cond.op == "~" or v is None:
        return
    if spec.kind == "bool" and not isinstance(v, bool):
        raise QueryError(f"{cond.text!r}: field {cond.field!r} is true or false, got {v!r}")
    if spec.kind == "enum" and isinstance(v, str) and v not in spec.values:
        raise QueryError(f"{cond.text!r}: {v!r} is not a value of {cond.field!r} "
                         f"({', '.join(spec.values)})" + hint(v, spec.values))


def parse_query(text: str, columns: Iterable[str] = COLUMNS) -> list[Condition]:
    """Parse ``'category~rope learnable=false year>=2022'`` into conditions (all must hold).

    Operators: ``=`` ``!=`` ``<`` ``<=`` ``>`` ``>=`` ``~`` (case-insensitive substring). On list fields
    (``aliases``, ``builds_on`` …) and ``+``-joined Table 1 fields, ``=`` means membership and ``~`` matches
    any element. Bare ``true``/``false``, ``null`` and numbers are typed; quote a value to keep it a string
    or to include spaces. Nothing is evaluated: the text is tokenized by hand.
    """
    cols = list(columns)
    out = []
    for name, op, value, raw, token in _tokenize(text):
        col = FIELD_ALIASES.get(name, name)
        if col not in cols:
            candidates = cols + list(FIELD_ALIASES)
            raise QueryError(f"unknown field {name!r} in {token!r}" + hint(name, candidates)
                             + f" (fields: {', '.join(cols)})")
        cond = Condition(col, op, value, token, raw)
        _check_condition(cond)
        out.append(cond)
    return out


def _elements(cell: Any, column: str) -> list[Any] | None:
    """The elements of a list-like cell (lists and '+'-joined enums), or None for a scalar cell."""
    if isinstance(cell, list):
        return cell
    spec = _column_spec(column)
    if spec is not None and spec.joined and isinstance(cell, str):
        return cell.split("+")
    return None


def _text(x: Any) -> str:
    if isinstance(x, Mapping):
        return " ".join(_text(v) for v in x.values())
    if isinstance(x, list):
        return " ".join(_text(v) for v in x)
    if isinstance(x, bool):
        return "true" if x else "false"
    return "" if x is None else str(x)


def _equal(cell: Any, value: Any, raw: str) -> bool:
    """Equality of a cell and a typed query value; text cells compare with the value as typed, so
    ``arxiv=2108.12409`` matches the string "2108.12409"."""
    if isinstance(cell, bool) or isinstance(value, bool):
        return isinstance(cell, bool) and isinstance(value, bool) and cell == value
    if isinstance(cell, (int, float)) and isinstance(value, (int, float)):
        return float(cell) == float(value)
    if isinstance(cell, (int, float)) and isinstance(value, str):
        return str(cell) == value
    if isinstance(cell, str) and isinstance(value, (int, float)):
        return cell == raw
    return bool(cell == value)


def _matches(cond: Condition, cell: Any) -> bool:
    op, value = cond.op, cond.value
    elements = _elements(cell, cond.field)
    if op == "~":
        needle = (cond.raw or _text(value)).casefold()
        if elements is not None:
            return any(needle in _text(e).casefold() for e in elements)
        return cell is not None and needle in _text(cell).casefold()
    if op in ("=", "!="):
        if elements is not None:
            hit = (not elements) if value is None else any(_equal(e, value, cond.raw) for e in elements)
        else:
            hit = cell is None if value is None else cell is not None and _equal(cell, value, cond.raw)
        return hit if op == "=" else not hit
    # ordering: numbers only; null and non-numeric cells never match
    if isinstance(cell, bool) or not isinstance(cell, (int, float)):
        return False
    return {"<": cell < value, "<=": cell <= value, ">": cell > value, ">=": cell >= value}[op]


def filter_records(recs: Iterable[Mapping[str, Any]], text: str) -> list[Mapping[str, Any]]:
    """The records matching every condition of the query ``text`` (see :func:`parse_query`)."""
    recs = list(recs)
    conds = parse_query(text)
    return [r for r in recs if all(c.matches(r) for c in conds)]


def query(text: str, root: str | os.PathLike[str] | None = None, df: pd.DataFrame | None = None) -> pd.DataFrame:
    """The rows of :func:`load` (or of ``df``) matching the query ``text``."""
    frame = load(root) if df is None else df
    conds = parse_query(text, columns=frame.columns)
    # pandas stores missing numbers as NaN: they are null for the query
    recs = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for r in frame.to_dict("records")]
    mask = [all(c.matches(r) for c in conds) for r in recs]
    return frame[mask]
