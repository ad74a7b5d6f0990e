"""The home page's findings, computed from the published results at build time (never written by hand).

Each finding is a sentence made of measured numbers with their 95% intervals, the figure it reads off, and links
to its evidence (the leaderboard and method pages). A finding the results cannot support says what is pending.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from posenc.book.tables import fmt_interval
from posenc.experiment.aggregate import paired_ratio_at
from posenc.experiment.claims import VERDICTS
from posenc.experiment.leaderboard import RATIO_FACTORS
from posenc.experiment.spec import BASELINES

__all__ = ["Finding", "findings", "largest_factor"]


@dataclass
class Finding:
    title: str
    text: str  # plain text: the template escapes it
    evidence: list[tuple[str, str]] = field(default_factory=list)  # (label, docname)
    pending: bool = False


def largest_factor(rows: dict[str, dict[str, Any]]) -> int | None:
    """The largest length factor with a measured ratio in every row that has any."""
    for f in sorted(RATIO_FACTORS, reverse=True):
        if any((r.get(f"ratio@{f}x") or {}).get("mean") is not None for r in rows.values()):
            return f
    return None


def _mean(cell: dict[str, Any] | None) -> float:
    m = (cell or {}).get("mean")
    return math.inf if m is None else float(m)


def _overlap(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a.get("lo") is None or b.get("lo") is None:
        return True
    return not (a["hi"] < b["lo"] or b["hi"] < a["lo"])


def _doc(method: str) -> str:
    return f"/book/generated/methods/{method}"


def _baselines(ctx: Any, f: int) -> Finding:
    pub = ctx.published
    have = [b for b in BASELINES if (pub.rows.get(b) or {}).get(f"ratio@{f}x", {}).get("mean") is not None]
    title = f"Baselines at {f}× the training length"
    if len(have) < 2:
        return Finding(title, f"Pending: fewer than two baselines have a measured ratio at {f}× in the {pub.preset} "
                              "results.", [("leaderboard", "/book/generated/leaderboard")], pending=True)
    ranked = sorted(have, key=lambda b: _mean(pub.rows[b][f"ratio@{f}x"]))
    cells = {b: pub.rows[b][f"ratio@{f}x"] for b in ranked}
    listing = "; ".join(f"{ctx.cards[b].name if b in ctx.cards else b} {fmt_interval(cells[b])}" for b in ranked)
    best, second = ranked[0], ranked[1]
    resolved = ("its interval overlaps the next one's, so the order of the two is not resolved at this scale"
                if _overlap(cells[best], cells[second]) else "its interval lies below every other baseline's")
    text = (f"Perplexity at {f}× over perplexity at 1× (mean ± 95% half-width over seeds, lower is flatter): "
            f"{listing}. The flattest is {ctx.cards[best].name if best in ctx.cards else best}; {resolved}.")
    return Finding(title, text, [("leaderboard", "/book/generated/leaderboard")] + [(b, _doc(b)) for b in ranked])


def _spread(ctx: Any, f: int) -> Finding:
    pub = ctx.published
    rows = {m: r for m, r in pub.rows.items() if (r.get(f"ratio@{f}x") or {}).get("mean") is not None}
    title = f"All methods at {f}×"
    if len(rows) < 3:
        return Finding(title, f"Pending: {len(rows)} method(s) have a measured ratio at {f}× in the {pub.preset} "
                              "results; the comparison needs the sweep.",
                       [("leaderboard", "/book/generated/leaderboard")], pending=True)
    ranked = sorted(rows, key=lambda m: _mean(rows[m][f"ratio@{f}x"]))
    top = ranked[:3]
    n_div = sum(1 for m in rows if not math.isfinite(_mean(rows[m][f"ratio@{f}x"])))
    blown = [m for m in ranked if _mean(rows[m][f"ratio@{f}x"]) > 2.0]
    text = (f"Of {len(rows)} methods measured at {f}×, the flattest are "
            + ", ".join(f"{m} ({fmt_interval(rows[m][f'ratio@{f}x'])})" for m in top)
            + f"; {len(blown)} more than double their 1× perplexity"
            + (f" ({n_div} diverge)" if n_div else "") + ". Each method's curve is on the family figure above.")
    return Finding(title, text, [("leaderboard", "/book/generated/leaderboard")] + [(m, _doc(m)) for m in top])


def _controls(ctx: Any) -> Finding:
    pub = ctx.published
    p = pub.col.preset
    f = p.finetune_factor
    title = f"Methods applied to RoPE against the control at {f}×"
    below, above, overlap = [], [], []
    for m, rs in sorted(pub.col.by_method.items()):
        base = rs[0].data.get("applies_to")
        if not base or not pub.col.lookup(base):
            continue
        variant = rs[0].primary
        other_variant = "scratch" if variant == "zero_shot" else variant
        if other_variant not in pub.col.lookup(base)[0].variants:
            continue
        iv = paired_ratio_at(rs, pub.col.lookup(base), f, variant=variant, other_variant=other_variant)
        if iv is None or not math.isfinite(iv.mean):
            continue
        (below if iv.hi < 1 else above if iv.lo > 1 else overlap).append(m)
    n = len(below) + len(above) + len(overlap)
    if n == 0:
        return Finding(title, f"Pending: no method applied to a RoPE model has results at the {pub.preset} preset "
                              "together with its control (RoPE given the same fine-tune, or raw RoPE on the same "
                              "weights for zero-shot methods).", [("protocol", "/book/protocol")], pending=True)
    text = (f"Of {n} methods applied to a RoPE model, {len(below)} have a perplexity at {f}× whose 95% interval lies "
            f"entirely below their control (RoPE given the same fine-tune, or raw RoPE on the same weights), "
            f"{len(above)} entirely above, and {len(overlap)} overlap it: paired by seed, the scaling itself "
            "rather than the fine-tune." + (" Below: " + ", ".join(below) + "." if below else ""))
    ev = [("protocol: controls", "/book/protocol")] + [(m, _doc(m)) for m in (below + overlap + above)[:6]]
    return Finding(title, text, ev)


def ledger_summary(ctx: Any) -> dict[str, Any]:
    """Counts of distinct tests by verdict over every published method, and the tasks' learned status."""
    pub = ctx.published
    counts = {v: 0 for v in VERDICTS}
    for vs in pub.verdicts.values():
        for v in vs:
            counts[v.verdict] = counts.get(v.verdict, 0) + 1
    tasks = {t: {"learned": bool(v.get("learned")), "best": v.get("best")} for t, v in pub.learned.items()}
    return {"counts": counts, "total": sum(counts.values()), "methods": len(pub.verdicts), "tasks": tasks}


def findings(ctx: Any) -> list[Finding]:
    pub = ctx.published
    f = largest_factor(pub.rows)
    if f is None:
        return [Finding("Results", "Pending: no published result has a perplexity ratio yet.", pending=True)]
    return [_baselines(ctx, f), _spread(ctx, f), _controls(ctx)]
