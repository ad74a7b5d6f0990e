"""The card schema as data, the engine that checks a value against it, and typed cards.

A card is the YAML file ``taxonomy/methods/<id>.yaml`` described in ``book/card_format.md``;
:data:`CARD_SCHEMA` is that page's tables as data and :func:`check_value` reports every deviation as a
``(field, message)`` pair. :class:`Card` wraps the raw mapping read from the file: it *is* a read-only
mapping (``card["id"]``, ``card.get("name")`` keep working) and adds typed accessors (``card.id``,
``card.claims``, ``card.path``).

A claim's ``expect`` (the qualitative effect the experiments test) is validated in exactly one place:
:data:`EXPECT_SCHEMA` with its between-field rules, applied by :func:`parse_expect` (for the experiments) and
by :func:`check_value` over :data:`CARD_SCHEMA` (for ``posenc validate``). To add an ``expect`` field, add one
entry to :data:`EXPECT_SCHEMA` and one to :class:`Expect`, side by side below.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

__all__ = [
    "ID_RE",
    "ARXIV_RE",
    "TaxonomyError",
    "Problem",
    "Spec",
    "check_value",
    "hint",
    "show",
    "EXPECT_METRICS",
    "EXPECT_OPS",
    "EXPECT_VARIANTS",
    "EXPECT_TASKS",
    "CONTROL",
    "EXPECT_SCHEMA",
    "CLAIM_SCHEMA",
    "CARD_SCHEMA",
    "CATEGORY_SCHEMA",
    "Expect",
    "Point",
    "Claim",
    "Card",
    "parse_expect",
]

#: A card id, a category id and a registry id: lower-case words joined by ``_``.
ID_RE = re.compile(r"[a-z][a-z0-9_]*")
#: New-style arXiv ids (2108.12409, optionally with a version) and old-style ones (hep-th/9901001).
ARXIV_RE = re.compile(r"(\d{4}\.\d{4,5}|[a-z][a-z.\-]*/\d{7})(v\d+)?")


class TaxonomyError(ValueError):
    """A card or the category tree cannot be read or used (missing root, YAML error, unknown id, bad field);
    the message names the file and, where there is one, the field."""


@dataclass(frozen=True, order=True)
class Problem:
    """One validation problem: the repo-relative ``file``, the dotted ``field`` (may be empty), a message.

    ``line`` (1-based) is set where it is known: YAML and BibTeX syntax errors, registry entries.
    """

    file: str
    field: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = self.file + (f":{self.line}" if self.line else "")
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "field": self.field, "message": self.message}


# ---------------------------------------------------------------------------------------------- messages
def show(value: Any) -> str:
    """A short rendering of a bad value for messages: repr for scalars, the kind for containers."""
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def hint(word: str, candidates: Iterable[str], n: int = 3) -> str:
    """``"; did you mean 'x', 'y'?"`` or the empty string."""
    close = difflib.get_close_matches(str(word), list(candidates), n=n, cutoff=0.7)
    return "; did you mean " + ", ".join(repr(c) for c in close) + "?" if close else ""


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


# ---------------------------------------------------------------------------------------------- the engine
#: A between-field rule of a mapping: given the mapping and its dotted path, yield ``(field, message)``.
Rule = Callable[[Mapping[str, Any], str], Iterable[tuple[str, str]]]


@dataclass(frozen=True)
class Spec:
    """One node of a schema.

    ``kind`` is one of ``str``, ``int``, ``number``, ``bool``, ``enum``, ``list``, ``map`` and ``value``
    (any scalar or list, but not a mapping). Numbers must be finite (NaN and infinities are errors).
    ``joined`` enums accept several values joined by ``+`` (e.g. ``bias+gate``). ``fields`` of a ``map`` are
    all required unless listed in ``optional``; its ``rules`` check the fields against each other once every
    field has been checked on its own.
    """

    kind: str
    nullable: bool = False
    values: tuple[str, ...] = ()
    joined: bool = False
    item: Spec | None = None
    fields: Mapping[str, Spec] | None = None
    optional: frozenset[str] = frozenset()
    minimum: float | None = None  # inclusive lower bound of an int/number
    pattern: re.Pattern[str] | None = None  # full match for strings
    rules: tuple[Rule, ...] = ()

    def describe(self) -> str:
        """Human-readable type, as used in the ``expected …`` messages."""
        if self.kind == "enum":
            base = ("one or more of " if self.joined else "one of ") + ", ".join(self.values)
            if self.joined:
                base += " joined by '+'"
        else:
            base = {
                "str": "string",
                "int": "int",
                "number": "number",
                "bool": "bool",
                "list": "list",
                "map": "mapping",
                "value": "scalar or list",
            }[self.kind]
        return f"{base} or null" if self.nullable else base


def _str(nullable: bool = False, pattern: re.Pattern[str] | None = None) -> Spec:
    return Spec("str", nullable=nullable, pattern=pattern)


def _enum(*values: str, joined: bool = False, nullable: bool = False) -> Spec:
    return Spec("enum", nullable=nullable, values=values, joined=joined)


def _list(item: Spec) -> Spec:
    return Spec("list", item=item)


def _map(optional: Iterable[str] = (), nullable: bool = False, rules: tuple[Rule, ...] = (), **fields: Spec) -> Spec:
    return Spec("map", nullable=nullable, fields=fields, optional=frozenset(optional), rules=rules)


def check_value(spec: Spec, value: Any, path: str = "") -> list[tuple[str, str]]:
    """Check ``value`` against ``spec``; return ``(field_path, message)`` pairs (empty when valid)."""
    out: list[tuple[str, str]] = []
    _check(spec, value, path, out)
    return out


def _check(spec: Spec, value: Any, path: str, out: list[tuple[str, str]]) -> None:
    def bad() -> None:
        out.append((path, f"expected {spec.describe()}, got {show(value)}"))

    if value is None:
        if not spec.nullable:
            bad()
        return
    kind = spec.kind
    if kind == "str":
        if not isinstance(value, str):
            quote = " (quote it)" if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
            out.append((path, f"expected {spec.describe()}, got {show(value)}{quote}"))
        elif not value.strip():
            out.append((path, "must not be empty"))
        elif spec.pattern is not None and not spec.pattern.fullmatch(value):
            out.append((path, f"{value!r} does not match the pattern {spec.pattern.pattern}"))
    elif kind in ("int", "number"):
        ok_types = (int,) if kind == "int" else (int, float)
        if isinstance(value, bool) or not isinstance(value, ok_types):
            bad()
        elif not math.isfinite(value):  # YAML's .nan / .inf: never a meaningful threshold or measurement
            out.append((path, f"expected a finite number, got {value!r}"))
        elif spec.minimum is not None and value < spec.minimum:
            out.append((path, f"must be >= {spec.minimum:g}, got {value!r}"))
    elif kind == "bool":
        if not isinstance(value, bool):
            bad()
    elif kind == "enum":
        _check_enum(spec, value, path, out)
    elif kind == "value":
        if isinstance(value, Mapping):
            bad()
    elif kind == "list":
        if not isinstance(value, list):
            bad()
            return
        assert spec.item is not None
        for i, item in enumerate(value):
            _check(spec.item, item, _join(path, i), out)
    elif kind == "map":
        if not isinstance(value, Mapping):
            bad()
            return
        known = spec.fields
        if known is None:  # any mapping
            return
        for key in value:
            if key not in known:
                out.append((_join(path, str(key)), "unknown key" + hint(str(key), known)))
        for key, sub in known.items():
            if key in value:
                _check(sub, value[key], _join(path, key), out)
            elif key not in spec.optional:
                out.append((_join(path, key), "missing key"))
        for rule in spec.rules:
            out.extend(rule(value, path))
    else:  # pragma: no cover - schema bug
        raise AssertionError(f"unknown schema kind {kind!r}")


def _check_enum(spec: Spec, value: Any, path: str, out: list[tuple[str, str]]) -> None:
    if not isinstance(value, str):
        out.append((path, f"expected {spec.describe()}, got {show(value)}"))
        return
    parts = value.split("+") if spec.joined else [value]
    for part in parts:
        if part not in spec.values:
            msg = f"expected {spec.describe()}, got {value!r}"
            if spec.joined and len(parts) > 1:
                msg += f" ({part!r} is not allowed)"
            out.append((path, msg + hint(part, spec.values)))
            return
    if len(set(parts)) != len(parts):
        out.append((path, f"{value!r} repeats a value"))
    elif len(parts) > 1 and "none" in parts:
        out.append((path, f"{value!r}: 'none' cannot be combined with other values"))


# ---------------------------------------------------------------------------------------------- expect
@dataclass(frozen=True)
class Point:
    """One of the paper's own numbers: ``value`` measured at sequence ``length``."""

    length: int
    value: float


#: ``ppl_ratio``: the method's perplexity at ``at``×L over its own at 1×. ``ppl_vs``: the method's perplexity at
#: ``at``×L over the comparator's, paired by seed. ``accuracy``: task accuracy at ``at``×L. ``accuracy_vs``: the
#: method's task accuracy minus the comparator's at ``at``×L.
EXPECT_METRICS = ("ppl_ratio", "ppl_vs", "accuracy", "accuracy_vs")
EXPECT_OPS = ("<", "<=", ">", ">=")
#: The experiment variant whose curves judge a claim; null means the method's primary variant.
EXPECT_VARIANTS = ("zero_shot", "finetuned", "scratch")
#: The synthetic tasks (``posenc.tasks.TASKS``; a test keeps the two equal without importing it here).
EXPECT_TASKS = ("needle", "latest", "addition")
#: A comparator that names no card: the base model given the same treatment (its own zero-shot weights for a
#: zero-shot method, the same fine-tune for a fine-tuned one).
CONTROL = "control"
_VS = ("ppl_vs", "accuracy_vs")
_ACC = ("accuracy", "accuracy_vs")


def _expect_rules(expect: Mapping[str, Any], path: str) -> Iterator[tuple[str, str]]:
    """Between-field rules of an ``expect`` (see ``book/card_format.md``)."""
    if "not_tested" in expect:
        for key in expect:
            if key not in ("not_tested", "metric"):
                yield _join(path, key), "not allowed with 'not_tested' (an untested claim states only why)"
        return
    for key in ("metric", "op"):
        if key not in expect:
            yield _join(path, key), "missing key (or give 'not_tested' with the reason)"
    metric = expect.get("metric")
    if metric in _VS and "comparator" not in expect:
        yield _join(path, "comparator"), f"required when metric is {metric!r}"
    elif metric in EXPECT_METRICS and metric not in _VS and "comparator" in expect:
        yield _join(path, "comparator"), f"only allowed when metric is ppl_vs or accuracy_vs, not {metric!r}"
    if metric in _ACC and "task" not in expect:
        yield _join(path, "task"), f"required when metric is {metric!r}"
    elif metric in EXPECT_METRICS and metric not in _ACC and "task" in expect:
        yield _join(path, "task"), f"only allowed when metric is accuracy or accuracy_vs, not {metric!r}"
    if ("value" in expect) != ("value_from" in expect):
        missing = "value_from" if "value" in expect else "value"
        yield _join(path, missing), ("required with an explicit value: where in the paper the number comes from"
                                     if missing == "value_from" else "required with value_from")
    if metric in _ACC and "value" not in expect:
        yield _join(path, "value"), "required for accuracy claims (with value_from)"
    if "comparator_points" in expect and metric != "ppl_vs":
        yield _join(path, "comparator_points"), "only allowed when metric is 'ppl_vs'"


EXPECT_SCHEMA = _map(
    optional=("metric", "op", "variant", "comparator", "task", "at", "value", "value_from", "comparator_points",
              "not_tested"),
    nullable=True,
    rules=(_expect_rules,),
    metric=_enum(*EXPECT_METRICS),
    op=_enum(*EXPECT_OPS),
    variant=_enum(*EXPECT_VARIANTS, nullable=True),
    comparator=_str(pattern=ID_RE),
    task=_enum(*EXPECT_TASKS),
    at=Spec("number", minimum=1),  # a factor of the training length: 1x is the training length itself
    value=Spec("number"),
    value_from=_str(),
    comparator_points=_list(_map(length=Spec("int", minimum=1), value=Spec("number"))),
    not_tested=_str(),
)


@dataclass(frozen=True)
class Expect:
    """A validated ``expect`` (one field per entry of :data:`EXPECT_SCHEMA`; numbers are finite)."""

    metric: str | None = None
    op: str | None = None
    variant: str | None = None
    comparator: str | None = None
    task: str | None = None
    at: float | None = None
    value: float | None = None
    value_from: str | None = None
    comparator_points: tuple[Point, ...] = ()
    not_tested: str | None = None


def parse_expect(raw: Any, where: str) -> Expect | None:
    """``raw`` (a claim's ``expect``) as an :class:`Expect`, or None when it is null.

    Every problem raises one :class:`TaxonomyError` whose lines read ``{where}: expect.{field}: {message}``;
    ``where`` names the file and claim, e.g. ``taxonomy/methods/alibi.yaml: claims[0]``.
    """
    if raw is None:
        return None
    problems = check_value(EXPECT_SCHEMA, raw, "expect")
    if problems:
        raise TaxonomyError("\n".join(f"{where}: {f}: {m}" for f, m in problems))
    values = {f.name: raw.get(f.name) for f in fields(Expect) if f.name in raw}
    if "comparator_points" in values:
        values["comparator_points"] = tuple(Point(p["length"], p["value"]) for p in values["comparator_points"])
    return Expect(**values)


# ---------------------------------------------------------------------------------------------- schemas
COVERAGE = ("survey", "baseline", "not_in_survey", "after_survey")
MANIFESTATION = ("embedding", "bias", "gate", "mask", "scale", "none")
INTEGRATION = ("add", "multiply", "mask", "scale", "none")
INJECTION = ("initial", "every", "none")
NEEDS = ("none", "fine_tuning", "training_from_scratch")

CLAIM_SCHEMA = _map(
    id=_str(),
    source=_enum("paper", "survey_table3"),
    statement=_str(),
    dataset=_str(),
    metric=_str(),
    train_length=Spec("int", nullable=True, minimum=1),
    points=_list(_map(length=Spec("int", minimum=1), value=Spec("number"))),
    expect=EXPECT_SCHEMA,
)

#: The card schema of ``book/card_format.md``, field by field (all keys are required; ``nullable`` ones
#: may be null).
CARD_SCHEMA: Spec = _map(
    id=_str(pattern=ID_RE),
    name=_str(),
    aliases=_list(_str()),
    category=_str(),
    coverage=_enum(*COVERAGE),
    survey_section=_str(nullable=True),
    year=Spec("int", minimum=1950),
    year_venue=Spec("int", nullable=True, minimum=1950),
    venue=_str(nullable=True),
    bibkey=_str(),
    extra_bibkeys=_list(_str()),
    arxiv=_str(nullable=True, pattern=ARXIV_RE),
    code=_str(nullable=True, pattern=re.compile(r"https://\S+")),
    summary=_str(),
    formula=_str(),
    table1=_map(
        manifestation=_enum(*MANIFESTATION, joined=True),
        learnable=Spec("bool"),
        integration=_enum(*INTEGRATION, joined=True),
        injection=_enum(*INJECTION, joined=True),
        source=_enum("survey", "ours"),
    ),
    hyperparameters=_list(_map(name=_str(), default=Spec("value", nullable=True), meaning=_str())),
    needs=_enum(*NEEDS),
    relations=_map(builds_on=_list(_str()), variant_of=_list(_str())),
    implementation=_str(nullable=True),
    implementation_note=_str(nullable=True),
    notebook=_str(nullable=True),
    claims=_list(CLAIM_SCHEMA),
    notes=_list(_str()),
)

#: One node of ``taxonomy/categories.yaml`` (``children`` nest the same schema; the validator walks them).
CATEGORY_SCHEMA: Spec = _map(
    optional=("survey", "children"),
    id=_str(pattern=ID_RE),
    name=_str(),
    survey=_str(),
    in_survey=Spec("bool"),
    description=_str(),
    children=_list(Spec("map")),
)


# ---------------------------------------------------------------------------------------------- typed cards
@dataclass(frozen=True)
class Claim:
    """A validated claim of a card (``book/card_format.md``, section Claims)."""

    id: str
    source: str
    statement: str
    dataset: str
    metric: str
    train_length: int | None
    points: tuple[Point, ...]
    expect: Expect | None


@dataclass(frozen=True, eq=False)
class Card(Mapping[str, Any]):
    """One method card: a read-only mapping over the raw YAML data, plus typed accessors.

    ``path`` is the file and ``file`` its repo-relative name (used in every message). The typed accessors
    check the fields they return and raise :class:`TaxonomyError` naming the file and field; the raw mapping
    is whatever the file holds (``posenc validate`` checks the whole card). Two cards are equal when their
    data are (the comparison of :class:`~collections.abc.Mapping`).
    """

    data: Mapping[str, Any]
    path: Path | None = None
    file: str = field(default="")

    def __post_init__(self) -> None:
        if not self.file:
            object.__setattr__(self, "file", self.path.as_posix() if self.path is not None else "<card>")

    # -- the mapping
    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        return f"Card(file={self.file!r})"

    # -- typed accessors
    def _field(self, name: str) -> Any:
        """The field ``name`` checked against :data:`CARD_SCHEMA` (absent reads as null)."""
        spec = (CARD_SCHEMA.fields or {})[name]
        value = self.data.get(name)
        problems = check_value(replace(spec, nullable=True), value, name)
        if problems:
            raise TaxonomyError("; ".join(f"{self.file}: {f}: {m}" for f, m in problems))
        return value

    @property
    def id(self) -> str:
        """The card id: the file stem (a different ``id`` field is a validation problem)."""
        if self.path is not None:
            return self.path.stem
        cid = self._field("id")
        if cid is None:
            raise TaxonomyError(f"{self.file}: id: missing key")
        return str(cid)

    @property
    def name(self) -> str:
        return str(self._field("name") or self.id)

    @property
    def category(self) -> str | None:
        value: str | None = self._field("category")
        return value

    @property
    def needs(self) -> str | None:
        value: str | None = self._field("needs")
        return value

    @property
    def implementation(self) -> str | None:
        """The registry id of the implementation, or None when the card has none."""
        value: str | None = self._field("implementation")
        return value

    @property
    def bibkey(self) -> str | None:
        value: str | None = self._field("bibkey")
        return value

    @property
    def extra_bibkeys(self) -> list[str]:
        return list(self._field("extra_bibkeys") or [])

    @property
    def arxiv(self) -> str | None:
        value: str | None = self._field("arxiv")
        return value

    @property
    def claims(self) -> list[Claim]:
        """The claims, each validated (its ``expect`` by :func:`parse_expect`'s schema)."""
        raw = self._field("claims") or []
        out = []
        for i, c in enumerate(raw):
            expect = parse_expect(c.get("expect"), f"{self.file}: claims[{i}]")
            points = tuple(Point(p["length"], p["value"]) for p in c["points"])
            out.append(Claim(c["id"], c["source"], c["statement"], c["dataset"], c["metric"], c["train_length"],
                             points, expect))
        return out
