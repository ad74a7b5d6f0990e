"""LongRoPE's evolutionary factor search (posenc.pe.longrope_search)."""

from __future__ import annotations

import pytest
import torch

from posenc.pe.longrope_search import search_longrope_factors


def test_search_finds_known_optimum() -> None:
    target = torch.tensor([1.0, 1.5, 2.5, 4.5])
    n_star = 4

    def loss(lam: torch.Tensor, n_hat: int) -> float:
        return float(((lam - target) ** 2).sum()) + (0.5 if n_hat != n_star else 0.0)

    res = search_longrope_factors(loss, head_dim=8, scale=4.0, population=24, generations=40, seed=0)
    assert res.n_hat == n_star
    assert res.loss < 1e-3
    assert all(a <= b for a, b in zip(res.factors, res.factors[1:], strict=False))
    assert all(1.0 <= f <= 5.0 for f in res.factors)
    again = search_longrope_factors(loss, head_dim=8, scale=4.0, population=24, generations=40, seed=0)
    assert again == res  # seeded


def test_search_respects_constraints_on_non_monotone_optimum() -> None:
    target = torch.tensor([3.0, 1.0, 6.0, 2.0])  # not monotone and partly outside [1, 1.25 s]

    def loss(lam: torch.Tensor, n_hat: int) -> float:
        return float(((lam - target) ** 2).sum())

    res = search_longrope_factors(loss, head_dim=8, scale=2.0, population=8, generations=5, seed=1)
    assert all(a <= b for a, b in zip(res.factors, res.factors[1:], strict=False))
    assert all(1.0 <= f <= 2.5 for f in res.factors)


def test_search_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="'scale'"):
        search_longrope_factors(lambda lam, n: 0.0, head_dim=8, scale=0.5)
    with pytest.raises(ValueError, match="'head_dim'"):
        search_longrope_factors(lambda lam, n: 0.0, head_dim=7, scale=2.0)
