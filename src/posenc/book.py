"""Generate the Jupyter Book's pages from the cards and results, and build the book.

:func:`generate` writes, deterministically (same inputs → byte-identical files):

* ``book/generated/taxonomy_tree.md``: the category tree (``taxonomy/categories.yaml``) with card counts,
  "not in survey" marks and every card linked; included by ``book/intro.md`` and ``taxonomy.md``;
* ``book/generated/table.md``: every card as one row of an interactive table (DataTables through
  ``itables``, with its JavaScript bundle embedded so it works offline);
* ``book/generated/methods/<id>.md``: one page per card (summary, formula, Table 1 properties,
  hyperparameters, the implementation's source, the executed notebook's key figure, claims with the paper's
  numbers and our verdicts, a BibTeX block, links and related entries);
* ``book/generated/categories/<path>.md``: one page per category (the "Methods" part of the TOC);
* ``book/generated/leaderboard.md`` from ``results/<preset>/leaderboard.{csv,md,png}``;
* ``_toc.yml`` at the repository root (the book root).

Results and executed notebooks are shown for the ``gpu`` preset where one exists, else ``cpu``; each page
names the preset and device it shows. Missing ones are stated on the page, never silently skipped.

:func:`build` runs ``jupyter-book build`` with warnings as errors (``-W -n --keep-going``).
"""

from __future__ import annotations

import ast
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from posenc import cards, paths

__all__ = [
    "SHOWN_PRESETS",
    "BuildResult",
    "Generated",
    "build",
    "escape",
    "generate",
    "method_page",
    "role_text",
]

#: Presets whose results and notebooks the book shows, most preferred first.
SHOWN_PRESETS: tuple[str, ...] = ("gpu", "cpu")
GENERATED = "book/generated"
RUNS = "book/runs"
RESULTS = "results"
TOC_FILE = "_toc.yml"
#: Cell tags that mark the key figure of a notebook (else its first image is used).
KEY_FIGURE_TAGS = ("key-figure", "curve")
TABLE_ID = "posenc_methods"

_TABLE1_FIELDS = ("manifestation", "learnable", "integration", "injection")
_TABLE1_SHORT = ("manif.", "learn.", "integr.", "inject.")  # column headers of the interactive table
_COVERAGE_TEXT = {
    "survey": "in survey",
    "baseline": "baseline",
    "not_in_survey": "not in survey",
    "after_survey": "after survey",
}
_NEEDS_TEXT = {
    "none": "plug-and-play",
    "fine_tuning": "fine-tuning",
    "training_from_scratch": "from scratch",
}
_METRIC_TEXT = {
    "ppl_ratio": "ppl({at}×L) / ppl(1×L)",
    "ppl_vs_baseline": "ppl({at}×L) / ppl of {baseline} at {at}×L",
    "accuracy": "arithmetic accuracy at {at}×L",
}


# ---------------------------------------------------------------------------------------------- escaping
# Characters with a meaning in MyST Markdown inline text. Every ASCII punctuation character may be
# backslash-escaped in CommonMark, so escaping a few harmless ones is safe.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>{}|$#~^&])")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)


def escape(text: Any, *, table: bool = False) -> str:
    """``text`` as literal MyST Markdown inline text on one line.

    Backtick code spans written in card prose (``original_max_position_embeddings``) stay code; everything
    else is backslash-escaped, so ``*``, ``_``, ``$``, ``<``, ``{`` and ``|`` show as typed. With ``table``,
    pipes inside code spans are escaped too (a GFM table splits cells on them).
    """
    s = " ".join(str(text).split())
    out: list[str] = []
    pos = 0
    for m in _CODE_SPAN.finditer(s):
        out.append(_MD_SPECIAL.sub(r"\\\1", s[pos : m.start()]))
        code = m.group(0)
        out.append(code.replace("|", "\\|") if table else code)
        pos = m.end()
    out.append(_MD_SPECIAL.sub(r"\\\1", s[pos:]))
    return "".join(out)


def role_text(text: Any) -> str:
    """``text`` usable as the title of a ``{doc}`` role: no backticks and no angle brackets."""
    s = " ".join(str(text).split())
    return s.replace("`", "'").replace("<", "‹").replace(">", "›")


def _yaml_scalar(value: Any) -> str:
    """A value as it would appear in YAML flow style (for hyperparameter defaults)."""
    if isinstance(value, str):
        return value
    return paths.dump_yaml(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def _code(value: Any, table: bool = True) -> str:
    """``value`` as an inline code span (backticks inside are handled with a longer fence)."""
    s = " ".join(_yaml_scalar(value).split())
    if table:
        s = s.replace("|", "\\|")
    fence = "`"
    while fence in s:
        fence += "`"
    pad = " " if s.startswith("`") or s.endswith("`") else ""
    return f"{fence}{pad}{s}{pad}{fence}"


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A GFM table; cells must already be escaped with ``table=True``."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(c if c != "" else " " for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _fmt_num(x: Any, digits: int = 4) -> str:
    if x is None:
        return "—"
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        if x != x:  # NaN
            return "—"
        if x in (float("inf"), float("-inf")):
            return "∞" if x > 0 else "−∞"
        return f"{x:.{digits}g}"
    return escape(x, table=True)


# ---------------------------------------------------------------------------------------------- inputs
@dataclass
class RunInfo:
    """What exists for one card under one preset: result JSONs (complete ones) and the executed notebook."""

    preset: str
    results: dict[int, dict[str, Any]] = field(default_factory=dict)  # seed -> result
    notebook: str | None = None  # repo-relative path, POSIX

    @property
    def result(self) -> dict[str, Any] | None:
        """The result of the lowest seed (the one the page shows)."""
        return self.results[min(self.results)] if self.results else None


@dataclass
class Context:
    """Everything the pages are made from, read once."""

    root: Path
    cards: dict[str, Mapping[str, Any]]  # card id -> posenc.cards.Card
    tree: list[dict[str, Any]]
    registry: dict[str, Any]  # registry id -> posenc.cards.RegistryEntry
    bib: Any  # posenc.cite.Bibliography or None
    runs: dict[str, list[RunInfo]]  # card id -> runs of SHOWN_PRESETS that have anything, in preference order

    def run(self, card_id: str) -> RunInfo | None:
        """The run a page shows: the most preferred preset with a result or a notebook."""
        runs = self.runs.get(card_id) or []
        return runs[0] if runs else None


def _load_cards(root: Path) -> dict[str, Mapping[str, Any]]:
    out: dict[str, Mapping[str, Any]] = {}
    for card in cards.load_cards(root):
        cid = str(card.get("id"))
        if not re.fullmatch(r"[a-z][a-z0-9_]*", cid):
            raise ValueError(f"taxonomy/methods: card id {cid!r} is not [a-z][a-z0-9_]*; run `posenc validate`")
        out[cid] = card
    return dict(sorted(out.items()))


def _load_tree(root: Path) -> list[dict[str, Any]]:
    return cards.categories(root)


def _load_registry(root: Path) -> dict[str, Any]:
    reg, _problems = cards.static_registry(root / "src" / "posenc" / "pe", root)
    return reg


def _load_bib(root: Path) -> Any:
    from posenc.cite import read_bibliography

    path = root / "references.bib"
    return read_bibliography(path) if path.is_file() else None


def _seed_of(path: Path, card_id: str) -> int | None:
    m = re.fullmatch(re.escape(card_id) + r"-seed(\d+)", path.stem)
    return int(m.group(1)) if m else None


def _load_runs(root: Path, card: Mapping[str, Any]) -> list[RunInfo]:
    cid = str(card["id"])
    out = []
    for preset in SHOWN_PRESETS:
        info = RunInfo(preset)
        for path in sorted((root / RESULTS / preset).glob(f"{cid}-seed*.json")):
            seed = _seed_of(path, cid)
            if seed is None:
                continue
            try:
                res = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                continue
            if isinstance(res, dict) and res.get("complete"):
                info.results[seed] = res
        nb = root / RUNS / preset / f"{cid}.ipynb"
        declared = card.get("notebook")
        if not nb.is_file() and isinstance(declared, str) and declared.startswith(f"{RUNS}/{preset}/"):
            nb = root / declared
        if nb.is_file():
            info.notebook = nb.relative_to(root).as_posix()
        if info.results or info.notebook:
            out.append(info)
    return out


def load_context(root: str | os.PathLike[str] | None = None) -> Context:
    """Read the cards, the tree, the registry, the bibliography and the results of ``root``."""
    r = paths.find_root(root)
    by_id = _load_cards(r)
    return Context(
        root=r,
        cards=by_id,
        tree=_load_tree(r),
        registry=_load_registry(r),
        bib=_load_bib(r),
        runs={cid: _load_runs(r, c) for cid, c in by_id.items()},
    )


# ---------------------------------------------------------------------------------------------- categories
@dataclass
class Category:
    path: str
    node: Mapping[str, Any]
    children: list[Category]
    cards: list[str]  # ids sitting directly on this node, sorted by (year, name)

    @property
    def name(self) -> str:
        return str(self.node.get("name") or self.node.get("id"))

    @property
    def docname(self) -> str:
        return f"{GENERATED}/categories/{self.path.replace('/', '__')}"

    def all_cards(self) -> list[str]:
        out = list(self.cards)
        for ch in self.children:
            out += ch.all_cards()
        return out


def _card_sort_key(card: Mapping[str, Any]) -> tuple[int, str, str]:
    year = card.get("year") if isinstance(card.get("year"), int) else 9999
    return (year, str(card.get("name", "")).casefold(), str(card.get("id")))


def category_tree(ctx: Context) -> tuple[list[Category], list[str]]:
    """The category tree with the cards on each node, and the ids of cards whose category is unknown."""
    by_path: dict[str, Category] = {}

    def walk(nodes: Any, prefix: str) -> list[Category]:
        out = []
        for node in nodes if isinstance(nodes, list) else []:
            if not isinstance(node, Mapping) or not isinstance(node.get("id"), str):
                continue
            path = f"{prefix}/{node['id']}" if prefix else node["id"]
            cat = Category(path, node, [], [])
            by_path[path] = cat
            cat.children = walk(node.get("children"), path)
            out.append(cat)
        return out

    roots = walk(ctx.tree, "")
    orphans = []
    for cid, card in ctx.cards.items():
        cat = by_path.get(str(card.get("category")))
        if cat is None:
            orphans.append(cid)
        else:
            cat.cards.append(cid)
    for cat in by_path.values():
        cat.cards.sort(key=lambda c: _card_sort_key(ctx.cards[c]))
    return roots, sorted(orphans)


def _category_names(ctx: Context, path: str) -> list[str]:
    names, nodes, prefix = [], ctx.tree, []
    for part in str(path).split("/"):
        node = next((n for n in nodes if isinstance(n, Mapping) and n.get("id") == part), None)
        if node is None:
            names.append(part)
            break
        prefix.append(part)
        names.append(str(node.get("name", part)))
        nodes = node.get("children") or []
    return names


def _in_survey_mark(node: Mapping[str, Any]) -> str:
    return " *(not in survey)*" if node.get("in_survey") is False else ""


def _card_mark(card: Mapping[str, Any]) -> str:
    cov = card.get("coverage")
    if cov == "not_in_survey":
        return " *(not in survey)*"
    if cov == "after_survey":
        return " *(after the survey)*"
    return ""


def taxonomy_tree_md(ctx: Context) -> str:
    """The category tree as nested Markdown lists (absolute ``{doc}`` links, so it can be included anywhere)."""
    roots, orphans = category_tree(ctx)
    lines: list[str] = []

    def emit(cat: Category, depth: int) -> None:
        pad = "  " * depth
        n = len(cat.all_cards())
        survey = cat.node.get("survey")
        section = f", survey {escape(survey)}" if survey and cat.node.get("in_survey") is not False else ""
        lines.append(
            f"{pad}- {{doc}}`{role_text(cat.name)} </{cat.docname}>` ({n} method{'s' if n != 1 else ''}"
            f"{section}){_in_survey_mark(cat.node)}"
        )
        if cat.cards:
            links = ", ".join(
                f"{{doc}}`{role_text(ctx.cards[c].get('name', c))} </{GENERATED}/methods/{c}>`"
                + _card_mark(ctx.cards[c])
                for c in cat.cards
            )
            lines.append(f"{pad}  - {links}")
        for ch in cat.children:
            emit(ch, depth + 1)

    for cat in roots:
        emit(cat, 0)
    if orphans:
        lines.append("- Cards whose category is not in the tree: " + ", ".join(
            f"{{doc}}`{role_text(ctx.cards[c].get('name', c))} </{GENERATED}/methods/{c}>`" for c in orphans))
    total = len(ctx.cards)
    head = (f"{total} methods in {len(_all_categories(roots))} categories. *(not in survey)* marks a branch or "
            "method that the survey does not cover.\n\n")
    return head + "\n".join(lines) + "\n"


def _all_categories(roots: Sequence[Category]) -> list[Category]:
    out: list[Category] = []
    for c in roots:
        out.append(c)
        out += _all_categories(c.children)
    return out


def category_page(ctx: Context, cat: Category) -> str:
    names = _category_names(ctx, cat.path)
    lines = [f"# {escape(cat.name)}", ""]
    if len(names) > 1:
        lines += ["*Branch:* " + " › ".join(escape(n) for n in names[:-1]), ""]
    survey = cat.node.get("survey")
    if cat.node.get("in_survey") is False:
        lines += [f"*Not a branch of the survey* (survey: {escape(survey or 'not covered')}).", ""]
    elif survey:
        lines += [f"*Survey section:* {escape(survey)}.", ""]
    if cat.node.get("description"):
        lines += [escape(cat.node["description"]), ""]
    if cat.children:
        lines += ["## Subcategories", ""]
        for ch in cat.children:
            n = len(ch.all_cards())
            lines.append(f"- [{escape(ch.name)}]({Path(ch.docname).name}.md) ({n} method{'s' if n != 1 else ''})"
                         f"{_in_survey_mark(ch.node)}")
        lines.append("")
    if cat.cards:
        lines += ["## Methods", ""]
        rows = []
        for cid in cat.cards:
            card = ctx.cards[cid]
            rows.append([
                f"[{escape(card.get('name', cid), table=True)}](../methods/{cid}.md)",
                _fmt_num(card.get("year")),
                escape(_COVERAGE_TEXT.get(str(card.get("coverage")), card.get("coverage") or "—"), table=True),
                escape(_NEEDS_TEXT.get(str(card.get("needs")), card.get("needs") or "—"), table=True),
                escape(_verdict_summary(ctx, cid), table=True),
            ])
        lines += [_table(["method", "year", "coverage", "needs", "verdicts"], rows), ""]
    return "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------- verdicts
def _verdict_summary(ctx: Context, cid: str) -> str:
    run = ctx.run(cid)
    res = run.result if run else None
    if res is None:
        return "not yet run"
    verdicts = [c.get("verdict") for c in res.get("claims") or []]
    if not verdicts:
        return f"no claims ({run.preset})"
    rep = sum(v == "reproduced" for v in verdicts)
    nrep = sum(v == "not reproduced at this scale" for v in verdicts)
    na = len(verdicts) - rep - nrep
    parts = [f"{rep}/{len(verdicts)} reproduced"]
    if nrep:
        parts.append(f"{nrep} not reproduced")
    if na:
        parts.append(f"{na} n/a")
    return ", ".join(parts) + f" ({run.preset})"


def _expect_text(expect: Any) -> str:
    if not isinstance(expect, Mapping):
        return "not applicable"
    tmpl = _METRIC_TEXT.get(str(expect.get("metric")), str(expect.get("metric")) + " at {at}×L")
    try:
        lhs = tmpl.format(at=expect.get("at"), baseline=expect.get("baseline"))
    except (KeyError, IndexError):
        lhs = str(expect.get("metric"))
    variant = f" ({expect['variant']} variant)" if expect.get("variant") else ""
    return f"{lhs} {expect.get('op')} {expect.get('value')}{variant}"


# ---------------------------------------------------------------------------------------------- notebooks
def _notebook_images(nb_path: Path) -> list[tuple[bytes, int]]:
    """PNG outputs of an executed notebook, in order, each with a priority for being the key figure.

    Priority 2: the cell is tagged ``key-figure`` (or ``curve``); 1: the image follows a Markdown heading
    that mentions curves; 0: any other image.
    """
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    out = []
    heading = ""
    for cell in nb.get("cells", []):
        src = cell.get("source") or ""
        src = "".join(src) if isinstance(src, list) else str(src)
        if cell.get("cell_type") == "markdown":
            heads = re.findall(r"^#+\s+(.+)$", src, re.M)
            if heads:
                heading = heads[-1]
            continue
        if cell.get("cell_type") != "code":
            continue
        tags = set((cell.get("metadata") or {}).get("tags") or [])
        prio = 2 if tags & set(KEY_FIGURE_TAGS) else 1 if re.search(r"\bcurves?\b", heading, re.I) else 0
        for output in cell.get("outputs") or []:
            data = (output.get("data") or {}).get("image/png")
            if data:
                raw = "".join(data) if isinstance(data, list) else str(data)
                out.append((base64.b64decode(raw), prio))
    return out


def key_figure(nb_path: Path) -> bytes | None:
    """The notebook's key figure: the first PNG of a cell tagged ``key-figure`` (or ``curve``), else the first
    PNG under a heading about curves, else the first PNG; None when it has none or cannot be read."""
    try:
        images = _notebook_images(nb_path)
    except (OSError, json.JSONDecodeError, ValueError):
        return None
    if not images:
        return None
    best = max(prio for _, prio in images)
    return next(img for img, prio in images if prio == best)


# ---------------------------------------------------------------------------------------------- implementation
def _class_span(path: Path, cls: str) -> tuple[int, int] | None:
    """First line (decorators included) and last line of class ``cls`` in ``path``."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return None
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls:
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            return start, int(node.end_lineno or node.lineno)
    return None


def _implementation_section(ctx: Context, card: Mapping[str, Any]) -> list[str]:
    impl = card.get("implementation")
    lines = ["## Implementation", ""]
    if not impl:
        note = card.get("implementation_note") or "no reason recorded on the card"
        return lines + [f"No implementation in posenc: {escape(note)}", ""]
    entry = ctx.registry.get(str(impl))
    if entry is None:
        return lines + [
            f"The card names the registry id {_code(impl, table=False)}, but no class in `src/posenc/pe` "
            "registers it yet.", ""]
    rel = str(entry.file)
    span = _class_span(ctx.root / rel, entry.cls)
    lines += [f"Registry id {_code(impl, table=False)}: class `{entry.cls}` in `{rel}`"
              + (f" (lines {span[0]}–{span[1]})." if span else "."),
              f"Build it with `posenc.build({str(impl)!r}, head_dim=..., num_heads=..., train_len=...)`.", ""]
    if span:
        lines += [f"```{{literalinclude}} /{rel}", ":language: python", f":lines: {span[0]}-{span[1]}",
                  ":lineno-match:", "```", ""]
    return lines


# ---------------------------------------------------------------------------------------------- method page
def _citation_block(ctx: Context, card: Mapping[str, Any]) -> list[str]:
    from posenc.cite import apa, to_bibtex

    keys = [card.get("bibkey"), *(card.get("extra_bibkeys") or [])]
    primary = card.get("bibkey")
    lines = ["## Cite this entry", ""]
    if ctx.bib is None or not isinstance(primary, str) or primary not in ctx.bib.entries:
        return lines + [f"The reference {_code(primary, table=False)} is not in `references.bib` yet.", ""]
    # bibtexparser indents fields with a tab; two spaces keep the block narrow enough to read in the page
    bibtex = re.sub(r"^\t", "  ", to_bibtex([ctx.bib.entries[primary]]).rstrip(), flags=re.M)
    fence = "```"
    while fence in bibtex:
        fence += "`"
    lines += [f"{fence}bibtex", bibtex, fence, "", "APA:", "", f"> {escape(apa(ctx.bib.entries[primary]))}", "",
              f"`posenc cite {card['id']}` prints this entry; `--format apa` or `--format markdown` give the "
              "other styles.", ""]
    others = [k for k in keys[1:] if isinstance(k, str) and k != primary and k in ctx.bib.entries]
    if others:
        lines += ["Also cited on this card: " + ", ".join(f"{{cite:t}}`{k}`" for k in others) + ".", ""]
    return lines


def _links_section(card: Mapping[str, Any]) -> list[str]:
    lines = ["## Links", ""]
    arxiv = card.get("arxiv")
    if isinstance(arxiv, str) and arxiv:
        lines.append(f"- Paper: <https://arxiv.org/abs/{arxiv}> (arXiv {escape(arxiv)})")
    else:
        lines.append("- Paper: no arXiv version; see the reference above.")
    code = card.get("code")
    if isinstance(code, str) and code.startswith(("http://", "https://")):
        lines.append(f"- Code: <{code}>")
    else:
        lines.append("- Code: no official code release recorded.")
    lines.append(f"- Card: `taxonomy/methods/{card['id']}.yaml`")
    return lines + [""]


def _reverse(ctx: Context, cid: str, key: str) -> list[str]:
    out = []
    for other, card in ctx.cards.items():
        rel = card.get("relations") if isinstance(card.get("relations"), Mapping) else {}
        if cid in (rel.get(key) or []):
            out.append(other)
    return out


def _related_section(ctx: Context, card: Mapping[str, Any]) -> list[str]:
    cid = str(card["id"])
    rel = card.get("relations") if isinstance(card.get("relations"), Mapping) else {}

    def links(ids: Iterable[str]) -> str:
        items = []
        for i in ids:
            if i in ctx.cards:
                items.append(f"[{escape(ctx.cards[i].get('name', i))}]({i}.md)")
            else:
                items.append(f"{escape(i)} (no card)")
        return ", ".join(items)

    same = [c for c, other in ctx.cards.items() if c != cid and other.get("category") == card.get("category")]
    same.sort(key=lambda c: _card_sort_key(ctx.cards[c]))
    groups = [
        ("Builds on", list(rel.get("builds_on") or [])),
        ("Variant of", list(rel.get("variant_of") or [])),
        ("Built on by", _reverse(ctx, cid, "builds_on")),
        ("Variants", _reverse(ctx, cid, "variant_of")),
        ("Same category", same),
    ]
    lines = ["## Related entries", ""]
    for label, ids in groups:
        if ids:
            lines.append(f"- {label}: {links(ids)}")
    if len(lines) == 2:
        lines.append("- None recorded.")
    return lines + [""]


def _curves_table(res: Mapping[str, Any]) -> list[str]:
    curves = res.get("curves") or {}
    lengths: dict[int, dict[str, str]] = {}
    cols = [("lm_nonoverlap", "ppl", "ppl (non-overlapping)"), ("lm_sliding", "ppl", "ppl (sliding)"),
            ("arithmetic", "accuracy", "arithmetic acc."), ("passkey", "accuracy", "passkey acc.")]
    present = [c for c in cols if curves.get(c[0])]
    if not present:
        return []
    for proto, key, _ in present:
        for pt in curves.get(proto) or []:
            if not isinstance(pt, Mapping) or not isinstance(pt.get("length"), int):
                continue
            row = lengths.setdefault(pt["length"], {"factor": _fmt_num(pt.get("factor"))})
            row[proto] = "error" if pt.get("error") else _fmt_num(pt.get(key))
    rows = [[str(n), r.get("factor", "—")] + [r.get(p, "—") for p, _, _ in present]
            for n, r in sorted(lengths.items())]
    return [_table(["length", "× L"] + [h for _, _, h in present], rows), ""]


def _experiment_section(ctx: Context, card: Mapping[str, Any], figures: dict[str, bytes]) -> list[str]:
    cid = str(card["id"])
    lines = ["## Experiment", ""]
    runs = ctx.runs.get(cid) or []
    if not runs:
        why = ("it has no implementation, so there is nothing to train"
               if not card.get("implementation") else "no executed notebook or result is committed yet")
        return lines + [
            f"Not yet run: {why}. Looked for `book/runs/{{{','.join(SHOWN_PRESETS)}}}/{cid}.ipynb` and "
            f"`results/{{{','.join(SHOWN_PRESETS)}}}/{cid}-seed*.json`.",
            "" if not card.get("implementation") else
            f"\nRun it with `posenc run {cid} --preset cpu` (see {{doc}}`/book/rerun`).", ""]
    run = runs[0]
    res = run.result
    meta = (res or {}).get("metadata") or {}
    device = meta.get("device")
    device_text = f" on `{device}`" + (f" ({escape(meta['device_name'])})" if meta.get("device_name") else "")
    shown = f"This page shows the `{run.preset}` preset" + (device_text if device else "") + "."
    if len(runs) > 1:
        shown += " Also available: " + ", ".join(f"`{r.preset}`" for r in runs[1:]) + "."
    lines += [shown, ""]
    if res is not None:
        cfg = res.get("config") or {}
        seeds = sorted(run.results)
        desc = [f"seed {seeds[0]}" + (f" (seeds stored: {', '.join(map(str, seeds))})" if len(seeds) > 1 else "")]
        if cfg:
            desc.append(f"{cfg.get('n_layer', '?')} layers, d = {cfg.get('d_model', '?')}, "
                        f"{cfg.get('n_head', '?')} heads, trained at L = {cfg.get('train_len', '?')} for "
                        f"{cfg.get('steps', '?')} steps")
        if res.get("kind") == "applied":
            desc.append(f"applied to a `{res.get('applies_to')}` model; the verdicts use the "
                        f"`{res.get('primary')}` variant")
        if meta.get("corpus"):
            desc.append(f"corpus `{meta['corpus']}`")
        lines += ["Result: " + "; ".join(desc) + ".", ""]
    if run.notebook:
        nb_path = ctx.root / run.notebook
        img = key_figure(nb_path)
        if img is not None:
            name = f"{cid}-{run.preset}.png"
            figures[name] = img
            lines += [f"```{{figure}} ../figures/{name}", f":alt: {role_text(card.get('name', cid))}: key figure "
                      f"of the executed notebook ({run.preset} preset)", ":width: 100%", "",
                      f"Key figure of the executed notebook ({run.preset} preset).", "```", ""]
        else:
            lines += ["The executed notebook has no figure output.", ""]
        nb_links = ", ".join(f"{{doc}}`{r.preset} preset </{Path(r.notebook).with_suffix('').as_posix()}>`"
                             for r in runs if r.notebook)
        lines += [f"Executed notebook: {nb_links}.", ""]
    else:
        lines += [f"No executed notebook for the `{run.preset}` preset yet (no `book/runs/{run.preset}/{cid}.ipynb`).",
                  ""]
    if res is not None:
        lines += ["Measured (primary variant):", ""] + _curves_table(res)
    else:
        lines += [f"No result JSON for the `{run.preset}` preset yet (no `results/{run.preset}/{cid}-seed*.json`).",
                  ""]
    return lines


def _claims_section(ctx: Context, card: Mapping[str, Any]) -> list[str]:
    claims = card.get("claims") or []
    lines = ["## Claims and verdicts", ""]
    if not claims:
        return lines + ["The card records no extrapolation claim.", ""]
    run = ctx.run(str(card["id"]))
    res = run.result if run else None
    measured = {c.get("id"): c for c in (res or {}).get("claims") or [] if isinstance(c, Mapping)}
    if res is None:
        lines += ["Not yet run: no measurement, so every verdict is pending.", ""]
    else:
        lines += [f"Measured with the `{run.preset}` preset (seed {min(run.results)}). A verdict of *not reproduced "
                  "at this scale* is a statement about this small protocol, not about the paper.", ""]
    # One list item per claim (a table with this much prose per row is unreadable in the book's column).
    for c in claims:
        if not isinstance(c, Mapping):
            continue
        pts = "; ".join(f"{p.get('length')}: {_fmt_num(p.get('value'))}" for p in c.get("points") or []
                        if isinstance(p, Mapping)) or "none given"
        got = measured.get(c.get("id"))
        if got is None:
            meas, verdict, reason = "—", ("not yet run" if res is None else "not judged"), None
        else:
            meas = _fmt_num(got.get("measured"))
            verdict = str(got.get("verdict") or "—")
            reason = got.get("reason")
        src = "the paper" if c.get("source") == "paper" else "survey Table 3"
        where = ", ".join(x for x in (escape(c.get("dataset") or ""), f"L = {_fmt_num(c.get('train_length'))}"
                                      if c.get("train_length") else "") if x)
        lines += [
            f"- **{escape(verdict)}**: {escape(c.get('statement', ''))} *({src}" + (f"; {where}" if where else "")
            + ")* \\",
            f"  Paper's numbers (length: {escape(c.get('metric') or 'value')}): {pts}. \\",
            f"  Our test: {escape(_expect_text(c.get('expect')))}; measured: {meas}"
            + (f" ({escape(reason)})" if reason else "") + ".",
        ]
    return lines + [""]


def method_page(ctx: Context, cid: str, figures: dict[str, bytes] | None = None) -> str:
    """The Markdown page of card ``cid``; key figures to write are added to ``figures`` (name → PNG bytes)."""
    figures = {} if figures is None else figures
    card = ctx.cards[cid]
    name = card.get("name", cid)
    lines = [f"(method-{cid.replace('_', '-')})=", f"# {escape(name)}", ""]
    aliases = [a for a in card.get("aliases") or [] if a]
    if aliases:
        lines += ["*Also known as* " + ", ".join(escape(a) for a in aliases) + ".", ""]
    cat_names = _category_names(ctx, str(card.get("category")))
    cat_doc = f"{GENERATED}/categories/{str(card.get('category')).replace('/', '__')}"
    facts = [
        ("id", _code(cid, table=True)),
        ("category", f"[{escape(' › '.join(cat_names), table=True)}](../categories/{Path(cat_doc).name}.md)"),
        ("coverage", escape(_COVERAGE_TEXT.get(str(card.get("coverage")), card.get("coverage") or "—"), table=True)
         + (f" ({escape(card['survey_section'], table=True)})" if card.get("survey_section") else "")),
        ("first public", _fmt_num(card.get("year"))),
        ("venue", escape(card.get("venue") or "—", table=True)
         + (f" ({card['year_venue']})" if card.get("year_venue") and str(card["year_venue"]) not in
            str(card.get("venue") or "") else "")),
        ("reference", f"{{cite:p}}`{card['bibkey']}`" if ctx.bib is not None and card.get("bibkey") in ctx.bib.entries
         else escape(card.get("bibkey") or "—", table=True)),
        ("needs", escape(_NEEDS_TEXT.get(str(card.get("needs")), card.get("needs") or "—"), table=True)),
        ("verdicts", escape(_verdict_summary(ctx, cid), table=True)),
    ]
    lines += [_table(["card", ""], [[f"**{k}**", v] for k, v in facts]), ""]
    lines += ["## Summary", "", escape(card.get("summary") or "No summary."), ""]
    lines += ["## Formula", "", "How position enters the attention logit, in the survey's notation:", ""]
    formula = "\n".join(ln for ln in str(card.get("formula") or "").splitlines() if ln.strip())
    if formula:
        lines += ["```{math}", formula, "```", ""]
    else:
        lines += ["No formula recorded.", ""]
    t1 = card.get("table1") if isinstance(card.get("table1"), Mapping) else {}
    lines += ["## Table 1 properties", ""]
    src = ("as listed in the survey's Table 1" if t1.get("source") == "survey"
           else "our classification (the survey's Table 1 does not list it)")
    lines += [_table(["property", "value"], [[f, _fmt_num(t1.get(f))] for f in _TABLE1_FIELDS]), "",
              f"Source: {src}.", ""]
    hps = card.get("hyperparameters") or []
    lines += ["## Hyperparameters", ""]
    if hps:
        lines += [_table(["name", "default", "meaning"],
                         [[_code(h.get("name", "?")), _code(h.get("default")), escape(h.get("meaning", ""), table=True)]
                          for h in hps if isinstance(h, Mapping)]), ""]
    else:
        lines += ["None.", ""]
    lines += _implementation_section(ctx, card)
    lines += _experiment_section(ctx, card, figures)
    lines += _claims_section(ctx, card)
    notes = [n for n in card.get("notes") or [] if n]
    if notes:
        lines += ["## Notes", ""] + [f"- {escape(n)}" for n in notes] + [""]
    lines += _citation_block(ctx, card)
    lines += _links_section(card)
    lines += _related_section(ctx, card)
    return "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------- table
def table_frame(ctx: Context) -> Any:
    """The cards as the DataFrame behind the interactive table (HTML in the ``id`` column)."""
    import html

    import pandas as pd

    rows = []
    for cid, card in ctx.cards.items():
        t1 = card.get("table1") if isinstance(card.get("table1"), Mapping) else {}
        cat = _category_names(ctx, str(card.get("category")))
        impl = card.get("implementation")
        note = html.escape(str(card.get("implementation_note") or "no reason recorded"), quote=True)
        # <wbr>: allow line breaks after "_" and "+" so that long ids and joined values wrap in a narrow column
        rows.append({
            "id": f'<a href="methods/{cid}.html">{html.escape(cid).replace("_", "_<wbr>")}</a>',
            "name": html.escape(str(card.get("name", cid))),
            "category": html.escape(cat[-1] if cat else ""),
            "year": card.get("year") if isinstance(card.get("year"), int) else None,
            "coverage": html.escape(_COVERAGE_TEXT.get(str(card.get("coverage")), str(card.get("coverage")))),
            **{short: html.escape(str(t1.get(f)).lower() if isinstance(t1.get(f), bool) else str(t1.get(f, "")))
               .replace("+", "+<wbr>") for f, short in zip(_TABLE1_FIELDS, _TABLE1_SHORT, strict=True)},
            "needs": html.escape(_NEEDS_TEXT.get(str(card.get("needs")), str(card.get("needs")))),
            "impl.": (f'<span title="registry id {html.escape(str(impl), quote=True)}">yes</span>' if impl
                            else f'<span title="{note}">no</span>'),
            "verdict": html.escape(_verdict_summary(ctx, cid)),
        })
    df = pd.DataFrame(rows)
    df["year"] = df["year"].astype("Int64")
    return df


def table_html(ctx: Context) -> str:
    """The interactive table: itables' offline DataTables bundle (embedded once) plus the table."""
    from itables import javascript, options, to_html_datatable

    df = table_frame(ctx)
    init = javascript.generate_init_offline_itables_html(options.dt_bundle)
    table = to_html_datatable(
        df, connected=False, table_id=TABLE_ID, allow_html=True, showIndex=False, paging=False,
        classes="display compact", display_logo_when_loading=False, autoWidth=False,
        style="width:100%; table-layout:auto; margin:0",
        layout={"topStart": None, "topEnd": "search", "bottomStart": "info", "bottomEnd": None},
    )
    # The theme's article column is narrow; this page only, give the table the full width.
    css = (f"<style>.bd-article-container {{ max-width: 100% !important; }} #{TABLE_ID} {{ font-size: 0.85em; }} "
           f"#{TABLE_ID} td {{ padding: 3px 5px; }}"
           "</style>")
    return css + "\n" + init + "\n" + table


def table_page(ctx: Context) -> str:
    n = len(ctx.cards)
    html = table_html(ctx)
    # Sphinx's raw directive keeps the HTML as is; blank lines inside it are fine, a fence line is not.
    if re.search(r"^```", html, re.M):
        raise ValueError("itables HTML contains a Markdown fence line")
    return "\n".join([
        "# The atlas as a table",
        "",
        f"All {n} cards, one row each. Click a column header to sort, type in the search box to filter "
        "(it matches every column, e.g. `alibi`, `bias`, `fine-tuning` or `2023`), and click an id to open the "
        "method's page. The table works offline: its DataTables code is embedded in this page. The same "
        "view is `posenc list` and `posenc query` in a terminal.",
        "",
        "```{raw} html",
        html,
        "```",
        "",
        "*Columns:* manif., learn., integr. and inject. are the survey's Table 1 properties (how position "
        "manifests, whether it is learnable, how it is integrated, where it is injected); *needs* says whether the "
        "method is plug-and-play, needs fine-tuning or training from scratch; *impl.* whether posenc implements it "
        "(hover for the registry id or the reason); *verdict* counts the card's claims reproduced by our runs "
        "(preset in brackets).",
        "",
    ])


# ---------------------------------------------------------------------------------------------- leaderboard
def leaderboard_page(ctx: Context, figures: dict[str, bytes]) -> str:
    lines = ["# Leaderboard", ""]
    found = False
    for preset in SHOWN_PRESETS:
        folder = ctx.root / RESULTS / preset
        csv, md, png = (folder / f"leaderboard.{ext}" for ext in ("csv", "md", "png"))
        if not (csv.is_file() or md.is_file()):
            continue
        found = True
        lines += [f"## `{preset}` preset", ""]
        devices = sorted({str((r.results[s].get("metadata") or {}).get("device")) for runs in ctx.runs.values()
                          for r in runs if r.preset == preset for s in r.results})
        if devices:
            lines += [f"Device(s): {', '.join(f'`{d}`' for d in devices)}. Ratios are perplexity at k×L over "
                      "perplexity at 1×L (non-overlapping windows); lower is better, 1 means no degradation.", ""]
        if png.is_file():
            name = f"leaderboard-{preset}.png"
            figures[name] = png.read_bytes()
            lines += [f"```{{figure}} figures/{name}", f":alt: Perplexity ratio against length, {preset} preset",
                      ":width: 100%", "", f"Perplexity relative to 1×L ({preset} preset, seed 0).", "```", ""]
        if csv.is_file():
            lines += _leaderboard_table(ctx, csv) + [""]
        else:
            lines += [md.read_text(encoding="utf-8").strip(), ""]
    if not found:
        lines += [
            "No leaderboard is committed yet: `results/gpu/leaderboard.csv` and `results/cpu/leaderboard.csv` "
            "do not exist. Run the sweep (`posenc run --all --preset cpu`, see {doc}`/book/rerun`) and rebuild "
            "the book with `posenc book`.", ""]
    return "\n".join(lines).rstrip() + "\n"


def _leaderboard_table(ctx: Context, csv: Path) -> list[str]:
    import csv as csvmod

    with open(csv, encoding="utf-8", newline="") as f:
        reader = list(csvmod.reader(f))
    if not reader:
        return ["The leaderboard file is empty."]
    header, body = reader[0], reader[1:]
    rows = []
    for r in body:
        cells = []
        for h, v in zip(header, r, strict=False):
            if h == "method" and v in ctx.cards:
                cells.append(f"[{escape(ctx.cards[v].get('name', v), table=True)}](methods/{v}.md)")
            else:
                try:
                    cells.append(_fmt_num(float(v), 3) if v not in ("", "nan") else "—")
                except ValueError:
                    cells.append(escape(v, table=True))
        rows.append(cells)
    return [_table([escape(h, table=True) for h in header], rows)]


# ---------------------------------------------------------------------------------------------- TOC
def toc(ctx: Context) -> dict[str, Any]:
    """The ``_toc.yml`` structure (jb-book format)."""
    roots, orphans = category_tree(ctx)

    def method_entry(cid: str) -> dict[str, Any]:
        entry: dict[str, Any] = {"file": f"{GENERATED}/methods/{cid}"}
        nbs = [(Path(r.notebook).with_suffix("").as_posix(), r.preset) for r in ctx.runs.get(cid, []) if r.notebook]
        if nbs:
            # An explicit title: the template's own title is the same for every method.
            entry["sections"] = [{"file": nb, "title": f"{preset} run (executed notebook)"} for nb, preset in nbs]
        return entry

    def cat_entry(cat: Category) -> dict[str, Any]:
        entry: dict[str, Any] = {"file": cat.docname}
        sections = [cat_entry(ch) for ch in cat.children] + [method_entry(c) for c in cat.cards]
        if sections:
            entry["sections"] = sections
        return entry

    methods = [cat_entry(c) for c in roots]
    if orphans:
        methods.append({"file": f"{GENERATED}/categories/uncategorised",
                        "sections": [method_entry(c) for c in orphans]})
    return {
        "format": "jb-book",
        "root": "book/intro",
        "parts": [
            {"caption": "The atlas", "chapters": [
                {"file": f"{GENERATED}/table"},
                {"file": f"{GENERATED}/taxonomy"},
                {"file": f"{GENERATED}/leaderboard"},
            ]},
            {"caption": "Methods", "chapters": methods},
            {"caption": "Using posenc", "chapters": [
                {"file": "book/conventions"},
                {"file": "book/implementations"},
                {"file": "book/rerun"},
                {"file": "book/card_format"},
                {"file": "book/build"},
                {"file": "book/reliability"},
            ]},
            {"caption": "References", "chapters": [{"file": "book/bibliography"}]},
        ],
    }


def toc_yaml(ctx: Context) -> str:
    head = ("# Generated by `posenc book` from taxonomy/ and book/runs/: edit those, not this file.\n"
            "# Committed so that `jupyter-book build .` also works; `posenc book` rewrites it.\n")
    return head + paths.dump_yaml(toc(ctx), sort_keys=False, allow_unicode=True, width=120)


# ---------------------------------------------------------------------------------------------- generate
@dataclass
class Generated:
    """What :func:`generate` wrote: every output path (repo-relative) and which of them changed."""

    files: list[str]
    changed: list[str]
    removed: list[str]


def _write(path: Path, data: bytes, changed: list[str], rel: str) -> None:
    if path.is_file() and path.read_bytes() == data:
        return  # unchanged: keep the mtime so Sphinx rebuilds only what changed
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    changed.append(rel)


def render(ctx: Context) -> dict[str, bytes]:
    """Every generated file (repo-relative path → bytes), without writing anything."""
    out: dict[str, str | bytes] = {}
    figures: dict[str, bytes] = {}
    roots, orphans = category_tree(ctx)
    tree_md = taxonomy_tree_md(ctx)
    out[f"{GENERATED}/taxonomy_tree.md"] = tree_md
    out[f"{GENERATED}/taxonomy.md"] = (
        "# Taxonomy tree\n\nThe categories of `taxonomy/categories.yaml`, with the number of methods under each "
        "and every method linked. The first two branches follow the survey's sections {cite:p}`zhao2024length`"
        "; the others are not in the survey.\n\n```{include} taxonomy_tree.md\n```\n"
    ) if ctx.bib is not None and "zhao2024length" in ctx.bib.entries else (
        "# Taxonomy tree\n\n```{include} taxonomy_tree.md\n```\n")
    out[f"{GENERATED}/table.md"] = table_page(ctx)
    for cat in _all_categories(roots):
        out[f"{cat.docname}.md"] = category_page(ctx, cat)
    if orphans:
        out[f"{GENERATED}/categories/uncategorised.md"] = (
            "# Uncategorised\n\nCards whose `category` is not a path of `taxonomy/categories.yaml` "
            "(`posenc validate` reports them).\n")
    for cid in ctx.cards:
        out[f"{GENERATED}/methods/{cid}.md"] = method_page(ctx, cid, figures)
    out[f"{GENERATED}/leaderboard.md"] = leaderboard_page(ctx, figures)
    for name, data in sorted(figures.items()):
        out[f"{GENERATED}/figures/{name}"] = data
    out[TOC_FILE] = toc_yaml(ctx)
    return {k: (v.encode("utf-8") if isinstance(v, str) else v) for k, v in sorted(out.items())}


def generate(root: str | os.PathLike[str] | None = None, dest: str | os.PathLike[str] | None = None) -> Generated:
    """Write the generated pages and ``_toc.yml`` under ``dest`` (default: the repository ``root``).

    Files under ``book/generated`` that this run did not produce (e.g. of a deleted card) are removed.
    """
    ctx = load_context(root)
    base = Path(dest) if dest is not None else ctx.root
    files = render(ctx)
    changed: list[str] = []
    for rel, data in files.items():
        _write(base / rel, data, changed, rel)
    removed = []
    gen = base / GENERATED
    if gen.is_dir():
        for path in sorted(gen.rglob("*")):
            rel = path.relative_to(base).as_posix()
            if path.is_file() and rel not in files:
                path.unlink()
                removed.append(rel)
        for path in sorted(gen.rglob("*"), reverse=True):
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()
    return Generated(sorted(files), changed, removed)


# ---------------------------------------------------------------------------------------------- build
@dataclass
class BuildResult:
    returncode: int
    seconds: float
    html_dir: Path
    warnings: list[str]
    log: str

    @property
    def index(self) -> Path:
        return self.html_dir / "index.html"


_WARNING_RE = re.compile(r"(WARNING|ERROR|CRITICAL|SEVERE):")
_ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")


def _jupyter_book() -> list[str]:
    exe = Path(sys.executable).with_name("jupyter-book")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("jupyter-book")
    if found:
        return [found]
    raise FileNotFoundError("jupyter-book is not installed: pip install -e '.[book]'")


def build(root: str | os.PathLike[str] | None = None, build_dir: str | os.PathLike[str] | None = None, *,
          strict: bool = True, keep_going: bool = True, all_files: bool = False) -> BuildResult:
    """Build the HTML book with ``jupyter-book build`` into ``build_dir`` (default ``<root>/_build``).

    ``strict`` turns warnings into errors (``-W -n``: missing references count as warnings too). The log is
    captured; every warning line is returned, so a build with warnings is never reported as clean.
    """
    r = paths.find_root(root)
    out = Path(build_dir) if build_dir is not None else r / "_build"
    cmd = [*_jupyter_book(), "build", str(r), "--builder", "html"]
    if out.resolve() != (r / "_build").resolve():
        # jupyter-book writes to <path-output>/_build/html
        cmd += ["--path-output", str(out.parent if out.name == "_build" else out)]
        html = (out if out.name == "_build" else out / "_build") / "html"
    else:
        html = r / "_build" / "html"
    if strict:
        cmd += ["-W", "-n"]
    if keep_going:
        cmd.append("--keep-going")
    if all_files:
        cmd.append("--all")
    env = dict(os.environ, PYTHONHASHSEED="0", NO_COLOR="1")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=r, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    log = _ANSI_RE.sub("", proc.stdout + proc.stderr)
    warnings = [ln for ln in log.splitlines() if _WARNING_RE.search(ln)]
    rc = proc.returncode
    if strict and warnings and rc == 0:
        rc = 1
    return BuildResult(rc, seconds, html, warnings, log)
