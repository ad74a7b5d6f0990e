"""Intervals: Student-t over seeds, paired ratios, and Wilson for accuracies.

* Seeds: with n seeds, the 95% interval of a mean is mean ± t(0.975, n−1)·s/√n. With 3 seeds t = 4.30, so
  intervals are wide; a verdict whose interval straddles its threshold is *inconclusive*, not a coin flip.
* Ratios (a perplexity ratio, a method over its control) are averaged in log space, where they are additive
  and symmetric, and the interval is mapped back. Paired comparisons (the same seed, hence the same base
  weights for a zero-shot method) take the interval of the per-seed log-ratios, which removes the
  between-seed variance the two share.
* Accuracies: the Wilson score interval (Wilson 1927), which stays inside [0, 1] and is sensible at 0 and n.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Interval", "t_quantile", "mean_interval", "log_interval", "wilson", "newcombe"]

# Two-sided 95% Student-t quantiles t(0.975, df) for df = 1..30; beyond that the normal 1.96 is close enough.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def t_quantile(df: int) -> float:
    """t(0.975, df), the factor of a two-sided 95% interval."""
    if df < 1:
        raise ValueError(f"t_quantile: 'df' must be >= 1, got {df}")
    return _T975[df - 1] if df <= len(_T975) else 1.96


@dataclass(frozen=True)
class Interval:
    """A point estimate with its 95% interval over ``n`` values (lo = hi = mean when n = 1)."""

    mean: float
    lo: float
    hi: float
    n: int

    def as_dict(self) -> dict[str, float | int]:
        return {"mean": self.mean, "lo": self.lo, "hi": self.hi, "n": self.n}

    def format(self, digits: int = 3) -> str:
        if self.n < 2:
            return f"{self.mean:.{digits}g} (1 seed)"
        return f"{self.mean:.{digits}g} ± {(self.hi - self.lo) / 2:.{digits - 1}g}"


def mean_interval(values: Sequence[float]) -> Interval:
    """Mean and its t-interval. Infinite or NaN values give an infinite / NaN estimate, never an exception."""
    v = [float(x) for x in values]
    if not v:
        raise ValueError("mean_interval: no values")
    n = len(v)
    m = sum(v) / n
    if n < 2 or not all(math.isfinite(x) for x in v):
        return Interval(m, m, m, n)
    sd = math.sqrt(sum((x - m) ** 2 for x in v) / (n - 1))
    half = t_quantile(n - 1) * sd / math.sqrt(n)
    return Interval(m, m - half, m + half, n)


def log_interval(ratios: Sequence[float]) -> Interval:
    """Geometric mean of positive ratios and its t-interval, computed on log(ratio) and mapped back."""
    r = [float(x) for x in ratios]
    if not r:
        raise ValueError("log_interval: no values")
    if any(not x > 0 or not math.isfinite(x) for x in r):
        bad = [x for x in r if not (x > 0 and math.isfinite(x))]
        m = math.inf if any(x == math.inf for x in bad) else math.nan
        return Interval(m, m, m, len(r))
    li = mean_interval([math.log(x) for x in r])
    return Interval(math.exp(li.mean), math.exp(li.lo), math.exp(li.hi), li.n)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of k successes in n trials (95% by default)."""
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"wilson: need 0 <= k <= n and n > 0, got k={k}, n={n}")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float]:
    """95% interval of p1 − p2 from two Wilson intervals (Newcombe 1998, method 10)."""
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson(k1, n1)
    l2, u2 = wilson(k2, n2)
    d = p1 - p2
    return d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
