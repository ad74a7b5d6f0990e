"""Intervals over seeds and examples."""

from __future__ import annotations

import math

import pytest

from posenc.experiment.stats import Interval, log_interval, mean_interval, newcombe, t_quantile, wilson


def test_t_interval_of_three_seeds_uses_t_with_two_degrees_of_freedom() -> None:
    iv = mean_interval([1.0, 2.0, 3.0])
    assert iv.mean == 2.0 and iv.n == 3
    assert iv.hi - iv.mean == pytest.approx(4.303 * 1.0 / math.sqrt(3), rel=1e-3)


def test_one_value_has_a_degenerate_interval_and_infinities_propagate() -> None:
    assert mean_interval([5.0]) == Interval(5.0, 5.0, 5.0, 1)
    assert math.isinf(mean_interval([1.0, math.inf]).mean)
    assert math.isinf(log_interval([1.2, math.inf]).mean)
    with pytest.raises(ValueError, match="no values"):
        mean_interval([])
    with pytest.raises(ValueError, match="df"):
        t_quantile(0)


def test_log_interval_is_symmetric_in_log_space() -> None:
    iv = log_interval([0.5, 2.0])
    assert iv.mean == pytest.approx(1.0)
    assert iv.lo * iv.hi == pytest.approx(1.0)


def test_wilson_matches_known_values() -> None:
    lo, hi = wilson(0, 200)
    assert lo == 0.0 and hi == pytest.approx(0.01884, abs=2e-4)
    lo, hi = wilson(100, 200)
    assert (lo, hi) == (pytest.approx(0.4314, abs=2e-4), pytest.approx(0.5686, abs=2e-4))
    with pytest.raises(ValueError, match="k=3, n=2"):
        wilson(3, 2)


def test_newcombe_difference_contains_zero_for_equal_proportions() -> None:
    lo, hi = newcombe(50, 100, 50, 100)
    assert lo < 0 < hi and hi == pytest.approx(-lo)
    lo, hi = newcombe(95, 100, 20, 100)
    assert 0.6 < lo < 0.75 < hi < 0.85
