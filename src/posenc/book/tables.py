"""The interactive tables (DataTables through itables, with its code embedded once so that pages work offline):
the atlas of cards, and the leaderboard with its column groups.

Every cell is built here as HTML from escaped text (:func:`html.escape`); links are made from card ids, which
the card schema restricts to ``[a-z][a-z0-9_]*``. Clicking anywhere on a column header sorts by it (itables'
default sorts only from the small arrow).
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
from itables import JavascriptFunction, javascript, options, to_html_datatable

from posenc.experiment.claims import VERDICTS
from posenc.experiment.leaderboard import RATIO_FACTORS, TASK_FACTORS

__all__ = ["TABLE_ID", "LEADERBOARD_ID", "COVERAGE_TEXT", "NEEDS_TEXT", "TABLE1_FIELDS", "atlas_frame",
           "leaderboard_frame", "group_header_js", "datatable", "fmt_interval", "verdict_summary"]

TABLE_ID = "posenc_methods"
LEADERBOARD_ID = "posenc_leaderboard"
TABLE1_FIELDS = ("manifestation", "learnable", "integration", "injection")
_TABLE1_SHORT = ("manif.", "learn.", "integr.", "inject.")
COVERAGE_TEXT = {"survey": "in survey", "baseline": "baseline", "not_in_survey": "not in survey",
                 "after_survey": "after survey"}
NEEDS_TEXT = {"none": "plug-and-play", "fine_tuning": "fine-tuning", "training_from_scratch": "from scratch"}


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def fmt_interval(cell: Mapping[str, Any] | None, digits: int = 3) -> str:
    """``mean ± half-width`` of a leaderboard cell (``—`` when not measured, ``∞`` when it diverged)."""
    if not cell or cell.get("mean") is None:
        return "—"
    m, lo, hi = cell["mean"], cell.get("lo"), cell.get("hi")
    if not math.isfinite(m):
        return "∞"
    if lo is None or hi is None or lo == hi or not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{m:#.{digits}g}"
    return f"{m:#.{digits}g} ± {(hi - lo) / 2:.{max(1, digits - 1)}g}"


def verdict_summary(verdicts: Sequence[Any] | None, preset: str | None) -> str:
    """``"2/5 reproduced, 1 inconclusive, ... (cpu)"``: counts of distinct tests, or why there are none."""
    if verdicts is None:
        return "not yet run"
    if not verdicts:
        return f"no claims ({preset})"
    n = len(verdicts)
    counts = {v: sum(x.verdict == v for x in verdicts) for v in VERDICTS}
    parts = [f"{counts['reproduced']}/{n} reproduced"]
    parts += [f"{counts[v]} {v}" for v in VERDICTS[1:] if counts[v]]
    return ", ".join(parts) + f" ({preset})"


# Cells made by _sortable() sort by their number (intervals, accuracies), others as DataTables detects them.
_SORT_RENDER = JavascriptFunction(
    "function (data, type) { if ((type === 'sort' || type === 'type') && typeof data === 'string') { "
    "const m = /data-order=\"([^\"]+)\"/.exec(data); if (m) { return parseFloat(m[1]); } } return data; }")


def datatable(df: pd.DataFrame, table_id: str, *, order: list[list[Any]] | None = None,
              groups: list[tuple[str, int]] | None = None) -> str:
    """itables' offline bundle (once per page) and the table; header text sorts on click; ``groups`` adds a row
    of column groups above the header."""
    init = javascript.generate_init_offline_itables_html(options.dt_bundle)
    kwargs: dict[str, Any] = {"columnDefs": [{"targets": "_all", "render": _SORT_RENDER}]}
    if order is not None:
        kwargs["order"] = order
    if groups:
        kwargs["drawCallback"] = group_header_js(groups)
    table = to_html_datatable(
        df, connected=False, table_id=table_id, allow_html=True, showIndex=False, paging=False,
        classes="display compact", display_logo_when_loading=False, autoWidth=False,
        text_in_header_can_be_selected=False, style="width:100%; table-layout:auto; margin:0",
        layout={"topStart": None, "topEnd": "search", "bottomStart": "info", "bottomEnd": None}, **kwargs,
    )
    out = init + "\n" + table
    # The page puts this into a ```{raw} html``` block: a fence line inside would end it early.
    if re.search(r"^\s*(```|~~~)", out, re.M):
        raise ValueError(f"{table_id}: the table's HTML contains a Markdown fence line")
    return out


def atlas_frame(ctx: Any) -> pd.DataFrame:
    """The cards as the frame behind the atlas table (HTML cells)."""
    rows = []
    pub = ctx.published
    for cid, card in ctx.cards.items():
        t1 = card.get("table1") if isinstance(card.get("table1"), Mapping) else {}
        cat = ctx.category_names(card.get("category"))
        impl = card.get("implementation")
        base = ctx.applies_to.get(str(impl)) if impl else None
        note = card.get("implementation_note") or "no reason recorded"
        verdicts = pub.verdicts.get(cid) if pub is not None and cid in pub.col.by_method else None
        # <wbr>: let long ids and joined values break after "_" and "+" in a narrow column
        rows.append({
            "id": f'<a href="methods/{cid}.html">{_e(cid).replace("_", "_<wbr>")}</a>',
            "name": _e(card.get("name", cid)),
            "category": _e(cat[-1] if cat else ""),
            "base PE": _e(base) if base else "",
            "year": card.get("year") if isinstance(card.get("year"), int) else None,
            "coverage": _e(COVERAGE_TEXT.get(str(card.get("coverage")), card.get("coverage"))),
            **{short: _e(str(t1.get(f)).lower() if isinstance(t1.get(f), bool) else str(t1.get(f, "")))
               .replace("+", "+<wbr>") for f, short in zip(TABLE1_FIELDS, _TABLE1_SHORT, strict=True)},
            "needs": _e(NEEDS_TEXT.get(str(card.get("needs")), card.get("needs"))),
            "impl.": (f'<span title="registry id {_e(impl)}">yes</span>' if impl
                      else f'<span title="{_e(note)}">no</span>'),
            "verdicts": _e(verdict_summary(verdicts, pub.preset if pub else None)),
        })
    df = pd.DataFrame(rows)
    df["year"] = df["year"].astype("Int64")
    return df


def _sortable(text: str, value: float | None) -> str:
    """A cell that shows ``text`` and sorts by ``value`` (DataTables reads ``data-order``; absent values last)."""
    key = 1e300 if value is None or not math.isfinite(value) else value
    return f'<span data-order="{key:.10g}">{_e(text)}</span>'


def leaderboard_frame(ctx: Any) -> tuple[pd.DataFrame, list[tuple[str, int]]]:
    """The leaderboard as a frame (one header row of unique labels) and its column groups ``(label, span)``."""
    pub = ctx.published
    assert pub is not None
    rows = []
    group_of: dict[str, str] = {}
    for method, row in sorted(pub.rows.items()):
        card = ctx.cards.get(method)
        name = card.name if card is not None else method
        link = f'<a href="methods/{method}.html" title="{_e(name)}">{_e(method).replace("_", "_<wbr>")}</a>'
        flag = (' <span class="posenc-flag" title="learned PE parameters did not move">⚑</span>'
                if row.get("pe_moved") is False else "")
        out: dict[str, Any] = {"id": link + flag, "base PE": _e(row.get("base") or ""),
                               "variant": _e(row.get("variant") or ""), "seeds": row.get("seeds")}
        group_of.update({k: "method" for k in out})
        cell = row.get("ppl@1x") or {}
        out["ppl at 1×"] = _sortable(fmt_interval(cell), cell.get("mean"))
        group_of["ppl at 1×"] = "perplexity"
        for f in RATIO_FACTORS:
            c = row.get(f"ratio@{f}x") or {}
            if c.get("mean") is not None:
                out[f"{f}×"] = _sortable(fmt_interval(c), c.get("mean"))
            group_of[f"{f}×"] = "perplexity ratio to 1×"
        for task in ("needle", "latest"):
            for f in TASK_FACTORS:
                c = row.get(f"{task}@{f}x") or {}
                label = f"{task} {f}×"
                if c.get("mean") is not None:
                    out[label] = _sortable(fmt_interval(c, 2), c.get("mean"))
                group_of[label] = "task accuracy"
        for v in VERDICTS:
            out[v] = row.get(v, 0)
            group_of[v] = "verdicts (distinct tests)"
        rows.append(out)
    df = pd.DataFrame(rows)
    order = [c for c in group_of if c in df.columns]  # the groups' order; columns no method measured are gone
    df = df[order].astype(object).where(df[order].notna(), _sortable("—", None))
    groups: list[tuple[str, int]] = []
    for c in df.columns:
        if groups and groups[-1][0] == group_of[c]:
            groups[-1] = (groups[-1][0], groups[-1][1] + 1)
        else:
            groups.append((group_of[c], 1))
    return df, groups


def group_header_js(groups: list[tuple[str, int]]) -> JavascriptFunction:
    """A ``drawCallback`` that puts a row of column groups above the header, once (DataTables sorts by the row
    below it; this row only labels). itables keeps ``initComplete`` for itself, so the first draw adds it."""
    cells = json.dumps([[label, span] for label, span in groups])
    return JavascriptFunction(
        "function (settings) { const thead = new $.fn.dataTable.Api(settings).table().header(); "
        "if (thead.querySelector('tr.posenc-groups')) { return; } "
        "const tr = document.createElement('tr'); tr.className = 'posenc-groups'; "
        f"for (const [label, span] of {cells}) {{ const th = document.createElement('th'); th.colSpan = span; "
        "th.textContent = label; th.setAttribute('data-dt-order', 'disable'); tr.appendChild(th); } "
        "thead.insertBefore(tr, thead.firstChild); }")
