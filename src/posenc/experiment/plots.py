"""Figures: one fixed colour and marker per method, intervals as bands, clipped axes marked as such.

* :func:`style`: the colour and marker of a method, the same in every figure of the book. Baselines have
  reserved colours; every other method takes a colour from its family's own sequence and its family's marker,
  so no two methods of one family share a colour.
* :func:`method_figure`: a method's key figure — the method (primary variant solid, the other dashed), every
  comparator its verdicts use (the control included) and the baselines: perplexity ratio, sliding-window
  ratio, loss against position, and both tasks with Wilson bands.
* :func:`leaderboard_figure`: one panel per family.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt  # headless machines fall back to the Agg backend by themselves

from posenc.cards import find_card, load_cards
from posenc.experiment.aggregate import Series, lm_series, position_series, task_series
from posenc.experiment.results import Result
from posenc.experiment.spec import BASELINES

__all__ = ["FAMILIES", "family_of", "style", "band", "method_figure", "leaderboard_figure", "plot_loss",
           "positional_signal", "attention_map", "RATIO_CLIP"]

#: Panels of the family figure: (title, category prefixes).
FAMILIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Absolute", ("extrapolatable_pe/ape",)),
    ("RoPE family", ("extrapolatable_pe/rpe/rope_family",)),
    ("Bias family and other relative", ("extrapolatable_pe/rpe",)),
    ("Interpolation and remapping", ("llm_era/position_interpolation",)),
    ("Randomized", ("llm_era/randomized_pe",)),
    ("Beyond the PE", ("beyond_pe",)),
)
_BASE_COLOURS = {"rope": "#1f77b4", "alibi": "#2ca02c", "sinusoidal": "#ff7f0e", "nope": "#7f7f7f"}
# Distinct from the baselines' blue, green, orange and grey, and from each other.
_PALETTE = ("#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31",
            "#843c39", "#7b4173", "#e7298a", "#a6761d", "#66a61e", "#7570b3", "#b15928", "#fb9a99", "#cab2d6",
            "#ffd92f", "#1b9e77", "#e31a1c", "#6a3d9a", "#b2df8a", "#000000")
_MARKERS = ("o", "s", "^", "D", "v", "P")
#: Perplexity ratios above this are drawn at the clip line with an upward marker.
RATIO_CLIP = 8.0


def family_of(category: str | None) -> int:
    for i, (_, prefixes) in enumerate(FAMILIES):
        if category and any(category == p or category.startswith(p + "/") for p in prefixes):
            return i
    return len(FAMILIES) - 1


_STYLES: dict[str, dict[str, Any]] = {}


def style(method: str) -> dict[str, Any]:
    """``{"color", "marker"}`` of a method: fixed for the whole book."""
    if not _STYLES:
        by_family: dict[int, list[str]] = {}
        for card in sorted(load_cards(), key=lambda c: c.id):
            if card.id not in _BASE_COLOURS:
                by_family.setdefault(family_of(card.category), []).append(card.id)
        for fam, ids in by_family.items():
            for k, cid in enumerate(ids):
                _STYLES[cid] = {"color": _PALETTE[k % len(_PALETTE)], "marker": _MARKERS[fam % len(_MARKERS)]}
        for cid, colour in _BASE_COLOURS.items():
            _STYLES[cid] = {"color": colour, "marker": "o"}
    return dict(_STYLES.get(method, {"color": "#000000", "marker": "x"}))


def band(ax: Any, s: Series, *, clip: float | None = None, **kw: Any) -> bool:
    """The series' means as a line and its intervals as a band; values above ``clip`` sit on the clip line
    with an upward triangle (the axis is broken there, not the data). Returns True when something was clipped."""
    if not s.x:
        return False
    ys = [iv.mean for iv in s.y]
    lo = [iv.lo for iv in s.y]
    hi = [iv.hi for iv in s.y]
    if clip is not None:
        over = [i for i, y in enumerate(ys) if not math.isfinite(y) or y > clip]
        ys = [min(y, clip) if math.isfinite(y) else clip for y in ys]
        lo = [min(v, clip) if math.isfinite(v) else clip for v in lo]
        hi = [min(v, clip) if math.isfinite(v) else clip for v in hi]
        if over:
            ax.scatter([s.x[i] for i in over], [clip] * len(over), marker="^", s=40, color=kw.get("color"),
                       zorder=5, clip_on=False)
    else:
        over = []
    line, = ax.plot(s.x, ys, label=s.label, ms=4, **kw)
    if any(a != b for a, b in zip(lo, hi, strict=True)):
        ax.fill_between(s.x, lo, hi, color=line.get_color(), alpha=0.15, lw=0)
    return bool(over)


def _ratio_axis(ax: Any, clipped: bool) -> None:
    """Log y from just below 1 to just above the data (the clip line when something was clipped)."""
    ys = [y for line in ax.lines for y in line.get_ydata() if math.isfinite(y) and y > 0]
    top = RATIO_CLIP if clipped else min(RATIO_CLIP, max(ys, default=1.0) * 1.15)
    bottom = min(0.9, min(ys, default=1.0) * 0.95)
    ax.set_ylim(bottom, max(top, 1.1))
    ax.axhline(1.0, color="k", lw=0.5)
    if clipped:
        ax.axhline(RATIO_CLIP, color="gray", lw=0.6, ls="--")
        ax.text(0.99, 0.98, f"▲: above {RATIO_CLIP:g} (clipped)", transform=ax.transAxes, ha="right", va="top",
                fontsize=8, color="gray")


Lookup = Callable[[str], Sequence[Result]]


def _series_specs(method: str, own: Sequence[Result], lookup: Lookup, comparators: set[str]
                  ) -> list[tuple[str, Sequence[Result], str | None, dict[str, Any]]]:
    """(label, results, variant, line style) of every curve of a method's figure."""
    out: list[tuple[str, Sequence[Result], str | None, dict[str, Any]]] = []
    st = style(method)
    primary = own[0].primary if own else None
    for v in (own[0].variants if own else {}):
        dashed = v != primary
        out.append((f"{method} ({v})" if len(own[0].variants) > 1 else method, own, v,
                    {**st, "lw": 2.2, "ls": "--" if dashed else "-"}))
    base = own[0].data.get("applies_to") if own else None
    shown = {method}
    if "control" in comparators and base:
        ctl_variant = "finetuned" if primary == "finetuned" else "scratch"
        out.append((f"control: {base} ({ctl_variant})", lookup(base), ctl_variant,
                    {**style(base), "lw": 1.6, "ls": ":"}))
    for c in sorted(comparators - {"control"}):
        if c not in shown and lookup(c):
            rs = lookup(c)
            same = primary if primary in rs[0].variants else None  # like with like, as the verdicts compare
            out.append((f"{c} ({same})" if same and len(rs[0].variants) > 1 else c, rs, same,
                        {**style(c), "lw": 1.6, "ls": "-."}))
            shown.add(c)
    for b in BASELINES:
        if b not in shown and lookup(b):
            out.append((b, lookup(b), "scratch", {**style(b), "lw": 1.0, "alpha": 0.8}))
            shown.add(b)
    return out


def method_figure(method: str, lookup: Lookup, comparators: set[str] | None = None) -> Any:
    """The key figure of a method's page and notebook (2 × 3 panels)."""
    own = lookup(method)
    if comparators is None:
        from posenc.experiment.claims import comparators as card_comparators

        card = find_card(method)
        comparators = card_comparators(card) if card is not None else set()
    specs = _series_specs(method, own, lookup, comparators)
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.2))
    train_len = own[0].data["config"]["train_len"] if own else None
    panels = [(axes[0, 0], "lm", "perplexity / perplexity at 1× (non-overlapping windows)"),
              (axes[0, 1], "lm_sliding", "perplexity / perplexity at 1× (sliding window, stride l/2)")]
    for ax, protocol, title in panels:
        clipped = False
        for label, rs, variant, kw in specs:
            clipped |= band(ax, lm_series(rs, label, protocol=protocol, variant=variant), clip=RATIO_CLIP, **kw)
        ax.set(xscale="log", yscale="log", title=title, xlabel="evaluation length (bytes)")
        _ratio_axis(ax, clipped)
    ax = axes[0, 2]
    for label, rs, variant, kw in specs:
        band(ax, position_series(rs, label, variant), **{k: v for k, v in kw.items() if k != "marker"})
    ax.set(xscale="log", title="loss against position (longest window)", xlabel="position in the window",
           ylabel="nats per byte")
    for ax, task in ((axes[1, 0], "needle"), (axes[1, 1], "latest")):
        for label, rs, variant, kw in specs:
            band(ax, task_series(rs, task, label, variant), **kw)
        ax.set(xscale="log", ylim=(-0.03, 1.03), title=f"{task} accuracy (Wilson 95%)",
               xlabel="evaluation length (bytes)")
        ax.axhline(0.1, color="gray", ls="--", lw=0.8)
    for ax in axes.flat[:5]:
        if train_len:
            ax.axvline(train_len, color="k", ls=":", lw=1)
        ax.grid(alpha=0.3, which="both")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    axes[1, 2].axis("off")
    axes[1, 2].legend(handles, labels, loc="center", fontsize=10, frameon=False,
                      title=f"{method}: mean and 95% interval over seeds")
    fig.tight_layout()
    return fig


def leaderboard_figure(col: Any, path: Path) -> None:
    """One panel per family: perplexity ratio against length, with bands; legend beside each panel."""
    groups: dict[int, list[str]] = {}
    for method in sorted(col.by_method):
        card = find_card(method)
        groups.setdefault(family_of(card.category if card else None), []).append(method)
    n = len(FAMILIES)
    fig, axes = plt.subplots(n, 1, figsize=(11, 4.2 * n))
    for i, ax in enumerate(axes):
        title, _ = FAMILIES[i]
        clipped = False
        for m in groups.get(i, []):
            rs = col.lookup(m)
            clipped |= band(ax, lm_series(rs, m, variant=rs[0].primary), clip=RATIO_CLIP, **style(m), lw=1.5)
        ax.set(xscale="log", yscale="log", title=title, xlabel="evaluation length (bytes)",
               ylabel="ppl / ppl at 1×")
        _ratio_axis(ax, clipped)
        ax.grid(alpha=0.3, which="both")
        if ax.lines:
            ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9, frameon=False)
    fig.suptitle(f"Length extrapolation, {col.preset.name} preset: mean and 95% interval over seeds "
                 f"(values above {RATIO_CLIP:g} drawn at the dashed line, ▲)", y=1.0)
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def plot_loss(results: Sequence[Result], ax: Any = None) -> Any:
    """Training loss of every seed (and of the fine-tune, after it)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.6))
    for r in results:
        tr = r.data.get("train", {})
        log = tr.get("log") or tr.get("base_log") or {}
        pts = log.get("loss", [])
        if pts:
            ax.plot([p["step"] for p in pts], [p["loss"] for p in pts], lw=1, label=f"seed {r.seed}")
        ft = (tr.get("finetune_log") or {}).get("loss", [])
        if ft and pts:
            off = pts[-1]["step"] + 1
            ax.plot([off + p["step"] for p in ft], [p["loss"] for p in ft], lw=1.5, color="k")
    ax.set(xlabel="step", ylabel="cross-entropy (nats/byte)", title="training loss (black: fine-tune)")
    ax.legend(fontsize=8)
    return ax


def positional_signal(spec: Any, model: Any, ax: Any = None) -> Any:
    """What the method puts into attention, drawn from the measured model's own PE:

    the logit bias against distance (bias methods), the rotation wavelengths against RoPE's (the rotary
    family), sampled training positions (position samplers), or else the model's layer-0 attention on
    validation text (methods whose position enters through content or the embedding).
    """
    import numpy as np
    import torch

    from posenc import data as D
    from posenc.pe.base import build as pe_build

    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 3.8))
    pe, p = model.pe, spec.preset
    T = min(4 * p.train_len, 512)
    dev = next(model.parameters()).device
    valid = D.load_corpus().valid  # validation text: token-dependent biases and the attention map read it
    text = torch.from_numpy(valid[:T].astype(np.int64)).to(dev)[None]
    pos = torch.arange(T, dtype=torch.float32, device=dev)
    with torch.no_grad():
        b = None if pe.needs_explicit() else pe.bias(pe.context(pos, tokens=text), 0)
        if b is not None:
            b = b[0] if b.dim() == 4 else b
            for h in range(b.shape[0]):
                ax.plot(np.arange(T), b[h, T - 1, :].flip(0).float().cpu().numpy(), lw=1, label=f"head {h}")
            ax.axvline(p.train_len, color="k", ls=":", lw=1, label="train length")
            ax.set(xlabel="distance i − j", ylabel="logit bias", title=f"{spec.method}: bias against distance")
            ax.legend(fontsize=7, ncol=2)
            return ax
        if hasattr(pe, "inv_freq"):
            length = p.train_len * p.finetune_factor
            inv = pe.inv_freq(length).float().cpu().numpy()
            wl = np.full(inv.shape, np.nan)
            np.divide(2 * np.pi, inv, out=wl, where=inv > 0)  # zero frequencies do not rotate: no wavelength
            ax.plot(wl, marker=".", label=spec.method, color=style(spec.method)["color"])
            if spec.method != "rope":
                ref = pe_build("rope", head_dim=pe.head_dim, num_heads=pe.num_heads, train_len=p.train_len)
                ax.plot(2 * np.pi / ref.inv_freq(length).float().cpu().numpy(), ls="--", color=style("rope")["color"],
                        label="rope")
            ax.axhline(p.train_len, color="k", ls=":", lw=1, label="train length")
            ax.set(yscale="log", xlabel="frequency pair i", ylabel="wavelength 2π/θ_i (tokens)",
                   title=f"{spec.method}: rotation wavelengths at {length} tokens")
            ax.legend(fontsize=8)
            return ax
        if pe.samples_positions(True):
            gen = torch.Generator().manual_seed(0)
            state = torch.random.get_rng_state()
            torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=gen)))
            for i in range(4):
                d = pe.positions(p.train_len, training=True).cpu().numpy()
                ax.plot(d, marker=".", ms=2, lw=0.8, label=f"draw {i}")
            torch.random.set_rng_state(state)
            ax.plot(np.arange(p.train_len), color="k", ls=":", label="arange")
            ax.set(xlabel="token index", ylabel="position", title=f"{spec.method}: sampled training positions")
            ax.legend(fontsize=8)
            return ax
        from posenc.experiment.evaluate import LENGTH_ERRORS

        note = ""
        for length in (2 * p.train_len, p.train_len):  # past the training length where the model can go there
            x = torch.from_numpy(valid[:4 * length].astype(np.int64)).view(4, length).to(pos.device)
            try:
                att = attention_map(model, x)
                break
            except LENGTH_ERRORS as e:  # as in the evaluation: a length the model cannot take (a learned table)
                if length == p.train_len:
                    raise
                note = f"\nat the training length ({length} tokens raise {type(e).__name__})"
    from matplotlib.colors import LogNorm

    im = ax.imshow(np.clip(att, 1e-4, 1.0), cmap="viridis", aspect="auto", norm=LogNorm(vmin=1e-4, vmax=1.0))
    ax.axvline(p.train_len, color="w", ls=":", lw=1)
    ax.set(xlabel="key position", ylabel="query position",
           title=f"{spec.method}: layer-0 attention (mean over heads and 4 windows){note}")
    plt.colorbar(im, ax=ax)
    return ax


def attention_map(model: Any, x: Any) -> Any:
    """Layer-0 attention probabilities (T, T) of ``model`` on tokens ``x`` (B, T), averaged over B and heads."""
    import torch

    blk = model.blocks[0]
    with torch.no_grad():
        ctx = model.context(x)
        s = model.cfg.token_scale
        h = blk.ln1(model.pe.embed(model.wte(x) * s, ctx) / s)
        B, T, Cn = h.shape
        H = model.cfg.n_head
        q, k, _ = blk.attn.qkv(h).split(Cn, dim=2)
        q, k = (t.view(B, T, H, Cn // H).transpose(1, 2) for t in (q, k))
        att = model.pe.weights(model.pe.logits(q, k, ctx, 0), ctx.causal_mask(), ctx, 0)
    return att.mean(dim=(0, 1)).cpu().numpy()
