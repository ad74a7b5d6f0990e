"""RoPE scalings: frequency functions over RoPE, applied to a model trained with plain RoPE.

Like ``transformers.modeling_rope_utils``, every scaling is a plain function in
:data:`ROPE_SCALING_FUNCTIONS` that returns ``(inv_freq, attention_factor)``: the frequencies θ' (d/2,)
float32 and the factor that multiplies cos and sin (so logits scale by its square; applied once, never also
on the logits). Each function takes the shared hyperparameters ``head_dim`` d, ``base`` b, ``train_len``
L (the original context), ``scale`` s = L'/L ≥ 1, the current length ``seq_len`` l (dynamic methods only)
and its own parameters. One small :class:`~posenc.pe.rotary.RoPE` subclass per card id overrides
``inv_freq`` and ``attention_scaling``; the rotation itself lives only in ``RoPE.rotate`` (consecutive
pairs). Where the paper's equation and its authors' code differ, the code is implemented and the card says
so.

Symbols: θ_i = b^(−2i/d) for pair i = 0..d/2−1, λ_i = 2π/θ_i its wavelength, r_i = L/λ_i the number of
rotations it completes within L.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from posenc.pe.base import register
from posenc.pe.rotary import RoPE, default_inv_freq, rope_angles, rotate_pairs

__all__ = [
    "ROPE_SCALING_FUNCTIONS",
    "pi_scaling",
    "ntk_aware_scaling",
    "dynamic_ntk_scaling",
    "ntk_by_parts_scaling",
    "yarn_scaling",
    "truncated_basis_scaling",
    "llama3_scaling",
    "longrope_scaling",
    "longrope2_scaling",
    "yarn_correction_range",
    "critical_dimension",
    "extrapolation_limit",
    "critical_small_base",
    "default_longrope_factors",
    "search_longrope_factors",
    "LongRoPESearchResult",
]

ScalingResult = tuple[Tensor, float]
Device = torch.device | str | None


# ====================================================================== the frequency functions
def pi_scaling(*, head_dim: int, base: float, train_len: int, scale: float, seq_len: int | None = None,
               device: Device = None) -> ScalingResult:
    """Position Interpolation (Chen et al. 2023, arXiv 2306.15595): f'(x, m) = f(x, m·L/L'), i.e. θ' = θ/s.

    Identical to HF ``rope_type="linear"``. No attention factor.
    """
    return default_inv_freq(head_dim, base, device) / scale, 1.0


def ntk_aware_scaling(*, head_dim: int, base: float, train_len: int, scale: float, seq_len: int | None = None,
                      device: Device = None) -> ScalingResult:
    """NTK-aware scaled RoPE (bloc97 2023; YaRN Definition 1, Eq. 22): b' = b·s^(d/(d−2)).

    The highest frequency (i = 0) is unchanged and the lowest (i = d/2 − 1) is divided by exactly s.
    """
    return default_inv_freq(head_dim, base * scale ** (head_dim / (head_dim - 2)), device), 1.0


def dynamic_ntk_scaling(*, head_dim: int, base: float, train_len: int, scale: float, seq_len: int | None = None,
                        device: Device = None) -> ScalingResult:
    """Dynamic NTK (emozilla 2023), the formula of HF ``rope_type="dynamic"``.

    For the current length l > L: b' = b·((s·l/L) − (s − 1))^(d/(d−2)); for l ≤ L plain RoPE. The survey
    (Eq. 23) and YaRN instead use the NTK-aware base with s = max(1, l/L); both agree only at s = 1.
    """
    l = max(int(seq_len or 0), train_len)
    new_base = base * ((scale * l / train_len) - (scale - 1)) ** (head_dim / (head_dim - 2))
    return default_inv_freq(head_dim, new_base, device), 1.0


def yarn_correction_range(head_dim: int, base: float, train_len: int, beta_fast: float, beta_slow: float
                          ) -> tuple[float, float]:
    """YaRN's correction dims: the (fractional) pair index that completes n rotations within L is
    d·ln(L/(2πn))/(2·ln b); low = ⌊dim(beta_fast)⌋, high = ⌈dim(beta_slow)⌉, clamped to [0, d − 1] (authors' code).
    """

    def dim_of(n_rot: float) -> float:
        return head_dim * math.log(train_len / (n_rot * 2 * math.pi)) / (2 * math.log(base))

    low, high = math.floor(dim_of(beta_fast)), math.ceil(dim_of(beta_slow))
    return max(low, 0), min(high, head_dim - 1)


def ntk_by_parts_scaling(*, head_dim: int, base: float, train_len: int, scale: float, seq_len: int | None = None,
                         device: Device = None, beta_fast: float = 32.0, beta_slow: float = 1.0) -> ScalingResult:
    """NTK-by-parts (bloc97 2023; YaRN Definition 2), with the ramp of the authors' code.

    h(θ_i) = (1 − γ_i)·θ_i/s + γ_i·θ_i. The paper's γ is a ramp in r = L/λ (0 below α = beta_slow, 1 above
    β = beta_fast); the code, copied by every framework, ramps linearly in the pair *index* between the
    floor/ceil correction dims (:func:`yarn_correction_range`): γ_i = 1 − clamp((i − low)/(high − low), 0, 1).
    Pairs with r > β are untouched, pairs with r < α are interpolated by s. No attention factor.
    """
    inv = default_inv_freq(head_dim, base, device)
    low, high = yarn_correction_range(head_dim, base, train_len, beta_fast, beta_slow)
    if low == high:
        high += 0.001  # the authors' guard against a zero-width ramp
    idx = torch.arange(head_dim // 2, dtype=torch.float32, device=inv.device)
    ramp = ((idx - low) / (high - low)).clamp(0.0, 1.0)  # 0: keep (extrapolate), 1: interpolate
    return inv / scale * ramp + inv * (1.0 - ramp), 1.0


def yarn_scaling(*, head_dim: int, base: float, train_len: int, scale: float, seq_len: int | None = None,
                 device: Device = None, beta_fast: float = 32.0, beta_slow: float = 1.0,
                 attention_factor: float | None = None) -> ScalingResult:
    """YaRN (Peng et al., ICLR 2024, arXiv 2309.00071): NTK-by-parts frequencies plus a temperature.

    softmax(q·k/(t·√d)) with √(1/t) = 0.1·ln s + 1 (Eq. 22 of the paper; HF ``get_mscale`` with mscale = 1).
    The factor √(1/t) is returned as the attention factor, which multiplies cos and sin, so logits scale by
    (0.1·ln s + 1)²; it is applied once. ``attention_factor`` overrides it (1 gives NTK-by-parts).
    """
    inv, _ = ntk_by_parts_scaling(head_dim=head_dim, base=base, train_len=train_len, scale=scale,
                                  device=device, beta_fast=beta_fast, beta_slow=beta_slow)
    if attention_factor is None:
        attention_factor = 1.0 if scale <= 1 else 0.1 * math.log(scale) + 1.0
    return inv, float(attention_factor)


def truncated_basis_scaling(*, head_dim: int, base: float, train_len: int, scale: float,
                            seq_len: int | None = None, device: Device = None, a_cut: float | None = None,
                            b_cut: float | None = None, rho: float | None = None) -> ScalingResult:
    """Truncated basis (Giraffe; Pal et al. 2023, arXiv 2308.10882, Eq. 24).

    θ* = θ if θ ≥ b_cut; ρ if a_cut < θ < b_cut; 0 if θ ≤ a_cut, applied after linear scaling by s (the
    authors' code divides by the scale first; s = 1 gives the pure truncation). Defaults follow the authors'
    code (``truncate_frequency`` in abacusai/Long-Context): with a wavelength cut T, b_cut = 2π/T,
    a_cut = b_cut/8 and ρ = b_cut/16; here T defaults to the training length L (pairs that complete a full
    period within L are kept).
    """
    b_cut = 2 * math.pi / train_len if b_cut is None else b_cut
    a_cut = b_cut / 8 if a_cut is None else a_cut
    rho = b_cut / 16 if rho is None else rho
    inv = default_inv_freq(head_dim, base, device) / scale
    out = torch.where(inv < b_cut, torch.full_like(inv, rho), inv)
    return torch.where(inv <= a_cut, torch.zeros_like(inv), out), 1.0


def llama3_scaling(*, head_dim: int, base: float, train_len: int, scale: float, seq_len: int | None = None,
                   device: Device = None, low_freq_factor: float = 1.0, high_freq_factor: float = 4.0
                   ) -> ScalingResult:
    """Llama 3.1 RoPE scaling (Meta 2024; HF ``rope_type="llama3"``), with L = ``train_len``.

    λ < L/high_freq_factor: keep θ; λ > L/low_freq_factor: θ/s; in between, with
    smooth = (L/λ − low_freq_factor)/(high_freq_factor − low_freq_factor): (1 − smooth)·θ/s + smooth·θ.
    """
    inv = default_inv_freq(head_dim, base, device)
    wavelen = 2 * math.pi / inv
    low_wl, high_wl = train_len / low_freq_factor, train_len / high_freq_factor
    out = torch.where(wavelen > low_wl, inv / scale, inv)
    smooth = (train_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    blended = (1 - smooth) * out / scale + smooth * out
    medium = (wavelen >= high_wl) & (wavelen <= low_wl)
    return torch.where(medium, blended, out), 1.0


def _longrope_attention(scale: float, train_len: int) -> float:
    """LongRoPE's attention factor √(1 + ln s/ln L) (1 for s ≤ 1), as in HF ``longrope``."""
    return 1.0 if scale <= 1 else math.sqrt(1 + math.log(scale) / math.log(train_len))


def longrope_scaling(*, head_dim: int, base: float, train_len: int, scale: float, seq_len: int | None = None,
                     device: Device = None, long_factors: Sequence[float] | None = None,
                     short_factors: Sequence[float] | None = None, attention_factor: float | None = None
                     ) -> ScalingResult:
    """LongRoPE (Ding et al., ICML 2024, arXiv 2402.13753): θ'_i = θ_i/λ_i per pair.

    The long list applies when the current length l > L, the short list otherwise (HF ``longrope``). The
    attention factor is √(1 + ln s/ln L) (``attention_factor`` overrides it), applied whatever the length, as
    in HF. Defaults: short factors all 1 (plain RoPE), long factors :func:`default_longrope_factors`.
    """
    half = head_dim // 2
    if seq_len is not None and seq_len > train_len:
        lam = long_factors if long_factors is not None else default_longrope_factors(head_dim, scale)
    else:
        lam = short_factors if short_factors is not None else [1.0] * half
    lam_t = torch.as_tensor(lam, dtype=torch.float32, device=device)
    attn = _longrope_attention(scale, train_len) if attention_factor is None else float(attention_factor)
    return default_inv_freq(head_dim, base, device) / lam_t, attn


def longrope2_scaling(*, head_dim: int, base: float, train_len: int, scale: float, seq_len: int | None = None,
                      device: Device = None, critical_pair: int | None = None,
                      critical_factor: float | None = None) -> ScalingResult:
    """LongRoPE2 frequency rule (Shang et al., ICML 2025, arXiv 2502.20082), simplified.

    LongRoPE2 holds that RoPE pairs beyond a *critical dimension* (those whose period exceeds L, see
    :func:`critical_dimension`) are under-trained, so they must be scaled by at least s, and it searches the
    critical pair c and its factor λ_c (≥ s) with a needle-driven perplexity. Here: λ_i = λ_c for i ≥ c and an
    NTK-shaped (geometric) ramp λ_i = λ_c^(i/c) below c. Defaults: c = the theoretical critical pair
    ⌈(d/2)·log_b(L/2π)⌉, λ_c = s; both can be searched with :func:`search_longrope_factors`. Mixed context
    window: for l ≤ L the original RoPE is used (factors 1, attention factor 1); for l > L the attention factor
    is LongRoPE's √(1 + ln s/ln L). Simplified: no needle data or search inside, and no per-pair search below c.
    """
    half = head_dim // 2
    inv = default_inv_freq(head_dim, base, device)
    if seq_len is None or seq_len <= train_len:
        return inv, 1.0
    c = critical_dimension(head_dim, base, train_len) // 2 if critical_pair is None else critical_pair
    c = min(max(int(c), 0), half)
    lam_c = scale if critical_factor is None else critical_factor
    i = torch.arange(half, dtype=torch.float32, device=inv.device)
    ramp = lam_c ** (i / c) if c > 0 else torch.full_like(i, lam_c)
    lam = torch.where(i >= c, torch.full_like(i, lam_c), ramp)
    return inv / lam, _longrope_attention(scale, train_len)


#: Registry of the frequency functions, keyed like the card ids (``default`` = plain RoPE).
ROPE_SCALING_FUNCTIONS: dict[str, Callable[..., ScalingResult]] = {
    "default": lambda *, head_dim, base, train_len, scale=1.0, seq_len=None, device=None: (
        default_inv_freq(head_dim, base, device), 1.0),
    "pi": pi_scaling,
    "ntk_aware": ntk_aware_scaling,
    "dynamic_ntk": dynamic_ntk_scaling,
    "ntk_by_parts": ntk_by_parts_scaling,
    "yarn": yarn_scaling,
    "truncated_basis": truncated_basis_scaling,
    "llama3_scaling": llama3_scaling,
    "longrope": longrope_scaling,
    "longrope2": longrope2_scaling,
}


# ====================================================================== helpers from the papers
def critical_dimension(head_dim: int, base: float, train_len: int) -> int:
    """Critical dimension for extrapolation (Liu et al., ICLR 2024, arXiv 2310.05209, Eq. 7):
    d_extra = 2·⌈(d/2)·log_b(L/2π)⌉ dims (clamped to [0, d]).

    Pairs below d_extra/2 complete at least one full period within the tuning length L and are fully trained;
    the others see only part of a period, and their first unseen phase sets the extrapolation limit.
    """
    val = 2 * math.ceil((head_dim / 2) * math.log(train_len / (2 * math.pi)) / math.log(base))
    return min(max(val, 0), head_dim)


def extrapolation_limit(head_dim: int, base: float, train_len: int) -> float:
    """The scaling law's extrapolation limit for a base ≥ the critical one (Liu et al. 2024, Eq. 8):
    T_extra = 2π·b^(d_extra/d), the period of the first pair beyond the critical dimension.
    Returns ``inf`` when every pair completes a period within L (the small-base regime).
    """
    d_extra = critical_dimension(head_dim, base, train_len)
    if d_extra >= head_dim:
        return math.inf
    return 2 * math.pi * base ** (d_extra / head_dim)


def critical_small_base(head_dim: int, train_len: int) -> float:
    """The largest base whose every pair completes a full period within L: (L/2π)^(d/(d−2)).

    Liu et al. (2024) find that tuning with a base at or below it (their example: 500 for LLaMA 2,
    d = 128, L = 4096, where this bound is ≈ 722) removes the extrapolation limit of the larger-base regime.
    """
    return (train_len / (2 * math.pi)) ** (head_dim / (head_dim - 2))


def default_longrope_factors(head_dim: int, scale: float) -> list[float]:
    """Default long factors when none are given: the geometric ramp λ_i = s^(i/(d/2 − 1)) from 1 to s
    (NTK-shaped: high frequencies kept, the lowest one interpolated by s). A stand-in for searched factors."""
    half = head_dim // 2
    if half == 1:
        return [float(scale)]
    return [float(scale ** (i / (half - 1))) for i in range(half)]


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
    :class:`LongRoPE` model at the target length). The initial population holds PI (all s), NTK-aware
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


# ====================================================================== the registered PEs
def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class ScaledRoPE(RoPE):
    """Shared machinery: a RoPE whose frequencies and attention factor come from a scaling function.

    Hyperparameters: ``base`` b and ``scale`` s ≥ 1 (the extension factor L'/L). Subclasses set
    ``scaling_fn`` and pass their own parameters through :meth:`method_params`. Not registered itself.
    """

    id = "scaled_rope"  # never registered; subclasses set the card id
    applies_to = "rope"
    relative = True
    scaling_fn: ClassVar[Callable[..., ScalingResult]]

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, base: float = 10000.0,
                 scale: float = 4.0) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len, base=base)
        self._check("scale", scale, _is_num(scale) and scale >= 1, "a number ≥ 1")
        self.scale = float(scale)

    def method_params(self) -> dict[str, Any]:
        return {}

    def scaled(self, seq_len: int, device: Device = None) -> ScalingResult:
        fn = type(self).scaling_fn
        return fn(head_dim=self.head_dim, base=self.base, train_len=self.train_len, scale=self.scale,
                  seq_len=seq_len, device=device, **self.method_params())

    def inv_freq(self, seq_len: int, device: Device = None) -> Tensor:
        return self.scaled(seq_len, device)[0]

    def attention_scaling(self, seq_len: int) -> float:
        return self.scaled(seq_len, "cpu")[1]


@register
class PI(ScaledRoPE):
    """Position Interpolation (Chen et al. 2023): θ' = θ/s (:func:`pi_scaling`)."""

    id = "pi"
    scaling_fn = staticmethod(pi_scaling)


@register
class NTKAware(ScaledRoPE):
    """NTK-aware scaled RoPE: b' = b·s^(d/(d−2)) (:func:`ntk_aware_scaling`)."""

    id = "ntk_aware"
    scaling_fn = staticmethod(ntk_aware_scaling)


@register
class DynamicNTK(ScaledRoPE):
    """Dynamic NTK with HF's formula b·((s·l/L) − (s − 1))^(d/(d−2)) for l > L (:func:`dynamic_ntk_scaling`).

    The current length l is the largest position + 1, so shifting q and k together changes the frequencies
    once l > L (``relative = False``). With a KV cache, keys must be cached before rotation.
    """

    id = "dynamic_ntk"
    relative = False
    dynamic = True
    scaling_fn = staticmethod(dynamic_ntk_scaling)


class _ByParts(ScaledRoPE):
    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, base: float = 10000.0,
                 scale: float = 4.0, beta_fast: float = 32.0, beta_slow: float = 1.0) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len, base=base, scale=scale)
        self._check("beta_fast", beta_fast, _is_num(beta_fast) and beta_fast > 0, "a number > 0")
        self._check("beta_slow", beta_slow, _is_num(beta_slow) and 0 < beta_slow < beta_fast,
                    "a number in (0, beta_fast)")
        self.beta_fast, self.beta_slow = float(beta_fast), float(beta_slow)

    def method_params(self) -> dict[str, Any]:
        return {"beta_fast": self.beta_fast, "beta_slow": self.beta_slow}


@register
class NTKByParts(_ByParts):
    """NTK-by-parts (YaRN Definition 2) with the authors' index ramp, beta_fast 32, beta_slow 1, no attention
    factor (:func:`ntk_by_parts_scaling`)."""

    id = "ntk_by_parts"
    scaling_fn = staticmethod(ntk_by_parts_scaling)


@register
class YaRN(_ByParts):
    """YaRN: NTK-by-parts frequencies, and cos/sin × (0.1·ln s + 1), so logits × (0.1·ln s + 1)², applied
    once (:func:`yarn_scaling`; HF ``yarn`` with mscale = 1)."""

    id = "yarn"
    scaling_fn = staticmethod(yarn_scaling)


@register
class TruncatedBasis(ScaledRoPE):
    """Giraffe's truncated basis (Pal et al. 2023, Eq. 24; :func:`truncated_basis_scaling`).

    ``scale`` defaults to 1 (pure truncation, fine-tuned at the target length); ``b_cut``, ``a_cut``, ``rho``
    default to 2π/L, b_cut/8 and b_cut/16 (the authors' code with its wavelength cut set to L).
    """

    id = "truncated_basis"

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, base: float = 10000.0,
                 scale: float = 1.0, a_cut: float | None = None, b_cut: float | None = None,
                 rho: float | None = None) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len, base=base, scale=scale)
        b = 2 * math.pi / train_len if b_cut is None else b_cut
        self._check("b_cut", b_cut, _is_num(b) and b > 0, "None or a number > 0")
        a = b / 8 if a_cut is None else a_cut
        self._check("a_cut", a_cut, _is_num(a) and 0 <= a < b, "None or a number in [0, b_cut)")
        r = b / 16 if rho is None else rho
        self._check("rho", rho, _is_num(r) and r >= 0, "None or a number ≥ 0")
        self.a_cut, self.b_cut, self.rho = float(a), float(b), float(r)

    def method_params(self) -> dict[str, Any]:
        return {"a_cut": self.a_cut, "b_cut": self.b_cut, "rho": self.rho}

    scaling_fn = staticmethod(truncated_basis_scaling)


@register
class Llama3Scaling(ScaledRoPE):
    """Llama 3.1 wavelength-band scaling (:func:`llama3_scaling`), L = ``train_len``; factor = ``scale``
    (default 8), low_freq_factor 1, high_freq_factor 4, as in Llama 3.1."""

    id = "llama3_scaling"
    scaling_fn = staticmethod(llama3_scaling)

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, base: float = 10000.0,
                 scale: float = 8.0, low_freq_factor: float = 1.0, high_freq_factor: float = 4.0) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len, base=base, scale=scale)
        self._check("low_freq_factor", low_freq_factor, _is_num(low_freq_factor) and low_freq_factor > 0, "> 0")
        self._check("high_freq_factor", high_freq_factor,
                    _is_num(high_freq_factor) and high_freq_factor > low_freq_factor, "> low_freq_factor")
        self.low_freq_factor, self.high_freq_factor = float(low_freq_factor), float(high_freq_factor)

    def method_params(self) -> dict[str, Any]:
        return {"low_freq_factor": self.low_freq_factor, "high_freq_factor": self.high_freq_factor}


@register
class LongRoPE(ScaledRoPE):
    """LongRoPE (Ding et al., ICML 2024): per-pair factors and n̂ non-interpolated leading positions.

    Angle of pair i at position n: n·θ_i if n < n̂, else n·θ_i/λ_i (the paper's I = 1 or 1/λ_i); λ is the
    long list when the current length l > L, the short list otherwise; cos and sin × √(1 + ln s/ln L)
    (HF ``longrope``; ``attention_factor`` overrides it). Defaults: short factors all 1, long factors the
    geometric ramp from 1 to s (:func:`default_longrope_factors`) in place of searched ones — search with
    :func:`search_longrope_factors`. ``relative = False`` (the list switches at L, and n̂ > 0 is absolute).
    """

    id = "longrope"
    relative = False
    scaling_fn = staticmethod(longrope_scaling)

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, base: float = 10000.0,
                 scale: float = 4.0, long_factors: Sequence[float] | None = None,
                 short_factors: Sequence[float] | None = None, n_hat: int = 0,
                 attention_factor: float | None = None) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len, base=base, scale=scale)
        half = head_dim // 2
        for name, lst in (("long_factors", long_factors), ("short_factors", short_factors)):
            ok = lst is None or (len(lst) == half and all(_is_num(v) and v > 0 for v in lst))
            self._check(name, lst, ok, f"None or {half} numbers > 0 (one per rotary pair)")
        self._check("n_hat", n_hat, isinstance(n_hat, int) and not isinstance(n_hat, bool) and n_hat >= 0, "an int ≥ 0")
        self._check("attention_factor", attention_factor,
                    attention_factor is None or (_is_num(attention_factor) and attention_factor > 0), "None or > 0")
        self.long_factors = None if long_factors is None else [float(v) for v in long_factors]
        self.short_factors = None if short_factors is None else [float(v) for v in short_factors]
        self.n_hat = n_hat
        self.attention_factor = attention_factor

    def method_params(self) -> dict[str, Any]:
        return {"long_factors": self.long_factors, "short_factors": self.short_factors,
                "attention_factor": self.attention_factor}

    def cos_sin(self, pos: Tensor, seq_len: int) -> tuple[Tensor, Tensor]:
        if self.n_hat == 0:
            return super().cos_sin(pos, seq_len)

        def make() -> tuple[Tensor, Tensor]:
            scaled = rope_angles(pos, self.inv_freq(seq_len, pos.device))
            plain = rope_angles(pos, default_inv_freq(self.head_dim, self.base, pos.device))
            ang = torch.where((pos < self.n_hat)[:, None], plain, scaled)
            a = self.attention_scaling(seq_len)
            return ang.cos() * a, ang.sin() * a

        return self.shared(("cos_sin", id(pos), seq_len), make)


@register
class LongRoPE2(ScaledRoPE):
    """LongRoPE2 (Shang et al., ICML 2025), simplified frequency rule (:func:`longrope2_scaling`).

    ``critical_pair`` c (None: the theoretical one) and ``critical_factor`` λ_c (None: s). Original RoPE for
    l ≤ L (mixed context window), rescaled RoPE and √(1 + ln s/ln L) on cos/sin for l > L.
    """

    id = "longrope2"
    relative = False
    scaling_fn = staticmethod(longrope2_scaling)

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, base: float = 10000.0,
                 scale: float = 4.0, critical_pair: int | None = None, critical_factor: float | None = None) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len, base=base, scale=scale)
        ok = critical_pair is None or (isinstance(critical_pair, int) and 0 <= critical_pair <= head_dim // 2)
        self._check("critical_pair", critical_pair, ok, f"None or an int in [0, {head_dim // 2}]")
        self._check("critical_factor", critical_factor,
                    critical_factor is None or (_is_num(critical_factor) and critical_factor >= 1), "None or ≥ 1")
        self.critical_pair, self.critical_factor = critical_pair, critical_factor

    def method_params(self) -> dict[str, Any]:
        return {"critical_pair": self.critical_pair, "critical_factor": self.critical_factor}


class _BaseChange(RoPE):
    """RoPE with another base, fine-tuned from a RoPE model (applies_to = "rope")."""

    id = "base_change"  # never registered
    applies_to = "rope"
    relative = True


@register
class ABF(_BaseChange):
    """Adjusted Base Frequency (Xiong et al. 2023, "Effective Long-Context Scaling of Foundation Models",
    arXiv 2309.16039): b = 500,000 instead of 10,000, with continued training at the longer length."""

    id = "abf"

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, base: float = 500000.0) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len, base=base)


@register
class CodeLlamaBase(_BaseChange):
    """Code Llama's base reset (Rozière et al. 2023, arXiv 2308.12950): b = 10^6 for long-context
    fine-tuning at 16,384 tokens."""

    id = "code_llama_base"

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, base: float = 1e6) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len, base=base)


@register
class RoPEBaseScalingLaws(_BaseChange):
    """Scaling Laws of RoPE-based Extrapolation (Liu et al., ICLR 2024, arXiv 2310.05209).

    Fine-tuning at the training length with a *smaller* or a *larger* base both improve extrapolation. For a
    larger base the extrapolation limit is 2π·b^(d_extra/d) with the critical dimension
    d_extra = 2⌈(d/2)·log_b(L/2π)⌉ (:func:`critical_dimension`, :func:`extrapolation_limit`). For a base small
    enough that every pair completes a period within L (:func:`critical_small_base`), there is no such limit;
    the paper's example is b = 500 for LLaMA 2 at 4K. Default ``base=None``: that critical small base for this
    model's d and L, i.e. the paper's small-base regime transferred to our scale (for d = 128, L = 4096 it is
    ≈ 722, above the paper's 500). Pass a number for any other base (e.g. 1e6 for the large-base regime).
    """

    id = "rope_base_scaling_laws"

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, base: float | None = None) -> None:
        chosen = critical_small_base(head_dim, train_len) if base is None and head_dim > 2 else base
        if chosen is not None and _is_num(chosen) and chosen <= 1:
            raise ValueError(f"{self.id}: hyperparameter 'base' defaults to the critical small base "
                             f"(L/2π)^(d/(d−2)) = {chosen:.3g} ≤ 1 for train_len={train_len}; pass a base > 1")
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len,
                         base=chosen if chosen is not None else 0.0)


@register
class EntropyABF(_BaseChange):
    """Entropy-aware ABF (Zhang, Li, Liu 2024, "Extending LLMs' Context Window with 100 Samples",
    arXiv 2401.07004), following the authors' code (GAIR-NLP/Entropy-ABF, ``patch/EABF.py``).

    ABF base 500,000 plus a query scaling that keeps attention entropy stable: after rotation, the query at
    position n is multiplied by max(1, ln(n + 1)/ln L) (the code uses L = 4096, LLaMA 2's pre-training
    length; here L = ``train_len``), so logits grow like log_L of the position beyond L. The first
    ``unscaled_layers`` layers (2 in the code) are left unscaled, so the rotation depends on the layer
    (``bias_per_layer = True``) and on absolute query positions (``relative = False``).
    """

    id = "entropy_abf"
    relative = False
    bias_per_layer = True

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, base: float = 500000.0,
                 unscaled_layers: int = 2) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len, base=base)
        ok = isinstance(unscaled_layers, int) and not isinstance(unscaled_layers, bool) and unscaled_layers >= 0
        self._check("unscaled_layers", unscaled_layers, ok, "an int ≥ 0")
        self._check("train_len", train_len, train_len >= 2, "≥ 2 (its log is the scaling's base)")
        self.unscaled_layers = unscaled_layers

    def query_scale(self, q_pos: Tensor) -> Tensor:
        """max(1, ln(n + 1)/ln L) per query position, (T, 1) float32."""
        s = torch.log(q_pos.to(torch.float32) + 1) / math.log(self.train_len)
        return s.clamp_min(1.0)[:, None]

    def rotate(self, q: Tensor, k: Tensor, q_pos: Tensor, k_pos: Tensor, *, layer: int = 0) -> tuple[Tensor, Tensor]:
        q, k = super().rotate(q, k, q_pos, k_pos, layer=layer)
        if layer < self.unscaled_layers:
            return q, k
        s = self.shared(("eabf_scale", id(q_pos)), lambda: self.query_scale(q_pos))
        return (q.float() * s).to(q.dtype), k


@register
class CLEX(ScaledRoPE):
    """CLEX, Continuous Length EXtrapolation (Chen et al., ICLR 2024, arXiv 2310.16450), small version.

    The log-frequencies z(t) = ln θ(t) at length-scaling factor t ≥ 1 follow a learned ODE,
    dz/dt = ξ(t) + g_φ(z, ln t), z(1) = ln θ. ξ_i(t) = −(2i/(d−2))/t is the derivative of NTK-aware scaling
    (whose solution is b' = b·t^(d/(d−2))), and g_φ is a small MLP (``hidden`` units, tanh) whose output layer
    starts at zero, so the untrained ODE *is* NTK-aware scaling. It is integrated with ``ode_steps`` fixed
    RK4 steps from 1 to t. Training (``self.training``): t is drawn uniformly from [1, ``scale``] once per
    forward (CLEX's sampled scaling; positions are left as they are here, a simplification). Evaluation:
    t = max(1, l/L) for the current length l (continuous, not capped at ``scale``), so l ≤ L is plain RoPE.
    """

    id = "clex"
    dynamic = True
    relative = False
    learnable: ClassVar[bool] = True

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, base: float = 10000.0,
                 scale: float = 4.0, hidden: int = 32, ode_steps: int = 8) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len, base=base, scale=scale)
        self._check("head_dim", head_dim, head_dim >= 4, "≥ 4 for CLEX")
        self._check("hidden", hidden, isinstance(hidden, int) and hidden > 0, "a positive int")
        self._check("ode_steps", ode_steps, isinstance(ode_steps, int) and ode_steps > 0, "a positive int")
        half = head_dim // 2
        self.ode_steps = ode_steps
        self.net = nn.Sequential(nn.Linear(half + 1, hidden), nn.Tanh(), nn.Linear(hidden, half))
        nn.init.zeros_(self.net[2].weight)
        nn.init.zeros_(self.net[2].bias)
        i = torch.arange(half, dtype=torch.float32)
        self.register_buffer("xi_coef", -2 * i / (head_dim - 2), persistent=False)

    def field(self, z: Tensor, t: float) -> Tensor:
        lt = torch.full((1,), math.log(t), dtype=z.dtype, device=z.device)
        return self.xi_coef.to(z.device) / t + self.net(torch.cat([z, lt]))

    def log_freq(self, t: float, device: Device = None) -> Tensor:
        """z(t) by fixed-step RK4 (exactly ln θ at t = 1)."""
        z = torch.log(default_inv_freq(self.head_dim, self.base, device))
        if t <= 1.0:
            return z
        h, tt = (t - 1.0) / self.ode_steps, 1.0
        for _ in range(self.ode_steps):
            k1 = self.field(z, tt)
            k2 = self.field(z + h / 2 * k1, tt + h / 2)
            k3 = self.field(z + h / 2 * k2, tt + h / 2)
            k4 = self.field(z + h * k3, tt + h)
            z, tt = z + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4), tt + h
        return z

    def current_t(self, seq_len: int) -> float:
        if self.training:
            return 1.0 + (self.scale - 1.0) * float(torch.rand(()))
        return max(1.0, seq_len / self.train_len)

    def inv_freq(self, seq_len: int, device: Device = None) -> Tensor:
        return torch.exp(self.log_freq(self.current_t(seq_len), device))

    def attention_scaling(self, seq_len: int) -> float:
        return 1.0

    def rotate(self, q: Tensor, k: Tensor, q_pos: Tensor, k_pos: Tensor, *, layer: int = 0) -> tuple[Tensor, Tensor]:
        # One t (hence one set of frequencies) per forward, shared by q, k and every layer.
        seq_len = self.shared(("len", id(q_pos), id(k_pos)), lambda: self.current_length(q_pos, k_pos))
        inv = self.shared(("clex_inv", seq_len, self.training), lambda: self.inv_freq(seq_len, q.device))

        def cs(pos: Tensor) -> tuple[Tensor, Tensor]:
            ang = rope_angles(pos, inv)
            return ang.cos(), ang.sin()

        cq, sq = self.shared(("clex_cs", id(q_pos), seq_len), lambda: cs(q_pos))
        ck, sk = (cq, sq) if k_pos is q_pos else self.shared(("clex_cs", id(k_pos), seq_len), lambda: cs(k_pos))
        return rotate_pairs(q, cq, sq), rotate_pairs(k, ck, sk)
