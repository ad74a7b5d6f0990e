"""The book's figures, drawn from the published results with :mod:`posenc.experiment.plots`.

* one figure per method page: :func:`posenc.experiment.plots.method_figure` (the method, its comparators and
  control, and the baselines, each in its fixed colour and marker from :func:`~posenc.experiment.plots.style`);
* the family figure of the leaderboard and the home page: :func:`~posenc.experiment.plots.leaderboard_figure`.

Drawing 50 figures costs about a minute, so each PNG is cached under the cache folder by a hash of everything
it is drawn from (the result files it reads, the plotting code and matplotlib's version): a rebuild redraws
only figures whose inputs changed. PNGs carry no timestamp, so the same inputs give the same bytes.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt

from posenc import paths
from posenc.experiment import plots
from posenc.experiment.claims import comparators
from posenc.experiment.results import Result
from posenc.experiment.spec import BASELINES

__all__ = ["method_png", "family_png", "figure_inputs"]

#: Resolution of the PNGs: the method figure (15 × 8.2 in) is 1,500 px wide, twice the page's column at 1×.
DPI = 100
_SAVE = {"format": "png", "dpi": DPI, "bbox_inches": "tight", "metadata": {"Software": None}}
#: Larger text than matplotlib's 10 points: the figures are shown scaled down to the page's width.
_RC = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "xtick.labelsize": 10, "ytick.labelsize": 10}


def _code_hash() -> str:
    return hashlib.sha256(inspect.getsource(plots).encode()).hexdigest()


def figure_inputs(kind: str, results: Iterable[Result], extra: Any = None) -> str:
    """A key over the figure's kind, the bytes of every result it reads, the plotting code and matplotlib."""
    h = hashlib.sha256()
    h.update(json.dumps([kind, extra, matplotlib.__version__, _code_hash()], sort_keys=True, default=str).encode())
    for r in sorted(results, key=lambda r: (r.method, r.seed)):
        h.update(json.dumps(r.data, sort_keys=True).encode())
    return h.hexdigest()[:32]


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    try:
        fig.savefig(buf, **_SAVE)
    finally:
        plt.close(fig)
    return buf.getvalue()


def _cached(key: str, render: Callable[[], bytes]) -> bytes:
    folder = paths.cache_dir() / "book-figures"
    path = folder / f"{key}.png"
    if path.is_file():
        return path.read_bytes()
    data = render()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    except OSError:  # a read-only cache only costs a redraw next time
        pass
    return data


def _involved(ctx: Any, cid: str) -> list[str]:
    """Every method the figure of ``cid`` draws: itself, its comparators, its base (the control) and the
    baselines."""
    card = ctx.cards.get(cid)
    ids = {cid, *BASELINES}
    if card is not None:
        ids |= comparators(card) - {"control"}
    base = ctx.applies_to.get(cid)
    if base:
        ids.add(base)
    return sorted(ids)


def method_png(ctx: Any, cid: str) -> bytes | None:
    """The method page's figure, or None when the method has no published result."""
    pub = ctx.published
    if pub is None or not pub.col.lookup(cid):
        return None
    card = ctx.cards.get(cid)
    comps = comparators(card) if card is not None else set()
    involved = [r for m in _involved(ctx, cid) for r in pub.col.lookup(m)]
    key = figure_inputs("method", involved, [cid, sorted(comps), pub.preset, _RC, "3x2"])

    def render() -> bytes:
        with plt.rc_context(_RC):
            fig = plots.method_figure(cid, pub.col.lookup, comps, ncols=2)  # 3 × 2: legible in a page column
        fig.suptitle(f"{card.name if card is not None else cid} ({cid}), {pub.preset} preset: mean and 95% interval "
                     "over seeds", fontsize=13, y=1.01)
        return _png(fig)

    return _cached(key, render)


def family_png(ctx: Any) -> bytes | None:
    """The family figure (one panel per family), or None when nothing is published."""
    pub = ctx.published
    if pub is None:
        return None
    key = figure_inputs("family", [r for rs in pub.col.by_method.values() for r in rs], [pub.preset, _RC])

    def render() -> bytes:
        with tempfile.TemporaryDirectory(prefix="posenc-family-") as tmp:
            out = Path(tmp) / "family.png"
            with plt.rc_context(_RC):
                plots.leaderboard_figure(pub.col, out)
            return out.read_bytes()

    return _cached(key, render)


def close_all() -> None:
    plt.close("all")
