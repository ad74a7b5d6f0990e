"""The taxonomy knowledge base: method cards, the category tree, their schema and a small query language.

Every method is a YAML card ``taxonomy/methods/<id>.yaml``; the tree of categories (the branches of Zhao et
al. 2024, "Length Extrapolation of Transformers: A Survey from the Perspective of Positional Encoding",
Findings of EMNLP 2024, plus the branches after it) is ``taxonomy/categories.yaml``. The card format is
described in ``book/card_format.md``; :data:`CARD_SCHEMA` is the same schema as data and :func:`validate`
checks every rule of that page, reporting every problem at once.

YAML is read with PyYAML's *safe* loader only (plus a duplicate-key check, and YAML 1.2 booleans: only
``true``/``false``): tags such as ``!!python/object`` are reported as errors and never executed.

Importing this module is light: pandas is imported only by :func:`load` (the DataFrame view), and torch
never (the registry ids of the implementations are read statically from ``src/posenc/pe/*.py``).
"""

from __future__ import annotations

import ast
import difflib
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "CARD_SCHEMA",
    "CATEGORY_SCHEMA",
    "COLUMNS",
    "Problem",
    "QueryError",
    "Condition",
    "Spec",
    "TaxonomyError",
    "card_ids",
    "card_path",
    "categories",
    "category_paths",
    "filter_records",
    "find_root",
    "flatten",
    "load",
    "load_card",
    "load_cards",
    "parse_query",
    "query",
    "records",
    "resolve_id",
    "static_registry",
    "validate",
]

ROOT_ENV = "POSENC_ROOT"
CATEGORIES_FILE = "taxonomy/categories.yaml"
METHODS_DIR = "taxonomy/methods"
BIB_FILE = "references.bib"
PE_DIR = "src/posenc/pe"

ID_RE = re.compile(r"[a-z][a-z0-9_]*")
# New-style arXiv ids (2108.12409, optionally with a version) and old-style ones (hep-th/9901001).
ARXIV_RE = re.compile(r"(\d{4}\.\d{4,5}|[a-z][a-z.\-]*/\d{7})(v\d+)?")


class TaxonomyError(ValueError):
    """A card or the category tree cannot be read (missing root, YAML syntax error, unknown id)."""


# ---------------------------------------------------------------------------------------------- schema
@dataclass(frozen=True)
class Spec:
    """One node of the card schema.

    ``kind`` is one of ``str``, ``int``, ``number``, ``bool``, ``enum``, ``list``, ``map`` and ``value``
    (any scalar or list, but not a mapping). ``joined`` enums accept several values joined by ``+``
    (e.g. ``bias+gate``). ``fields`` of a ``map`` are all required unless listed in ``optional``.
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


def _map(optional: Iterable[str] = (), nullable: bool = False, **fields: Spec) -> Spec:
    return Spec("map", nullable=nullable, fields=fields, optional=frozenset(optional))


COVERAGE = ("survey", "baseline", "not_in_survey", "after_survey")
MANIFESTATION = ("embedding", "bias", "gate", "mask", "scale", "none")
INTEGRATION = ("add", "multiply", "mask", "scale", "none")
INJECTION = ("initial", "every", "none")
NEEDS = ("none", "fine_tuning", "training_from_scratch")
EXPECT_METRICS = ("ppl_ratio", "ppl_vs_baseline", "accuracy")
EXPECT_OPS = ("<", "<=", ">", ">=")

EXPECT_SCHEMA = _map(
    optional=("baseline", "variant"),
    nullable=True,
    metric=_enum(*EXPECT_METRICS),
    at=Spec("number", minimum=0),
    op=_enum(*EXPECT_OPS),
    value=Spec("number"),
    baseline=_str(pattern=ID_RE),
    variant=_enum("zero_shot", "finetuned"),
)

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

#: One node of ``taxonomy/categories.yaml`` (``children`` nest the same schema).
CATEGORY_SCHEMA: Spec = _map(
    optional=("survey", "children"),
    id=_str(pattern=ID_RE),
    name=_str(),
    survey=_str(),
    in_survey=Spec("bool"),
    description=_str(),
    children=_list(Spec("map")),  # checked recursively by _check_category_tree
)

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


# ---------------------------------------------------------------------------------------------- problems
@dataclass(frozen=True, order=True)
class Problem:
    """One validation problem: the repo-relative ``file``, the dotted ``field`` (may be empty), a message.

    ``line`` (1-based) is set where it is known: YAML and BibTeX syntax errors, registry classes.
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


def _show(value: Any) -> str:
    """A short rendering of a bad value for messages: repr for scalars, the kind for containers."""
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _hint(word: str, candidates: Iterable[str], n: int = 3) -> str:
    """``"; did you mean 'x', 'y'?"`` or the empty string."""
    close = difflib.get_close_matches(str(word), list(candidates), n=n, cutoff=0.7)
    return "; did you mean " + ", ".join(repr(c) for c in close) + "?" if close else ""


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def check_value(spec: Spec, value: Any, path: str = "") -> list[tuple[str, str]]:
    """Check ``value`` against ``spec``; return ``(field_path, message)`` pairs (empty when valid)."""
    out: list[tuple[str, str]] = []
    _check(spec, value, path, out)
    return out


def _check(spec: Spec, value: Any, path: str, out: list[tuple[str, str]]) -> None:
    def bad() -> None:
        out.append((path, f"expected {spec.describe()}, got {_show(value)}"))

    if value is None:
        if not spec.nullable:
            bad()
        return
    kind = spec.kind
    if kind == "str":
        if not isinstance(value, str):
            hint = " (quote it)" if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
            out.append((path, f"expected {spec.describe()}, got {_show(value)}{hint}"))
        elif not value.strip():
            out.append((path, "must not be empty"))
        elif spec.pattern is not None and not spec.pattern.fullmatch(value):
            out.append((path, f"{value!r} does not match the pattern {spec.pattern.pattern}"))
    elif kind in ("int", "number"):
        ok_types = (int,) if kind == "int" else (int, float)
        if isinstance(value, bool) or not isinstance(value, ok_types):
            bad()
        elif spec.minimum is not None and value < spec.minimum:
            out.append((path, f"must be >= {spec.minimum:g}, got {value!r}"))
    elif kind == "bool":
        if not isinstance(value, bool):
            bad()
    elif kind == "enum":
        if not isinstance(value, str):
            bad()
            return
        parts = value.split("+") if spec.joined else [value]
        for part in parts:
            if part not in spec.values:
                msg = f"expected {spec.describe()}, got {value!r}"
                if spec.joined and len(parts) > 1:
                    msg += f" ({part!r} is not allowed)"
                out.append((path, msg + _hint(part, spec.values)))
                return
        if len(set(parts)) != len(parts):
            out.append((path, f"{value!r} repeats a value"))
        elif len(parts) > 1 and "none" in parts:
            out.append((path, f"{value!r}: 'none' cannot be combined with other values"))
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
        fields = spec.fields
        if fields is None:  # any mapping
            return
        for key in value:
            if key not in fields:
                out.append((_join(path, str(key)), "unknown key" + _hint(str(key), fields)))
        for key, sub in fields.items():
            if key in value:
                _check(sub, value[key], _join(path, key), out)
            elif key not in spec.optional:
                out.append((_join(path, key), "missing key"))
    else:  # pragma: no cover - schema bug
        raise AssertionError(f"unknown schema kind {kind!r}")


# ---------------------------------------------------------------------------------------------- files
def find_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The repository root holding ``taxonomy/categories.yaml``.

    In order: ``root`` when given, the ``POSENC_ROOT`` environment variable, the current directory or one
    of its parents, then the package's source location (an editable install inside the repository).
    """

    def ok(p: Path) -> bool:
        return (p / CATEGORIES_FILE).is_file()

    if root is not None:
        p = Path(root).expanduser().resolve()
        if not ok(p):
            raise TaxonomyError(f"{p}: not a posenc repository (no {CATEGORIES_FILE})")
        return p
    env = os.environ.get(ROOT_ENV)
    if env:
        p = Path(env).expanduser().resolve()
        if not ok(p):
            raise TaxonomyError(f"{ROOT_ENV}={env}: not a posenc repository (no {CATEGORIES_FILE})")
        return p
    for start in (Path.cwd().resolve(), Path(__file__).resolve().parent):
        for p in (start, *start.parents):
            if ok(p):
                return p
    raise TaxonomyError(
        f"cannot find {CATEGORIES_FILE}: run inside the posenc repository, set {ROOT_ENV}, or pass --root"
    )


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[valid-type,misc]
    """PyYAML's safe loader (no tags are constructed, so nothing is executed) that rejects duplicate keys."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            self.flatten_mapping(node)
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                except TypeError:  # unhashable: the base class reports it
                    continue
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark, f"found duplicate key {key!r}",
                        key_node.start_mark,
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


# Booleans are only true/false (YAML 1.2), not YAML 1.1's yes/no/on/off: `learnable: no` is then reported
# as "expected bool, got 'no'" instead of silently becoming False, and a value such as "off" stays text.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _yaml_problem(exc: Exception, rel: str) -> Problem:
    """A Problem for a YAML error, with the 1-based line where PyYAML knows it."""
    line = None
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        text = exc.problem or exc.context or "invalid YAML"
        if exc.problem and exc.context and exc.context_mark is not None:
            text += f" ({exc.context} on line {exc.context_mark.line + 1})"
        if "constructor for the tag" in text:
            text += " (tags are not allowed: cards are plain YAML)"
        message = f"YAML error: {text}"
    else:
        message = f"YAML error: {exc}"
    return Problem(rel, "", message, line)


def _read_yaml(path: Path, root: Path) -> tuple[Any, Problem | None]:
    rel = _rel(path, root)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        return None, Problem(rel, "", f"not UTF-8 text ({exc.reason} at byte {exc.start})")
    except OSError as exc:
        return None, Problem(rel, "", f"cannot read: {exc.strerror or exc}")
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader subclass
    except yaml.YAMLError as exc:
        return None, _yaml_problem(exc, rel)
    return data, None


def read_yaml(path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> Any:
    """Load one YAML file safely; raise :class:`TaxonomyError` naming the file (and line) on errors."""
    path = Path(path)
    data, problem = _read_yaml(path, Path(root) if root else path.parent)
    if problem is not None:
        raise TaxonomyError(str(problem))
    return data


# ---------------------------------------------------------------------------------------------- categories
def categories(root: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """The category tree (a list of root nodes with nested ``children``)."""
    r = find_root(root)
    data = read_yaml(r / CATEGORIES_FILE, r)
    if not isinstance(data, list):
        raise TaxonomyError(f"{CATEGORIES_FILE}: expected a list of root categories, got {_show(data)}")
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


def _check_category_tree(data: Any, rel: str) -> list[Problem]:
    """Problems of the tree; a node is named by its path of ids (``extrapolatable_pe/rpe``), or by its
    index (``extrapolatable_pe.children[2]``) when it has no valid id."""
    if not isinstance(data, list):
        return [Problem(rel, "", f"expected a list of root categories, got {_show(data)}")]
    problems: list[Problem] = []

    def walk(nodes: list[Any], parent: str) -> None:
        seen: dict[str, int] = {}
        for i, node in enumerate(nodes):
            nid = node.get("id") if isinstance(node, Mapping) else None
            if isinstance(nid, str) and ID_RE.fullmatch(nid):
                label = f"{parent}/{nid}" if parent else nid
            else:
                label = f"{parent}.children[{i}]" if parent else f"[{i}]"
            for field_path, message in check_value(CATEGORY_SCHEMA, node, label):
                problems.append(Problem(rel, field_path, message))
            if not isinstance(node, Mapping):
                continue
            if isinstance(nid, str):
                if nid in seen:
                    where = f"entries {seen[nid] + 1} and {i + 1}"
                    problems.append(Problem(rel, f"{label}.id", f"duplicate id {nid!r} among siblings ({where})"))
                seen.setdefault(nid, i)
            children = node.get("children")
            if isinstance(children, list):
                walk(children, label)

    walk(data, "")
    return problems


# ---------------------------------------------------------------------------------------------- cards
def card_path(card_id: str, root: str | os.PathLike[str] | None = None) -> Path:
    return find_root(root) / METHODS_DIR / f"{card_id}.yaml"


def card_ids(root: str | os.PathLike[str] | None = None) -> list[str]:
    """Ids of every card file (file names without ``.yaml``), sorted; does not parse the files."""
    d = find_root(root) / METHODS_DIR
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def load_card(card_id: str, root: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The card ``card_id`` as a dict; unknown ids raise :class:`TaxonomyError` with close matches."""
    r = find_root(root)
    path = r / METHODS_DIR / f"{card_id}.yaml"
    if not ID_RE.fullmatch(card_id) or not path.is_file():
        raise TaxonomyError(f"unknown card id {card_id!r}" + _hint(card_id, card_ids(r)))
    data = read_yaml(path, r)
    if not isinstance(data, dict):
        raise TaxonomyError(f"{_rel(path, r)}: expected a mapping at the top level, got {_show(data)}")
    return data


def load_cards(root: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """Every card, in file-name order. YAML errors raise; schema problems are :func:`validate`'s job."""
    r = find_root(root)
    cards = []
    for path in sorted((r / METHODS_DIR).glob("*.yaml")):
        data = read_yaml(path, r)
        if not isinstance(data, dict):
            raise TaxonomyError(f"{_rel(path, r)}: expected a mapping at the top level, got {_show(data)}")
        data.setdefault("id", path.stem)
        data["__file__"] = _rel(path, r)
        cards.append(data)
    return cards


def resolve_id(name: str, root: str | os.PathLike[str] | None = None) -> str:
    """The card id for ``name``: an id, or a case-insensitive id, display name or alias.

    Raises :class:`TaxonomyError` suggesting the closest ids when nothing matches.
    """
    r = find_root(root)
    ids = card_ids(r)
    if name in ids:
        return name
    low = name.casefold()
    hits: set[str] = set()
    for card in load_cards(r):
        names = [card.get("id"), card.get("name"), *(card.get("aliases") or [])]
        if any(isinstance(n, str) and n.casefold() == low for n in names):
            hits.add(str(card.get("id")))
    if len(hits) == 1:
        return hits.pop()
    if len(hits) > 1:
        raise TaxonomyError(f"{name!r} is ambiguous: it names {', '.join(sorted(hits))}")
    raise TaxonomyError(f"unknown card id {name!r}" + _hint(name.lower(), ids))


def flatten(card: Mapping[str, Any]) -> dict[str, Any]:
    """One card as a flat record with the :data:`COLUMNS` (``table1.*`` and ``relations.*`` lifted)."""
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
            rec[col] = card.get("__file__")
        else:
            rec[col] = card.get(col)
    return rec


def records(root: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """Every card flattened (see :func:`flatten`), without pandas."""
    return [flatten(c) for c in load_cards(root)]


def load(root: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """The cards as a pandas DataFrame: one row per card, the flattened :data:`COLUMNS`."""
    import pandas as pd  # heavy: only here

    return pd.DataFrame(records(root), columns=list(COLUMNS))


# ---------------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class RegistryEntry:
    """A registered positional encoding found statically: its id, class and where it is defined."""

    id: str
    cls: str
    file: str
    line: int


def _const_str(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _is_register(node: ast.AST) -> bool:
    if isinstance(node, ast.Call):
        node = node.func
    return (isinstance(node, ast.Name) and node.id == "register") or (
        isinstance(node, ast.Attribute) and node.attr == "register"
    )


def static_registry(
    pe_dir: str | os.PathLike[str], root: str | os.PathLike[str] | None = None
) -> tuple[dict[str, RegistryEntry], list[Problem]]:
    """Registry ids of ``pe_dir/*.py`` read with :mod:`ast`, without importing torch.

    A class is registered when it is decorated with ``@register`` (or ``register(Cls)`` is called at
    module level); its id is the string assigned to the class attribute ``id``, inherited from a base class
    when the class does not set it. Entries of a literal ``_REGISTRY = {"nope": ...}`` count as well (the
    base class itself is NoPE). ``tests/test_taxonomy.py`` checks that this agrees with
    :func:`posenc.available`.
    """
    pe_dir = Path(pe_dir)
    base = Path(root) if root is not None else pe_dir
    problems: list[Problem] = []
    # (module, class name) -> (own id, base names, line, registered)
    classes: dict[tuple[str, str], tuple[str | None, list[str], int, bool]] = {}
    explicit: list[tuple[str, str, str, int]] = []  # (id, class, file, line) from _REGISTRY literals
    called: set[tuple[str, str]] = set()
    for path in sorted(pe_dir.glob("*.py")):
        rel = _rel(path, base)
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        except SyntaxError as exc:
            problems.append(Problem(rel, "", f"Python syntax error: {exc.msg}", exc.lineno))
            continue
        mod = path.stem
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                own = None
                for stmt in node.body:
                    if isinstance(stmt, ast.Assign) and any(
                        isinstance(t, ast.Name) and t.id == "id" for t in stmt.targets
                    ):
                        own = _const_str(stmt.value) or own
                    elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                        if stmt.target.id == "id":
                            own = _const_str(stmt.value) or own
                bases = [b.id if isinstance(b, ast.Name) else b.attr for b in node.bases
                         if isinstance(b, (ast.Name, ast.Attribute))]  # fmt: skip
                registered = any(_is_register(d) for d in node.decorator_list)
                classes[(mod, node.name)] = (own, bases, node.lineno, registered)
            elif isinstance(node, ast.Call) and _is_register(node.func) and node.args:
                if isinstance(node.args[0], ast.Name):
                    called.add((mod, node.args[0].id))
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(isinstance(t, ast.Name) and t.id == "_REGISTRY" for t in targets):
                    if isinstance(node.value, ast.Dict):
                        for k, v in zip(node.value.keys, node.value.values, strict=True):
                            key = _const_str(k)
                            if key is not None:
                                cls = v.id if isinstance(v, ast.Name) else "?"
                                explicit.append((key, cls, rel, node.lineno))

    by_name: dict[str, list[tuple[str, str]]] = {}
    for mod, name in classes:
        by_name.setdefault(name, []).append((mod, name))

    def resolve(key: tuple[str, str], seen: frozenset[tuple[str, str]] = frozenset()) -> str | None:
        own, bases, _, _ = classes[key]
        if own is not None:
            return own
        for b in bases:
            cands = [(key[0], b)] if (key[0], b) in classes else by_name.get(b, [])
            for cand in cands:
                if cand not in seen:
                    found = resolve(cand, seen | {key})
                    if found is not None:
                        return found
        return None

    out: dict[str, RegistryEntry] = {}
    for pid, cls, rel, line in explicit:
        out.setdefault(pid, RegistryEntry(pid, cls, rel, line))
    for (mod, name), (_, _, line, registered) in classes.items():
        if not (registered or (mod, name) in called):
            continue
        rel = _rel(pe_dir / f"{mod}.py", base)
        pid = resolve((mod, name))
        if pid is None:
            problems.append(Problem(rel, f"{name}.id", "registered class has no literal string id", line))
        elif pid in out and out[pid].cls != name:
            problems.append(Problem(rel, f"{name}.id",
                                    f"registry id {pid!r} is also used by {out[pid].cls} ({out[pid].file})", line))
        else:
            out.setdefault(pid, RegistryEntry(pid, name, rel, line))
    return dict(sorted(out.items())), problems


# ---------------------------------------------------------------------------------------------- validate
_ABBREVIATIONS = re.compile(
    r"\b(e\.g|i\.e|et al|vs|cf|resp|approx|Eq|Eqs|Fig|Figs|Sec|Tab|Ref|Refs|Appx|App)\.",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*(?=\s|$)")


def count_sentences(text: str) -> int:
    """Sentences in ``text``: ends of ``.``, ``!``, ``?`` before whitespace, ignoring common abbreviations
    (``e.g.``, ``et al.``, ``Eq.`` …); a trailing fragment counts as one. Single letters are not taken
    for initials: in this domain "… at length L." ends a sentence."""
    t = _ABBREVIATIONS.sub(lambda m: m.group(0)[:-1] + "\0", text)
    ends = list(_SENTENCE_END.finditer(t))
    n = len(ends)
    tail = t[ends[-1].end():] if ends else t
    return n + (1 if tail.strip() else 0)


def _bib_keys(root: Path) -> tuple[set[str] | None, list[Problem]]:
    """Keys of ``references.bib`` (None when it is missing) and its syntax problems."""
    from posenc import cite  # bibtexparser, no pandas

    path = root / BIB_FILE
    if not path.is_file():
        return None, [Problem(BIB_FILE, "", "file not found")]
    try:
        bib = cite.read_bibliography(path)
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Problem(BIB_FILE, "", f"cannot read: {exc}")]
    problems = [Problem(BIB_FILE, "", message, line) for line, message in bib.errors]
    for key, entry in bib.entries.items():
        for required in ("title", "year"):
            if required not in entry.fields_dict:
                problems.append(Problem(BIB_FILE, key, f"missing field {required!r}", entry.start_line + 1))
    return set(bib.entries), problems


@dataclass
class _Card:
    rel: str
    stem: str
    data: dict[str, Any]
    problems: list[Problem] = field(default_factory=list)

    def add(self, fld: str, message: str) -> None:
        self.problems.append(Problem(self.rel, fld, message))


def validate(
    root: str | os.PathLike[str] | None = None,
    *,
    registry: Iterable[str] | None = None,
) -> list[Problem]:
    """Every problem of the knowledge base at once (empty when clean).

    Checks the category tree, ``references.bib``, each card against :data:`CARD_SCHEMA` and the rules
    between them (ids, file names, categories, bibkeys, relations, claims, the implementation registry in
    both directions). ``registry`` gives the registry ids; by default they are read statically from
    ``src/posenc/pe`` (see :func:`static_registry`), so nothing imports torch.
    """
    r = find_root(root)
    problems: list[Problem] = []

    # -- the category tree
    tree, prob = _read_yaml(r / CATEGORIES_FILE, r)
    if prob is not None:
        problems.append(prob)
        paths: dict[str, Mapping[str, Any]] | None = None
    else:
        problems += _check_category_tree(tree, CATEGORIES_FILE)
        paths = category_paths(tree) if isinstance(tree, list) else None

    # -- the bibliography
    bib_keys, bib_problems = _bib_keys(r)
    problems += bib_problems

    # -- the registry
    reg_entries: dict[str, RegistryEntry] | None = None
    if registry is not None:
        reg_ids: set[str] | None = set(registry)
    else:
        pe_dir = r / PE_DIR
        if not pe_dir.is_dir():
            pe_dir = Path(__file__).resolve().parent / "pe"
        if pe_dir.is_dir():
            reg_entries, reg_problems = static_registry(pe_dir, r)
            problems += reg_problems
            reg_ids = set(reg_entries)
        else:
            problems.append(Problem(PE_DIR, "", "not found: cannot check implementation ids"))
            reg_ids = None

    # -- the cards, one by one
    methods = r / METHODS_DIR
    cards: list[_Card] = []
    if not methods.is_dir():
        problems.append(Problem(METHODS_DIR, "", "directory not found"))
    else:
        for path in sorted(methods.iterdir()):
            if path.name.startswith(".") or path.is_dir() or path.name.lower() == "readme.md":
                continue
            rel = _rel(path, r)
            if path.suffix != ".yaml":
                problems.append(Problem(rel, "", "not a card: card files are named <id>.yaml"))
                continue
            data, prob = _read_yaml(path, r)
            if prob is not None:
                problems.append(prob)
                continue
            if data is None:
                problems.append(Problem(rel, "", "empty file"))
                continue
            if not isinstance(data, dict):
                problems.append(Problem(rel, "", f"expected a mapping at the top level, got {_show(data)}"))
                continue
            card = _Card(rel, path.stem, data)
            for fld, message in check_value(CARD_SCHEMA, data):
                card.add(fld, message)
            cards.append(card)

    ids: dict[str, str] = {}  # id -> file
    for card in cards:
        cid = card.data.get("id")
        if isinstance(cid, str):
            if cid != card.stem:
                card.add("id", f"{cid!r} differs from the file name {card.stem + '.yaml'!r}")
            if cid in ids:
                card.add("id", f"duplicate id {cid!r} (also in {ids[cid]})")
            else:
                ids[cid] = card.rel
    # Files that exist but did not parse still count as cards for the references to them (their own
    # problem is already reported), so a syntax error does not cascade into "no card" messages.
    id_set = set(ids) | ({p.stem for p in methods.glob("*.yaml")} if methods.is_dir() else set())

    for card in cards:
        _cross_check(card, r, paths, bib_keys, id_set, reg_ids)
        problems += card.problems

    # -- every registered implementation has a card
    if reg_entries is not None:
        for pid, entry in reg_entries.items():
            if pid not in id_set:
                problems.append(Problem(entry.file, f"{entry.cls}.id",
                                        f"registry id {pid!r} has no card {METHODS_DIR}/{pid}.yaml", entry.line))
    elif reg_ids is not None:
        for pid in sorted(reg_ids - id_set):
            problems.append(Problem(PE_DIR, "", f"registry id {pid!r} has no card {METHODS_DIR}/{pid}.yaml"))
    return problems


def _cross_check(
    card: _Card,
    root: Path,
    paths: Mapping[str, Any] | None,
    bib_keys: set[str] | None,
    ids: set[str],
    registry: set[str] | None,
) -> None:
    """The rules between fields, and between the card and the rest of the repository."""
    d = card.data
    cid = card.stem  # the card's identity; a different `id` field is reported on its own

    cat = d.get("category")
    if isinstance(cat, str) and paths is not None and cat not in paths:
        card.add("category", f"{cat!r} is not a path of {CATEGORIES_FILE}" + _hint(cat, paths))

    cov, section = d.get("coverage"), d.get("survey_section")
    if cov == "survey" and "survey_section" in d and section is None:
        card.add("survey_section", "required when coverage is 'survey'")
    if cov in ("not_in_survey", "after_survey") and isinstance(section, str):
        card.add("survey_section", f"must be null when coverage is {cov!r}")
    t1 = d.get("table1")
    if cov in ("not_in_survey", "after_survey") and isinstance(t1, Mapping) and t1.get("source") == "survey":
        card.add("table1.source", f"'survey' but coverage is {cov!r} (use 'ours')")

    year, year_venue = d.get("year"), d.get("year_venue")
    if isinstance(year, int) and isinstance(year_venue, int) and not isinstance(year_venue, bool):
        if year_venue < year:
            card.add("year_venue", f"{year_venue} is before the first public version ({year})")

    summary = d.get("summary")
    if isinstance(summary, str) and summary.strip():
        n = count_sentences(summary)
        if not 2 <= n <= 5:
            card.add("summary", f"expected 2-5 sentences, got {n}")
    formula = d.get("formula")
    if isinstance(formula, str) and "$" in formula:
        card.add("formula", "must not contain '$' delimiters")

    if bib_keys is not None:
        if isinstance(d.get("bibkey"), str) and d["bibkey"] not in bib_keys:
            card.add("bibkey", f"{d['bibkey']!r} is not a key of {BIB_FILE}" + _hint(d["bibkey"], bib_keys))
        extra = d.get("extra_bibkeys")
        if isinstance(extra, list):
            for i, key in enumerate(extra):
                if isinstance(key, str) and key not in bib_keys:
                    card.add(f"extra_bibkeys[{i}]", f"{key!r} is not a key of {BIB_FILE}" + _hint(key, bib_keys))

    rel = d.get("relations")
    if isinstance(rel, Mapping):
        for kind in ("builds_on", "variant_of"):
            targets = rel.get(kind)
            if not isinstance(targets, list):
                continue
            for i, target in enumerate(targets):
                if not isinstance(target, str):
                    continue
                if target == cid:
                    card.add(f"relations.{kind}[{i}]", "a card cannot relate to itself")
                elif target not in ids:
                    card.add(f"relations.{kind}[{i}]", f"{target!r} is not a card id" + _hint(target, ids))

    impl, note = d.get("implementation"), d.get("implementation_note")
    if isinstance(impl, str):
        if registry is not None and impl not in registry:
            card.add("implementation", f"{impl!r} is not a registry id of posenc.available()"
                     + _hint(impl, registry))
        elif impl != cid:
            card.add("implementation", f"{impl!r} differs from the card id {cid!r} (registry id = card id)")
    elif impl is None and "implementation" in d:
        if not (isinstance(note, str) and note.strip()):
            card.add("implementation_note", "required when implementation is null")
        if registry is not None and cid in registry:
            card.add("implementation", f"null, but registry id {cid!r} exists")

    nb = d.get("notebook")
    if isinstance(nb, str) and nb.strip():
        p = Path(nb)
        if p.is_absolute() or ".." in p.parts:
            card.add("notebook", f"{nb!r} must be a repo-relative path")
        elif not (root / p).is_file():
            card.add("notebook", f"{nb!r} does not exist")

    hps = d.get("hyperparameters")
    if isinstance(hps, list):
        seen_hp: set[str] = set()
        for i, hp in enumerate(hps):
            name = hp.get("name") if isinstance(hp, Mapping) else None
            if isinstance(name, str):
                if name in seen_hp:
                    card.add(f"hyperparameters[{i}].name", f"duplicate name {name!r}")
                seen_hp.add(name)

    claims = d.get("claims")
    if isinstance(claims, list):
        seen_claims: set[str] = set()
        for i, claim in enumerate(claims):
            if not isinstance(claim, Mapping):
                continue
            claim_id = claim.get("id")
            if isinstance(claim_id, str):
                if claim_id in seen_claims:
                    card.add(f"claims[{i}].id", f"duplicate claim id {claim_id!r}")
                seen_claims.add(claim_id)
            expect = claim.get("expect")
            if not isinstance(expect, Mapping):
                continue
            where = f"claims[{i}].expect"
            baseline = expect.get("baseline")
            if expect.get("metric") == "ppl_vs_baseline":
                if "baseline" not in expect:
                    card.add(f"{where}.baseline", "required when metric is 'ppl_vs_baseline'")
                elif isinstance(baseline, str) and baseline not in ids:
                    card.add(f"{where}.baseline", f"{baseline!r} is not a card id" + _hint(baseline, ids))
                elif baseline == cid:
                    card.add(f"{where}.baseline", "a card cannot be its own baseline")
            elif "baseline" in expect and isinstance(expect.get("metric"), str):
                card.add(f"{where}.baseline", f"only allowed when metric is 'ppl_vs_baseline', "
                         f"not {expect['metric']!r}")


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
                         f"({', '.join(spec.values)})" + _hint(v, spec.values))


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
            raise QueryError(f"unknown field {name!r} in {token!r}" + _hint(name, candidates)
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
