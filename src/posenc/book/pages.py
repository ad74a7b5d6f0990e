"""Every generated page, rendered from the Jinja templates in ``posenc/book/templates``.

The templates write MyST Markdown. Their environment escapes by default: every ``{{ expression }}`` goes
through :func:`posenc.book.safe.finalize`, so card text is printed as data unless the book itself marked it as
markup (:class:`~posenc.book.safe.Md`). The functions here gather what each template needs from the
:class:`~posenc.book.context.Context`; no page is written as a Python string.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jinja2

from posenc.book import safe
from posenc.book.context import BRANCH, GENERATED, REPOSITORY, Category, Context
from posenc.book.safe import Md, cell, code, escape, heading, role_text
from posenc.book.tables import (
    COVERAGE_TEXT,
    LEADERBOARD_ID,
    NEEDS_TEXT,
    TABLE1_FIELDS,
    TABLE_ID,
    atlas_frame,
    datatable,
    fmt_interval,
    leaderboard_frame,
    verdict_summary,
)
from posenc.cards.citation import cite_card
from posenc.experiment.claims import VERDICTS, comparators
from posenc.experiment.presets import PROTOCOL_VERSION
from posenc.experiment.spec import BASELINES

__all__ = ["environment", "render_template", "method_page", "category_page", "taxonomy_tree", "table_page",
           "leaderboard_page", "home_results", "cite_posenc", "colab_url"]


def environment() -> jinja2.Environment:
    """The template environment: MyST output, escaping by default, strict about undefined names."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("posenc.book", "templates"), autoescape=False, finalize=safe.finalize,
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(md=escape, cell=cell, code=code, role=role_text, heading=heading, attr=safe.attr, raw=Md,
                       interval=fmt_interval)
    env.globals["protocol_version"] = PROTOCOL_VERSION
    return env


_ENV: jinja2.Environment | None = None


def render_template(template: str, /, **values: Any) -> str:
    global _ENV
    if _ENV is None:
        _ENV = environment()
    text = _ENV.get_template(template).render(**values)
    return re.sub(r"\n{3,}", "\n\n", text).rstrip() + "\n"


def _where(card: Any, field: str) -> str:
    return f"{card.file}: field '{field}'"


#: The notebook every run executes (repo-relative).
TEMPLATE = "notebooks/extrapolation.ipynb"


def colab_url(notebook: str) -> str:
    """The Colab URL of a repo-relative notebook path (never a ``/./`` segment)."""
    path = Path(notebook).as_posix().lstrip("./")
    return f"https://colab.research.google.com/github/{REPOSITORY.removeprefix('https://github.com/')}/blob/" \
           f"{BRANCH}/{path}"


# ---------------------------------------------------------------------------------------------- method page
def _class_span(path: Path, cls: str) -> tuple[int, int] | None:
    """First line (decorators included) and last line of class or function ``cls`` in ``path``."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return None
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and node.name == cls:
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            return start, int(node.end_lineno or node.lineno)
    return None


def _implementation(ctx: Context, card: Any) -> dict[str, Any]:
    impl = card.get("implementation")
    if not impl:
        return {"kind": "none", "note": card.get("implementation_note") or "no reason recorded on the card"}
    entry = ctx.registry.get(str(impl))
    if entry is None:
        return {"kind": "missing", "impl": impl}
    span = _class_span(ctx.root / entry.file, entry.cls)
    return {"kind": "registered", "impl": impl, "cls": entry.cls, "file": entry.file, "span": span,
            "base": ctx.applies_to.get(str(impl))}


def _citation(ctx: Context, card: Any) -> dict[str, Any]:
    try:
        bibtex = cite_card(card.id, "bibtex", root=ctx.root)
        apa = cite_card(card.id, "apa", root=ctx.root).strip()
    except KeyError:
        return {"ok": False, "key": card.get("bibkey")}
    bibtex = re.sub(r"^\t", "  ", bibtex.rstrip(), flags=re.M)
    fence = "```"
    while fence in bibtex:
        fence += "`"
    others = [k for k in card.extra_bibkeys if k != card.bibkey]
    return {"ok": True, "bibtex": Md(bibtex), "fence": Md(fence), "apa": apa, "key": card.bibkey, "others": others}


def _reverse(ctx: Context, cid: str, key: str) -> list[str]:
    out = []
    for other, card in ctx.cards.items():
        rel = card.get("relations") if isinstance(card.get("relations"), Mapping) else {}
        if cid in (rel.get(key) or []):
            out.append(other)
    return out


def _related(ctx: Context, card: Any) -> list[tuple[str, Md]]:
    cid = card.id
    rel = card.get("relations") if isinstance(card.get("relations"), Mapping) else {}

    def links(ids: Iterable[str]) -> Md:
        items = [f"[{escape(ctx.cards[i].name)}]({i}.md)" if i in ctx.cards else f"{escape(i)} (no card)"
                 for i in ids]
        return Md(", ".join(items))

    same = sorted((c for c, o in ctx.cards.items() if c != cid and o.get("category") == card.get("category")),
                  key=lambda c: (ctx.cards[c].get("year") or 9999, ctx.cards[c].name.casefold()))
    groups = [("Builds on", list(rel.get("builds_on") or [])), ("Variant of", list(rel.get("variant_of") or [])),
              ("Built on by", _reverse(ctx, cid, "builds_on")), ("Variants", _reverse(ctx, cid, "variant_of")),
              ("Same category", same)]
    return [(label, links(ids)) for label, ids in groups if ids]


def _links(card: Any) -> dict[str, Any]:
    arxiv = card.arxiv
    code_url = card.get("code")
    return {"arxiv": arxiv, "code": safe.url(code_url, _where(card, "code")) if isinstance(code_url, str) else None,
            "file": f"taxonomy/methods/{card.id}.yaml",
            "edit": f"{REPOSITORY}/edit/{BRANCH}/taxonomy/methods/{card.id}.yaml",
            "view": f"{REPOSITORY}/blob/{BRANCH}/taxonomy/methods/{card.id}.yaml"}


def _experiment(ctx: Context, card: Any, figures: dict[str, bytes]) -> dict[str, Any]:
    from posenc.book.figures import method_png

    cid = card.id
    pub = ctx.published
    results = ctx.results(cid)
    out: dict[str, Any] = {"stale": ctx.stale(cid), "implemented": bool(card.implementation),
                           "preset": pub.preset if pub else None, "has": bool(results)}
    if not results:
        if card.implementation:  # nothing executed to open yet: the template, with the line to change
            out.update(template_colab=colab_url(TEMPLATE), template_download="/" + TEMPLATE)
        return out
    first = results[0]
    meta = first.data.get("metadata") or {}
    cfg = first.data.get("config") or {}
    out.update(seeds=[r.seed for r in results], device=meta.get("device"), device_name=meta.get("device_name"),
               cfg=cfg, kind=first.data.get("kind"), base=first.data.get("applies_to"), primary=first.primary,
               variants=list(first.variants), row=pub.rows.get(cid) if pub else None)
    png = method_png(ctx, cid)
    if png is not None:
        name = f"{cid}.png"
        figures[name] = png
        out["figure"] = f"../figures/{name}"
    comps = sorted(comparators(card) - {"control"})
    out["shown"] = {"comparators": [c for c in comps if ctx.results(c)],
                    "missing": [c for c in comps if not ctx.results(c)],
                    "control": "control" in comparators(card) and bool(first.data.get("applies_to")),
                    "baselines": [b for b in BASELINES if b != cid and ctx.results(b)]}
    nb = ctx.notebook(cid)
    out["notebook"] = nb
    if nb:
        out["notebook_doc"] = "/" + str(Path(nb).with_suffix("").as_posix())
        out["colab"] = colab_url(nb)
        out["download"] = "/" + nb
    moved = (out["row"] or {}).get("pe_moved")
    out["pe_moved"] = moved
    shifts = {}
    for r in results:
        for log in ("log", "finetune_log"):
            shift = ((r.data.get("train") or {}).get(log) or {}).get("pe_shift") or {}
            if shift:
                shifts[f"seed {r.seed}" + (" (fine-tune)" if log == "finetune_log" else "")] = shift
    out["shifts"] = shifts
    marker = pub.markers.get(cid) if pub else None
    out["wall"] = marker.get("wall_time_s") if marker else None
    return out


def _claims(ctx: Context, card: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The card's claims (as stated) and the ledger's distinct tests with their verdicts."""
    pub = ctx.published
    verdicts = pub.verdicts.get(card.id) if pub is not None and ctx.results(card.id) else None
    judged: dict[str, str] = {}
    tests = []
    for v in verdicts or []:
        for c in v.claims:
            judged[c] = v.verdict
        tests.append({"claims": v.claims, "verdict": v.verdict, "reason": v.reason,
                      "test": v.test.describe() if v.test else None,
                      "source": v.test.threshold_from if v.test else None})
    claims = []
    for c in card.get("claims") or []:
        if not isinstance(c, Mapping):
            continue
        pts = "; ".join(f"{p.get('length')}: {p.get('value')}" for p in c.get("points") or [] if isinstance(p, Mapping))
        claims.append({"id": c.get("id"), "statement": c.get("statement", ""), "dataset": c.get("dataset") or "",
                       "train_length": c.get("train_length"), "metric": c.get("metric") or "value",
                       "points": pts or "none given",
                       "source": "the paper" if c.get("source") == "paper" else "survey Table 3",
                       "verdict": judged.get(str(c.get("id")), "not yet run" if verdicts is None else "not judged")})
    return claims, tests


def method_page(ctx: Context, cid: str, figures: dict[str, bytes] | None = None) -> str:
    """The page of card ``cid``; its figure is added to ``figures`` (name → PNG bytes)."""
    figures = {} if figures is None else figures
    card = ctx.cards[cid]
    cat_path = str(card.get("category"))
    t1 = card.get("table1") if isinstance(card.get("table1"), Mapping) else {}
    pub = ctx.published
    verdicts = pub.verdicts.get(cid) if pub is not None and ctx.results(cid) else None
    claims, tests = _claims(ctx, card)
    venue = card.get("venue") or "—"
    if card.get("year_venue") and str(card["year_venue"]) not in str(venue):
        venue = f"{venue} ({card['year_venue']})"
    facts = [
        ("id", code(cid)),
        ("category", Md(f"[{cell(' › '.join(ctx.category_names(cat_path)))}](../categories/"
                        f"{cat_path.replace('/', '__')}.md)")),
        ("coverage", cell(COVERAGE_TEXT.get(str(card.get("coverage")), card.get("coverage") or "—")
                          + (f" ({card['survey_section']})" if card.get("survey_section") else ""))),
        ("first public", cell(card.get("year") or "—")),
        ("venue", cell(venue)),
        ("needs", cell(NEEDS_TEXT.get(str(card.get("needs")), card.get("needs") or "—"))),
        ("base PE", code(ctx.applies_to[str(card.implementation)]) if card.implementation
         and ctx.applies_to.get(str(card.implementation)) else cell("—")),
        ("verdicts", cell(verdict_summary(verdicts, pub.preset if pub else None))),
    ]
    return render_template(
        "method.md.j2", cid=cid, label=f"method-{cid.replace('_', '-')}", card=card, name=card.name,
        aliases=[a for a in card.get("aliases") or [] if a], facts=facts, summary=card.get("summary") or "No summary.",
        formula=safe.formula(card.get("formula") or "", _where(card, "formula")) if card.get("formula") else None,
        table1=[(f, t1.get(f)) for f in TABLE1_FIELDS], table1_survey=t1.get("source") == "survey",
        hyperparameters=[h for h in card.get("hyperparameters") or [] if isinstance(h, Mapping)],
        impl=_implementation(ctx, card), exp=_experiment(ctx, card, figures), claims=claims, tests=tests,
        notes=[n for n in card.get("notes") or [] if n], cite=_citation(ctx, card), links=_links(card),
        related=_related(ctx, card), verdict_names=VERDICTS)


# ---------------------------------------------------------------------------------------------- categories
def category_page(ctx: Context, cat: Category) -> str:
    pub = ctx.published
    rows = []
    for cid in cat.cards:
        card = ctx.cards[cid]
        v = pub.verdicts.get(cid) if pub is not None and ctx.results(cid) else None
        rows.append([Md(f"[{cell(card.name)}](../methods/{cid}.md)"), cell(card.get("year") or "—"),
                     cell(COVERAGE_TEXT.get(str(card.get("coverage")), card.get("coverage") or "—")),
                     cell(NEEDS_TEXT.get(str(card.get("needs")), card.get("needs") or "—")),
                     cell(verdict_summary(v, pub.preset if pub else None))])
    children = [(ch, len(ch.all_cards())) for ch in cat.children]
    return render_template("category.md.j2", cat=cat, names=ctx.category_names(cat.path), rows=rows,
                           children=children)


def taxonomy_tree(ctx: Context) -> str:
    return render_template("taxonomy_tree.md.j2", roots=ctx.tree, cards=ctx.cards, orphans=ctx.orphans,
                           n_categories=len(ctx.categories()), GENERATED=GENERATED)


# ---------------------------------------------------------------------------------------------- tables
def table_page(ctx: Context) -> str:
    return render_template("table.md.j2", n=len(ctx.cards), html=Md(datatable(atlas_frame(ctx), TABLE_ID)),
                           table_id=TABLE_ID, preset=ctx.published.preset if ctx.published else None)


def _stale_summary(ctx: Context) -> list[dict[str, Any]]:
    return [{"preset": p.name, "methods": sorted(p.stale), "files": sum(len(v) for v in p.stale.values())}
            for p in ctx.presets if p.stale]


def leaderboard_page(ctx: Context, figures: dict[str, bytes]) -> str:
    from posenc.book.figures import family_png

    pub = ctx.published
    values: dict[str, Any] = {"pub": pub, "stale": _stale_summary(ctx), "presets": ctx.presets}
    if pub is not None:
        png = family_png(ctx)
        if png is not None:
            figures["leaderboard.png"] = png
        df, groups = leaderboard_frame(ctx)
        values.update(html=Md(datatable(df, LEADERBOARD_ID, groups=groups)), table_id=LEADERBOARD_ID,
                      figure=png is not None,
                      learned=pub.learned, n=len(pub.rows), seeds=sorted({r["seeds"] for r in pub.rows.values()}),
                      unmoved=sorted(m for m, r in pub.rows.items() if r.get("pe_moved") is False),
                      unrun=sorted(c for c, card in ctx.cards.items()
                                   if card.implementation and c not in pub.col.by_method))
    return render_template("leaderboard.md.j2", **values)


# ---------------------------------------------------------------------------------------------- home page
def home_results(ctx: Context) -> str:
    """The home page's lead: the family figure and three findings, each computed from the published results
    and linked to its evidence (or what is pending)."""
    from posenc.book.findings import findings, ledger_summary

    pub = ctx.published
    return render_template("home_results.md.j2", pub=pub, findings=findings(ctx) if pub else [],
                           summary=ledger_summary(ctx) if pub else None, stale=_stale_summary(ctx),
                           has_figure=pub is not None)


def cite_posenc(ctx: Context) -> str:
    bibtex = re.sub(r"^\t", "  ", cite_card("posenc", "bibtex", root=ctx.root).rstrip(), flags=re.M)
    apa = cite_card("posenc", "apa", root=ctx.root).strip().splitlines()
    return render_template("cite_posenc.md.j2", bibtex=Md(bibtex), apa=apa, version=ctx.version)
