"""LongRoPE's evolutionary search for per-pair rescale factors (Ding et al., ICML 2024, Sec. 3.2, Alg. 1).

Kept apart from :mod:`posenc.pe.rope`: the search is a tool run before training (it evaluates a loss many
times), not part of the rotation. Its result feeds ``posenc.build("longrope", long_factors=..., n_hat=...)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from posenc.pe.rope import default_longrope_factors

__all__ = ["LongRoPESearchResult", "search_longrope_factors"]


@dataclass(frozen=True)
class LongRoPESearchResult:
    """Best factors λ (d/2,), leading-position count n̂, their loss, and the number of evaluations."""

    factors: list[float]
    n_hat: int
    loss: float
    evaluations: int


def search_longrope_factors(
    loss_fn: Callable[[Tensor, int], float],
    head_dim: int,
    scale: float,
    *,
    population: int = 32,
    generations: int = 30,
    parents: int = 8,
    mutation_prob: float = 0.3,
    n_hat_choices: Sequence[int] = (0, 1, 2, 4, 8, 12, 16, 20, 24, 28, 32, 64, 128, 256),
    step: float = 0.01,
    seed: int = 0,
    init: Sequence[Sequence[float]] = (),
) -> LongRoPESearchResult:
    """LongRoPE's evolutionary search (Ding et al. 2024, Sec. 3.2, Alg. 1), small and seeded.

    Searches per-pair factors λ_i ∈ [1, 1.25·s] on a grid of ``step`` with the paper's monotone
    non-decreasing constraint (λ_i ≤ λ_{i+1}: lower frequencies are interpolated at least as much), and
    n̂ ∈ ``n_hat_choices`` (default: the paper's set), minimising ``loss_fn(factors, n_hat)`` (e.g. the perplexity of a
    :class:`~posenc.pe.rope.LongRoPE` model at the target length). The initial population holds PI (all s), NTK-aware
    (λ_i = s^(2i/(d−2))), :func:`default_longrope_factors`, any ``init`` candidates and their mutations; each
    generation keeps the ``parents`` best and refills by mutation (Gaussian steps on a random subset of
    pairs, shrinking over generations) and uniform crossover, projecting every child back onto the
    constraints (clip, round to the grid, cumulative max). Candidates are evaluated once (memoised).
    """
    if head_dim <= 0 or head_dim % 2:
        raise ValueError(f"search_longrope_factors: 'head_dim' must be a positive even int, got {head_dim!r}")
    if not scale >= 1:
        raise ValueError(f"search_longrope_factors: 'scale' must be ≥ 1, got {scale!r}")
    if not (population >= 2 and 1 <= parents <= population and generations >= 0 and n_hat_choices):
        raise ValueError("search_longrope_factors: need population ≥ 2, 1 ≤ parents ≤ population, generations ≥ 0 "
                         "and a non-empty n_hat_choices")
    half, lo, hi = head_dim // 2, 1.0, 1.25 * scale
    gen = torch.Generator().manual_seed(seed)
    choices = list(n_hat_choices)

    def project(lam: Tensor) -> Tensor:
        lam = torch.round(lam.clamp(lo, hi) / step) * step
        return torch.cummax(lam, dim=0).values.clamp(lo, hi)

    cache: dict[tuple[tuple[float, ...], int], float] = {}

    def evaluate(lam: Tensor, n_hat: int) -> float:
        key = (tuple(round(v, 6) for v in lam.tolist()), n_hat)
        if key not in cache:
            cache[key] = float(loss_fn(lam.clone(), n_hat))
        return cache[key]

    def rand_choice() -> int:
        return choices[int(torch.randint(len(choices), (1,), generator=gen))]

    def mutate(lam: Tensor, n_hat: int, sigma: float) -> tuple[Tensor, int]:
        mask = torch.rand(half, generator=gen) < mutation_prob
        if not mask.any():
            mask[int(torch.randint(half, (1,), generator=gen))] = True
        lam = lam + mask * torch.randn(half, generator=gen) * sigma
        if torch.rand(1, generator=gen).item() < mutation_prob:
            n_hat = rand_choice()
        return project(lam), n_hat

    i = torch.arange(half, dtype=torch.float32)
    seeds = [torch.full((half,), float(scale)), scale ** (2 * i / max(head_dim - 2, 1)),
             torch.tensor(default_longrope_factors(head_dim, scale))]
    seeds += [torch.as_tensor(list(c), dtype=torch.float32) for c in init]
    if any(s.shape != (half,) for s in seeds):
        raise ValueError(f"search_longrope_factors: every 'init' candidate must have {half} factors")
    pop: list[tuple[Tensor, int]] = [(project(s), choices[0]) for s in seeds]
    sigma0 = 0.25 * (hi - lo) + step
    while len(pop) < population:
        base_lam, _ = pop[len(pop) % len(seeds)]
        pop.append(mutate(base_lam, rand_choice(), sigma0))

    for g in range(generations):
        scored = sorted(pop, key=lambda c: evaluate(*c))
        elite = scored[:parents]
        sigma = sigma0 * (1 - g / max(generations, 1)) + step
        children: list[tuple[Tensor, int]] = []
        while len(elite) + len(children) < population:
            a = elite[int(torch.randint(len(elite), (1,), generator=gen))]
            if torch.rand(1, generator=gen).item() < 0.5 and len(elite) > 1:
                b = elite[int(torch.randint(len(elite), (1,), generator=gen))]
                pick = torch.rand(half, generator=gen) < 0.5
                lam = project(torch.where(pick, a[0], b[0]))
                n_hat = a[1] if torch.rand(1, generator=gen).item() < 0.5 else b[1]
                children.append(mutate(lam, n_hat, sigma) if torch.rand(1, generator=gen).item() < 0.5
                                else (lam, n_hat))
            else:
                children.append(mutate(a[0], a[1], sigma))
        pop = elite + children

    best = min(pop, key=lambda c: evaluate(*c))
    return LongRoPESearchResult([float(v) for v in best[0].tolist()], int(best[1]), evaluate(*best), len(cache))
