"""``posenc validate``: every rule of ``book/card_format.md`` over the whole knowledge base, all problems at once.

Checks the category tree, ``references.bib``, each card against :data:`~posenc.cards.schema.CARD_SCHEMA` and
the rules between them (ids, file names, categories, bibkeys, relations, claims, the implementation registry
in both directions). The registry ids are read statically from ``src/posenc/pe/*.py`` with :mod:`ast`
(:func:`static_registry`), so validating never imports torch.
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from posenc import paths
from posenc.cards.schema import CARD_SCHEMA, CATEGORY_SCHEMA, CONTROL, ID_RE, Problem, check_value, hint, show
from posenc.cards.store import category_paths, root_of
from posenc.cards.text import formula_problems

__all__ = ["RegistryEntry", "count_sentences", "static_registry", "validate"]

METHODS_DIR, CATEGORIES_FILE, BIB_FILE, PE_DIR = paths.METHODS_DIR, paths.CATEGORIES_FILE, paths.BIB_FILE, paths.PE_DIR


def _read(path: Path, root: Path) -> tuple[Any, Problem | None]:
    """The YAML data of ``path``, or the problem that kept it from being read."""
    try:
        return paths.read_yaml(path, root), None
    except paths.YAMLReadError as exc:
        return None, Problem(exc.file, "", exc.message, exc.line)


# ---------------------------------------------------------------------------------------------- categories
def _check_category_tree(data: Any, rel: str) -> list[Problem]:
    """Problems of the tree; a node is named by its path of ids (``extrapolatable_pe/rpe``), or by its
    index (``extrapolatable_pe.children[2]``) when it has no valid id."""
    if not isinstance(data, list):
        return [Problem(rel, "", f"expected a list of root categories, got {show(data)}")]
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


# ---------------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class RegistryEntry:
    """A registered positional encoding found statically: its id, the class or function that registers it
    (``kind`` is ``"class"`` or ``"function"``) and where it is defined."""

    id: str
    cls: str
    file: str
    line: int
    kind: str = "class"

    @property
    def field(self) -> str:
        """How problems name the entry: ``Class.id`` or ``function``."""
        return f"{self.cls}.id" if self.kind == "class" else self.cls


def _const_str(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _names(node: ast.AST, name: str) -> bool:
    """``node`` is ``name`` or ``something.name`` (a call counts by its function)."""
    if isinstance(node, ast.Call):
        node = node.func
    return (isinstance(node, ast.Name) and node.id == name) or (isinstance(node, ast.Attribute) and node.attr == name)


def _class_id(node: ast.ClassDef) -> str | None:
    """The literal string assigned to the class attribute ``id`` in the class body, if any."""
    own = None
    for stmt in node.body:
        if isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "id" for t in stmt.targets):
            own = _const_str(stmt.value) or own
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.target.id == "id":
            own = _const_str(stmt.value) or own
    return own


def static_registry(
    pe_dir: str | os.PathLike[str], root: str | os.PathLike[str] | None = None
) -> tuple[dict[str, RegistryEntry], list[Problem]]:
    """Registry ids of ``pe_dir/*.py`` read with :mod:`ast`, without importing torch. Two forms register:

    * a class decorated with ``@register`` (or passed to ``register(Cls)`` at module level); its id is the
      string assigned to the class attribute ``id``, inherited from a base class when it does not set one.
      Entries of a literal ``_REGISTRY = {"nope": ...}`` count as well (the base class itself is NoPE);
    * a module-level function decorated with ``@rope_scaling("<id>", ...)`` (a RoPE scaling registered as a
      plain function, as in HF ``modeling_rope_utils.ROPE_INIT_FUNCTIONS``); the first positional argument is
      the id. An id may be both a scaling function and a registered class (the class whose rotation differs);
      the class is then the entry.

    ``tests/cards/test_validate.py`` checks that this agrees with :func:`posenc.available`.
    """
    pe_dir = Path(pe_dir)
    base = Path(root) if root is not None else pe_dir
    problems: list[Problem] = []
    # (module, class name) -> (own id, base names, line, registered)
    classes: dict[tuple[str, str], tuple[str | None, list[str], int, bool]] = {}
    explicit: list[RegistryEntry] = []  # from _REGISTRY literals
    functions: list[RegistryEntry] = []  # from @rope_scaling("<id>")
    called: set[tuple[str, str]] = set()
    for path in sorted(pe_dir.glob("*.py")):
        rel = paths.relative(path, base.resolve())
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        except SyntaxError as exc:
            problems.append(Problem(rel, "", f"Python syntax error: {exc.msg}", exc.lineno))
            continue
        mod = path.stem
        for node in tree.body:
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for deco in node.decorator_list:
                if _names(deco, "rope_scaling"):
                    pid = _const_str(deco.args[0]) if isinstance(deco, ast.Call) and deco.args else None
                    if pid is None:
                        problems.append(Problem(rel, node.name, "@rope_scaling needs the registry id as a literal "
                                                                "string first argument", node.lineno))
                    else:
                        functions.append(RegistryEntry(pid, node.name, rel, node.lineno, "function"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                bases = [b.id if isinstance(b, ast.Name) else b.attr for b in node.bases
                         if isinstance(b, (ast.Name, ast.Attribute))]  # fmt: skip
                registered = any(_names(d, "register") for d in node.decorator_list)
                classes[(mod, node.name)] = (_class_id(node), bases, node.lineno, registered)
            elif isinstance(node, ast.Call) and _names(node.func, "register") and node.args:
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
                                explicit.append(RegistryEntry(key, cls, rel, node.lineno))

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
    for entry in explicit:
        out.setdefault(entry.id, entry)
    for (mod, name), (_, _, line, registered) in classes.items():
        if not (registered or (mod, name) in called):
            continue
        rel = paths.relative(pe_dir / f"{mod}.py", base.resolve())
        pid = resolve((mod, name))
        if pid is None:
            problems.append(Problem(rel, f"{name}.id", "registered class has no literal string id", line))
        elif pid in out and out[pid].cls != name:
            problems.append(Problem(rel, f"{name}.id",
                                    f"registry id {pid!r} is also used by {out[pid].cls} ({out[pid].file})", line))
        else:
            out.setdefault(pid, RegistryEntry(pid, name, rel, line))
    seen_functions: dict[str, RegistryEntry] = {}
    for entry in functions:
        other = seen_functions.setdefault(entry.id, entry)
        if other is not entry:
            problems.append(Problem(entry.file, entry.field, f"registry id {entry.id!r} is also used by "
                                                             f"{other.cls} ({other.file})", entry.line))
        else:
            out.setdefault(entry.id, entry)
    return dict(sorted(out.items())), problems


# ---------------------------------------------------------------------------------------------- text rules
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
    # Imported here: bibtexparser costs ~60 ms at start-up, and only validate and cite need it.
    from posenc import cite

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


# ---------------------------------------------------------------------------------------------- validate
@dataclass
class _Checked:
    """A card being validated: its file, its stem (the id) and the problems found so far."""

    rel: str
    stem: str
    data: dict[str, Any]
    problems: list[Problem] = field(default_factory=list)

    def add(self, fld: str, message: str) -> None:
        self.problems.append(Problem(self.rel, fld, message))


def _registry(r: Path, registry: Iterable[str] | None
              ) -> tuple[set[str] | None, dict[str, RegistryEntry] | None, list[Problem]]:
    """The registry ids (given, or read statically), their entries when read, and problems."""
    if registry is not None:
        return set(registry), None, []
    pe_dir = r / PE_DIR
    if not pe_dir.is_dir():  # an installed wheel: the package's own implementations
        pe_dir = Path(__file__).resolve().parents[1] / "pe"
    if not pe_dir.is_dir():
        return None, None, [Problem(PE_DIR, "", "not found: cannot check implementation ids")]
    entries, problems = static_registry(pe_dir, r)
    return set(entries), entries, problems


def _read_cards(r: Path, methods: Path) -> tuple[list[_Checked], list[Problem]]:
    """Every card file parsed and checked against the schema on its own; files that are not cards."""
    cards: list[_Checked] = []
    problems: list[Problem] = []
    for path in sorted(methods.iterdir()):
        if path.name.startswith(".") or path.is_dir() or path.name.lower() == "readme.md":
            continue
        rel = paths.relative(path, r)
        if path.suffix != ".yaml":
            problems.append(Problem(rel, "", "not a card: card files are named <id>.yaml"))
            continue
        data, prob = _read(path, r)
        if prob is not None:
            problems.append(prob)
        elif data is None:
            problems.append(Problem(rel, "", "empty file"))
        elif not isinstance(data, dict):
            problems.append(Problem(rel, "", f"expected a mapping at the top level, got {show(data)}"))
        else:
            card = _Checked(rel, path.stem, data)
            for fld, message in check_value(CARD_SCHEMA, data):
                card.add(fld, message)
            cards.append(card)
    return cards, problems


def validate(root: str | os.PathLike[str] | None = None, *, registry: Iterable[str] | None = None) -> list[Problem]:
    """Every problem of the knowledge base at once (empty when clean).

    ``registry`` gives the registry ids; by default they are read statically from ``src/posenc/pe`` (see
    :func:`static_registry`), so nothing imports torch.
    """
    r = root_of(root)
    problems: list[Problem] = []

    tree, prob = _read(r / CATEGORIES_FILE, r)
    cat_paths: dict[str, Mapping[str, Any]] | None = None
    if prob is not None:
        problems.append(prob)
    else:
        problems += _check_category_tree(tree, CATEGORIES_FILE)
        cat_paths = category_paths(tree) if isinstance(tree, list) else None

    bib_keys, bib_problems = _bib_keys(r)
    problems += bib_problems

    reg_ids, reg_entries, reg_problems = _registry(r, registry)
    problems += reg_problems

    methods = r / METHODS_DIR
    cards: list[_Checked] = []
    if not methods.is_dir():
        problems.append(Problem(METHODS_DIR, "", "directory not found"))
    else:
        cards, file_problems = _read_cards(r, methods)
        problems += file_problems

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
        _cross_check(card, r, cat_paths, bib_keys, id_set, reg_ids)
        problems += card.problems

    if reg_entries is not None:  # every registered implementation has a card
        for pid, entry in reg_entries.items():
            if pid not in id_set:
                problems.append(Problem(entry.file, entry.field,
                                        f"registry id {pid!r} has no card {METHODS_DIR}/{pid}.yaml", entry.line))
    elif reg_ids is not None:
        for pid in sorted(reg_ids - id_set):
            problems.append(Problem(PE_DIR, "", f"registry id {pid!r} has no card {METHODS_DIR}/{pid}.yaml"))
    return problems


def _cross_check(card: _Checked, root: Path, cat_paths: Mapping[str, Any] | None, bib_keys: set[str] | None,
                 ids: set[str], registry: set[str] | None) -> None:
    """The rules between fields, and between the card and the rest of the repository."""
    d = card.data
    cid = card.stem  # the card's identity; a different `id` field is reported on its own

    cat = d.get("category")
    if isinstance(cat, str) and cat_paths is not None and cat not in cat_paths:
        card.add("category", f"{cat!r} is not a path of {CATEGORIES_FILE}" + hint(cat, cat_paths))

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
    if isinstance(formula, str):
        for message in formula_problems(formula):
            card.add("formula", message)

    if bib_keys is not None:
        if isinstance(d.get("bibkey"), str) and d["bibkey"] not in bib_keys:
            card.add("bibkey", f"{d['bibkey']!r} is not a key of {BIB_FILE}" + hint(d["bibkey"], bib_keys))
        extra = d.get("extra_bibkeys")
        if isinstance(extra, list):
            for i, key in enumerate(extra):
                if isinstance(key, str) and key not in bib_keys:
                    card.add(f"extra_bibkeys[{i}]", f"{key!r} is not a key of {BIB_FILE}" + hint(key, bib_keys))

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
                    card.add(f"relations.{kind}[{i}]", f"{target!r} is not a card id" + hint(target, ids))

    impl, note = d.get("implementation"), d.get("implementation_note")
    if isinstance(impl, str):
        if registry is not None and impl not in registry:
            card.add("implementation", f"{impl!r} is not a registry id of posenc.available()" + hint(impl, registry))
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

    _cross_check_claims(card, ids)


def _cross_check_claims(card: _Checked, ids: set[str]) -> None:
    """Claim ids are unique; an ``expect.comparator`` names another card (or ``control``); a threshold or a
    length left out of ``expect`` can be derived from the claim's own points (the schema has the rest)."""
    claims = card.data.get("claims")
    if not isinstance(claims, list):
        return
    seen: set[str] = set()
    for i, claim in enumerate(claims):
        if not isinstance(claim, Mapping):
            continue
        claim_id = claim.get("id")
        if isinstance(claim_id, str):
            if claim_id in seen:
                card.add(f"claims[{i}].id", f"duplicate claim id {claim_id!r}")
            seen.add(claim_id)
        expect = claim.get("expect")
        if not isinstance(expect, Mapping) or "not_tested" in expect:
            continue
        comparator = expect.get("comparator")
        if isinstance(comparator, str) and comparator != CONTROL:
            where = f"claims[{i}].expect.comparator"
            if comparator == card.stem:
                card.add(where, "a card cannot be its own comparator")
            elif comparator not in ids:
                card.add(where, f"{comparator!r} is not a card id or 'control'" + hint(comparator, ids))
        points = claim.get("points") if isinstance(claim.get("points"), list) else []
        lengths = [p.get("length") for p in points if isinstance(p, Mapping)]
        metric = expect.get("metric")
        if "at" not in expect and not (lengths and (claim.get("train_length") or len(lengths) >= 2)):
            card.add(f"claims[{i}].expect.at", "missing: give 'at', or points and a train_length to derive it from")
        if "value" not in expect:
            if metric == "ppl_ratio" and len(lengths) < 2:
                card.add(f"claims[{i}].expect.value", "cannot be derived: ppl_ratio needs two points (the train "
                         "length and the test length), or an explicit value with value_from")
            if metric == "ppl_vs":
                cmp_lengths = [p.get("length") for p in expect.get("comparator_points") or []
                               if isinstance(p, Mapping)]
                if not lengths or lengths[-1] not in cmp_lengths:
                    card.add(f"claims[{i}].expect.value", "cannot be derived: ppl_vs needs comparator_points at "
                             "the claim's last point's length, or an explicit value with value_from")
