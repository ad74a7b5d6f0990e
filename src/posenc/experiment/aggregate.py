"""Seeds together: curves as a mean with a 95% interval, paired comparisons, and task-learning checks.

Every number the leaderboard, the figures and the verdicts show comes from here, over the per-seed results
of :mod:`posenc.experiment.results`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from posenc.experiment.results import Result
from posenc.experiment.stats import Interval, log_interval, mean_interval, wilson

__all__ = ["Series", "lm_series", "ratio_at", "paired_ratio_at", "task_series", "task_learned", "LEARNED_AT",
           "position_series", "seeds_of"]

#: A task counts as learned in-distribution when a baseline reaches this accuracy at 1×.
LEARNED_AT = 0.9


@dataclass(frozen=True)
class Series:
    """One curve over seeds: x values and an interval per x (n = seeds, or examples for tasks)."""

    label: str
    x: list[float]
    y: list[Interval]


def seeds_of(results: Sequence[Result]) -> list[int]:
    return sorted(r.seed for r in results)


def _values(results: Sequence[Result], factor: int, metric: str, protocol: str, variant: str | None
            ) -> list[float]:
    out = []
    for r in results:
        v = r.value(factor, metric, protocol, variant)
        if v is not None:
            out.append(v)
    return out


def ratio_at(results: Sequence[Result], factor: int, *, protocol: str = "lm", variant: str | None = None
             ) -> Interval | None:
    """ppl(factor)/ppl(1×) per seed, as a geometric mean with its interval (None when not measured)."""
    ratios = []
    for r in results:
        num, den = r.value(factor, "ppl", protocol, variant), r.value(1, "ppl", protocol, variant)
        if num is None or den is None:
            continue
        ratios.append(math.inf if math.isinf(num) or math.isinf(den) or den <= 0 else num / den)
    return log_interval(ratios) if ratios else None


def paired_ratio_at(results: Sequence[Result], others: Sequence[Result], factor: int, *, protocol: str = "lm",
                    variant: str | None = None, other_variant: str | None = None) -> Interval | None:
    """ppl of ``results`` over ppl of ``others`` at ``factor``, paired by seed (only seeds both have)."""
    by_seed = {r.seed: r for r in others}
    ratios = []
    for r in results:
        o = by_seed.get(r.seed)
        if o is None:
            continue
        a, b = r.value(factor, "ppl", protocol, variant), o.value(factor, "ppl", protocol, other_variant)
        if a is None or b is None:
            continue
        ratios.append(math.inf if math.isinf(a) or math.isinf(b) else a / b)
    return log_interval(ratios) if ratios else None


def lm_series(results: Sequence[Result], label: str, *, protocol: str = "lm", variant: str | None = None,
              relative: bool = True) -> Series:
    """Perplexity (``relative``: over the same seed's 1× perplexity) against length, over seeds."""
    factors = sorted({pt["factor"] for r in results for pt in r.curve(protocol, variant)})
    xs, ys = [], []
    for f in factors:
        if relative:
            iv = ratio_at(results, f, protocol=protocol, variant=variant)
        else:
            vals = _values(results, f, "ppl", protocol, variant)
            iv = log_interval(vals) if vals else None
        if iv is not None:
            train_len = results[0].data["config"]["train_len"]
            xs.append(f * train_len)
            ys.append(iv)
    return Series(label, xs, ys)


def position_series(results: Sequence[Result], label: str, variant: str | None = None) -> Series:
    """Loss against position within the longest window (bin centres), mean over seeds."""
    curves = [r.curve("position", variant) for r in results]
    curves = [c for c in curves if c]
    if not curves:
        return Series(label, [], [])
    xs = [0.5 * (b["start"] + b["end"]) for b in curves[0]]
    ys = [mean_interval([c[i]["nll"] for c in curves if i < len(c) and c[i].get("nll") is not None])
          for i in range(len(xs))]
    return Series(label, xs, ys)


def task_series(results: Sequence[Result], task: str, label: str, variant: str | None = None) -> Series:
    """Accuracy against length, pooled over the task seeds, with the Wilson interval of the pooled counts."""
    pooled: dict[int, list[int]] = {}
    train_len = None
    for r in results:
        train_len = r.data["config"]["train_len"]
        for pt in r.task_curve(task, variant):
            if pt.get("error"):
                k, n = 0, int(r.data["config"]["task_examples"])
            else:
                k, n = int(pt["correct"]), int(pt["n"])
            c = pooled.setdefault(pt["factor"], [0, 0])
            c[0] += k
            c[1] += n
    xs, ys = [], []
    for f in sorted(pooled):
        k, n = pooled[f]
        lo, hi = wilson(k, n)
        xs.append(f * (train_len or 1))
        ys.append(Interval(k / n, lo, hi, n))
    return Series(label, xs, ys)


def task_learned(baselines: Mapping[str, Sequence[Result]], task: str) -> dict[str, Any]:
    """Whether any baseline learned ``task`` in-distribution (accuracy ≥ :data:`LEARNED_AT` at 1×).

    Returns ``{"learned": bool, "best": (method, accuracy) | None}``. A task not learned enters no verdict.
    """
    best: tuple[str, float] | None = None
    for method, results in baselines.items():
        s = task_series(results, task, method, variant="scratch")
        if s.x and s.y[0].n:
            acc = s.y[0].mean
            if best is None or acc > best[1]:
                best = (method, acc)
    return {"learned": bool(best and best[1] >= LEARNED_AT), "best": best}
