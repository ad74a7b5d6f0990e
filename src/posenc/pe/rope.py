"""RoPE: the one rotation, and the registry of RoPE scalings (frequency functions) dispatched through it.

RoPE (Su et al., RoFormer, arXiv 2104.09864, Eq. 12–14): q and k at position m are rotated by the
block-diagonal R_{Θ,m}, with 2×2 blocks rotating the *consecutive* pair (2i, 2i+1) by m·θ_i and
θ_i = b^(−2i/d). Some libraries rotate the half-split pair (i, i + d/2) ("rotate-half"); both give
identical logits after a fixed permutation of head dimensions, which the tests check. Angles are computed
in float32, also under bf16 autocast, and cast to the input dtype only when applied.

RoPE scalings follow ``transformers.modeling_rope_utils``: each is a plain function in
:data:`ROPE_SCALINGS`, registered with ``@rope_scaling("<card id>", ...)``, that returns
``(inv_freq, attention_factor)``: the frequencies θ' (d/2,) float32 and the factor that multiplies cos and
sin (so logits scale by its square; applied once, never also on the logits). Each takes the shared
``head_dim`` d, ``base`` b, ``train_len`` L (the original context), the current length ``seq_len`` l
(dynamic methods only) and its own keyword hyperparameters, ``scale`` s = L'/L ≥ 1 among them (its default,
per method, is in the signature). Every scaling id is built as :class:`ScaledRoPE` with that scaling type;
subclasses exist only where the rotation itself differs (:class:`LongRoPE`'s n̂ leading positions here;
CLEX and Entropy-ABF in :mod:`posenc.pe.rope_extensions`). Where a paper's equation and its authors' code
differ, the code is implemented and the card says so.

From ``posenc.build("yarn", scale=8)`` to the rotation:

1. ``base.build`` → ``base.spec("yarn").build``: checks the hyperparameter names;
2. the spec's factory is ``ScaledRoPE(scaling="yarn", scale=8)`` (registered by ``@rope_scaling("yarn")``);
3. per forward, the model calls ``pe.context(pos)`` → :meth:`ScaledRoPE.prepare` →
   :meth:`ScaledRoPE.scaled` → ``ROPE_SCALINGS["yarn"].fn`` = :func:`yarn_scaling` → (inv_freq, factor);
4. :meth:`RoPE.put_cos_sin` stores cos/sin (× factor) in the context, once for all layers;
5. in every layer :meth:`RoPE.rotate` → :func:`rotate_pairs`.

Symbols: θ_i = b^(−2i/d) for pair i = 0..d/2−1, λ_i = 2π/θ_i its wavelength, r_i = L/λ_i the number of
rotations it completes within L.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

import torch
from torch import Tensor

from posenc.pe.base import (
    MethodSpec,
    PositionalEncoding,
    PositionContext,
    ScalePolicy,
    class_hyperparameters,
    register,
    register_spec,
)

__all__ = [
    "default_inv_freq", "rope_angles", "rotate_pairs", "apply_rotary", "RoPE", "ScaledRoPE", "LongRoPE",
    "ROPE_SCALINGS", "RopeScaling", "rope_scaling", "pi_scaling", "ntk_aware_scaling", "dynamic_ntk_scaling",
    "ntk_by_parts_scaling", "yarn_scaling", "truncated_basis_scaling", "llama3_scaling", "longrope_scaling",
    "longrope2_scaling", "yarn_correction_range", "critical_dimension", "default_longrope_factors",
]

Device = torch.device | str | None
ScalingResult = tuple[Tensor, float]


# ====================================================================== the rotation
def default_inv_freq(head_dim: int, base: float, device: Device = None) -> Tensor:
    """θ_i = base^(−2i/d) for i = 0..d/2−1, float32 (d/2,)."""
    exponent = torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim
    return 1.0 / (base**exponent)


def rope_angles(pos: Tensor, inv_freq: Tensor) -> Tensor:
    """Angles pos ⊗ θ in float32: positions (T,) × (d/2,) → (T, d/2)."""
    return pos.to(torch.float32)[:, None] * inv_freq.to(torch.float32)[None, :]


def rotate_pairs(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate consecutive pairs (x_{2i}, x_{2i+1}) of the last dim by the angle whose cos/sin are given.

    x: (..., T, D); cos, sin: (T, D/2) broadcastable. Computed in float32, returned in x's dtype. The pair
    (x_{2i}, x_{2i+1}) is the complex number x_{2i} + i·x_{2i+1} and is multiplied by cos + i·sin: the same
    products as (x_{2i}·cos − x_{2i+1}·sin, x_{2i}·sin + x_{2i+1}·cos), in one vectorised kernel (as in
    Llama's and gpt-fast's ``freqs_cis``).
    """
    xf = x.float()
    if xf.stride(-1) != 1 or xf.storage_offset() % 2 or any(st % 2 for st in xf.stride()[:-1]):
        xf = xf.contiguous()  # a complex view needs pairs aligned in memory
    xc = torch.view_as_complex(xf.unflatten(-1, (-1, 2)))  # (..., T, D/2) complex64
    return torch.view_as_real(xc * torch.complex(cos.float(), sin.float())).flatten(-2).to(x.dtype)


def apply_rotary(x: Tensor, pos: Tensor, inv_freq: Tensor, scaling: float = 1.0) -> Tensor:
    """RoPE-rotate x (..., T, D) at positions pos (T,) with frequencies inv_freq (D/2,)."""
    ang = rope_angles(pos, inv_freq)
    return rotate_pairs(x, ang.cos() * scaling, ang.sin() * scaling)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@register
class RoPE(PositionalEncoding):
    """Rotary position embedding (Su et al. 2021, Eq. 12–14), consecutive-pair convention.

    Hyperparameters: ``base`` b (10000). :meth:`prepare` puts cos/sin of the query and key positions into the
    context (``cos_q``, ``sin_q``, ``cos_k``, ``sin_k``, float32 (T, d/2)); :meth:`rotate` applies them.
    Subclasses change :meth:`inv_freq`/:meth:`attention_scaling` (frequencies) or :meth:`cos_sin`.
    """

    id = "rope"
    relative = True
    #: Whether the frequencies depend on the current length l (then the context's length is read).
    length_dependent: ClassVar[bool] = False

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, base: float = 10000.0) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len)
        self._check("head_dim", head_dim, head_dim % 2 == 0, "even for RoPE")
        self._check("base", base, _is_num(base) and base > 1, "a number > 1")
        self.base = float(base)

    def inv_freq(self, seq_len: int, device: Device = None) -> Tensor:
        """Frequencies θ (d/2,) float32 for a sequence whose largest position is ``seq_len − 1``."""
        return default_inv_freq(self.head_dim, self.base, device)

    def attention_scaling(self, seq_len: int) -> float:
        """Factor multiplying cos and sin (1 for plain RoPE)."""
        return 1.0

    def frequencies(self, ctx: PositionContext) -> ScalingResult:
        """(θ (d/2,), factor) for this forward."""
        seq_len = ctx.length if self.length_dependent else self.train_len
        return self.inv_freq(seq_len, ctx.device), self.attention_scaling(seq_len)

    def cos_sin(self, pos: Tensor, seq_len: int) -> tuple[Tensor, Tensor]:
        """cos, sin (T, d/2) float32 at positions ``pos`` for current length ``seq_len`` (standalone use)."""
        ang = rope_angles(pos, self.inv_freq(seq_len, pos.device))
        a = self.attention_scaling(seq_len)
        return ang.cos() * a, ang.sin() * a

    def put_cos_sin(self, ctx: PositionContext, fn: Callable[[Tensor], tuple[Tensor, Tensor]],
                    prefix: str = "") -> None:
        """Store ``fn(positions)`` as cos/sin of queries and keys (computed once when they are one tensor)."""
        cq, sq = fn(ctx.q_pos)
        ck, sk = (cq, sq) if ctx.k_pos is ctx.q_pos else fn(ctx.k_pos)
        ctx.put(prefix + "cos_q", cq, q_dim=0)
        ctx.put(prefix + "sin_q", sq, q_dim=0)
        ctx.put(prefix + "cos_k", ck, k_dim=0)
        ctx.put(prefix + "sin_k", sk, k_dim=0)

    def prepare(self, ctx: PositionContext) -> None:
        inv, a = self.frequencies(ctx)
        ctx.put("inv_freq", inv)
        ctx.put("attention_factor", a)
        self.put_cos_sin(ctx, lambda pos: _cos_sin(pos, inv, a))

    def rotate(self, q: Tensor, k: Tensor, ctx: PositionContext, layer: int = 0) -> tuple[Tensor, Tensor]:
        return (rotate_pairs(q, ctx.get("cos_q"), ctx.get("sin_q")),
                rotate_pairs(k, ctx.get("cos_k"), ctx.get("sin_k")))


def _cos_sin(pos: Tensor, inv: Tensor, a: float) -> tuple[Tensor, Tensor]:
    ang = rope_angles(pos, inv)
    return (ang.cos() * a, ang.sin() * a) if a != 1.0 else (ang.cos(), ang.sin())


# ====================================================================== the scaling registry
@dataclass(frozen=True)
class RopeScaling:
    """One registered scaling: its function, own hyperparameters (with defaults) and traits."""

    id: str
    fn: Callable[..., ScalingResult]
    params: Mapping[str, Any]
    relative: bool
    scale_policy: ScalePolicy
    rotation: type[ScaledRoPE]


#: The scaling functions, keyed like the card ids.
ROPE_SCALINGS: dict[str, RopeScaling] = {}
_SHARED = ("head_dim", "base", "train_len", "seq_len", "device")


class ScaledRoPE(RoPE):
    """RoPE whose frequencies and attention factor come from ``ROPE_SCALINGS[scaling]``.

    Hyperparameters: ``base`` b and the scaling function's own keyword parameters, ``scale`` s ≥ 1 (the
    extension factor L'/L) among them. Built by the registry for every scaling id; ``id``, ``relative`` and
    ``scale_policy`` are those of the scaling.
    """

    applies_to = "rope"
    length_dependent = True

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, scaling: str, base: float = 10000.0,
                 **params: Any) -> None:
        if scaling not in ROPE_SCALINGS:
            raise ValueError(f"unknown RoPE scaling {scaling!r} (registered: {', '.join(sorted(ROPE_SCALINGS))})")
        sc = ROPE_SCALINGS[scaling]
        self.id = sc.id
        unknown = sorted(set(params) - set(sc.params))
        if unknown:
            raise ValueError(f"{sc.id}: unknown hyperparameter(s) {', '.join(unknown)} "
                             f"(allowed: {', '.join(sorted(['base', *sc.params]))})")
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len, base=base)
        self.scaling = sc
        self.relative, self.scale_policy = sc.relative, sc.scale_policy
        merged = {**sc.params, **params}
        self._check("scale", merged["scale"], _is_num(merged["scale"]) and merged["scale"] >= 1, "a number ≥ 1")
        self.params = {**merged, "scale": float(merged["scale"])}
        self.scale = self.params["scale"]
        self.scaled(train_len + 1)  # the scaling function checks its own hyperparameters (ValueError naming them)

    def scaled(self, seq_len: int | None, device: Device = None) -> ScalingResult:
        """(θ', factor) of the scaling at current length ``seq_len``."""
        return self.scaling.fn(head_dim=self.head_dim, base=self.base, train_len=self.train_len, seq_len=seq_len,
                               device=device, **self.params)

    def inv_freq(self, seq_len: int, device: Device = None) -> Tensor:
        return self.scaled(seq_len, device)[0]

    def attention_scaling(self, seq_len: int) -> float:
        return self.scaled(seq_len)[1]

    def frequencies(self, ctx: PositionContext) -> ScalingResult:
        return self.scaled(ctx.length, ctx.device)

    def extra_repr(self) -> str:
        return super().extra_repr() + ", " + ", ".join(f"{k}={v!r}" for k, v in self.params.items())


class LongRoPE(ScaledRoPE):
    """LongRoPE (Ding et al., ICML 2024): per-pair factors (:func:`longrope_scaling`) and n̂ leading positions.

    Angle of pair i at position n: n·θ_i if n < n̂, else n·θ_i/λ_i (the paper's I = 1 or 1/λ_i); λ is the
    long list when the current length l > L, the short list otherwise; cos and sin × √(1 + ln s/ln L)
    (HF ``longrope``; ``attention_factor`` overrides it). Defaults: short factors all 1, long factors the
    geometric ramp from 1 to s (:func:`default_longrope_factors`) in place of searched ones; search them with
    :func:`posenc.pe.longrope_search.search_longrope_factors`.
    """

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, scaling: str = "longrope",
                 base: float = 10000.0, n_hat: int = 0, **params: Any) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len, scaling=scaling, base=base,
                         **params)
        self._check("n_hat", n_hat, isinstance(n_hat, int) and not isinstance(n_hat, bool) and n_hat >= 0,
                    "an int ≥ 0")
        self.n_hat = n_hat

    def cos_sin(self, pos: Tensor, seq_len: int) -> tuple[Tensor, Tensor]:
        inv, a = self.scaled(seq_len, pos.device)
        return self._leading(pos, inv, a)

    def _leading(self, pos: Tensor, inv: Tensor, a: float) -> tuple[Tensor, Tensor]:
        ang = rope_angles(pos, inv)
        if self.n_hat:
            plain = rope_angles(pos, default_inv_freq(self.head_dim, self.base, pos.device))
            ang = torch.where((pos < self.n_hat)[:, None], plain, ang)
        return ang.cos() * a, ang.sin() * a

    def prepare(self, ctx: PositionContext) -> None:
        inv, a = self.frequencies(ctx)
        self.put_cos_sin(ctx, lambda pos: self._leading(pos, inv, a))


def rope_scaling(scaling_id: str, *, relative: bool = True, scale_policy: ScalePolicy = "per_length",
                 rotation: type[ScaledRoPE] = ScaledRoPE) -> Callable[[Callable[..., ScalingResult]],
                                                                      Callable[..., ScalingResult]]:
    """Register a scaling function under card id ``scaling_id`` (the first argument must be a string
    literal: a torch-free reader lists registry ids from it) and the PE ``rotation(scaling=scaling_id)``.

    Its hyperparameters are ``base`` plus the function's own keyword parameters (and the rotation
    subclass's own ones); ``relative``: logits depend on i − j only; ``scale_policy``: see
    :data:`~posenc.pe.base.ScalePolicy`.
    """

    def decorate(fn: Callable[..., ScalingResult]) -> Callable[..., ScalingResult]:
        params = {n: p.default for n, p in inspect.signature(fn).parameters.items()
                  if p.kind is p.KEYWORD_ONLY and n not in _SHARED}
        if "scale" not in params:
            raise TypeError(f"rope_scaling({scaling_id!r}): the function needs a keyword 'scale' with a default")
        ROPE_SCALINGS[scaling_id] = RopeScaling(scaling_id, fn, MappingProxyType(params), relative, scale_policy,
                                                rotation)
        hps = {"base": 10000.0, **params, **class_hyperparameters(rotation, stop=ScaledRoPE)}
        register_spec(MethodSpec(id=scaling_id, factory=functools.partial(rotation, scaling=scaling_id),
                                 cls=rotation, hyperparameters=MappingProxyType(hps), applies_to="rope",
                                 relative=relative, scale_policy=scale_policy))
        return fn

    return decorate


def _need(ok: bool, scaling: str, name: str, value: Any, expected: str) -> None:
    if not ok:
        raise ValueError(f"{scaling}: hyperparameter '{name}' must be {expected}, got {value!r}")


# ====================================================================== the frequency functions
@rope_scaling("pi")
def pi_scaling(*, head_dim: int, base: float, train_len: int, seq_len: int | None = None, device: Device = None,
               scale: float = 4.0) -> ScalingResult:
    """Position Interpolation (Chen et al. 2023, arXiv 2306.15595): f'(x, m) = f(x, m·L/L'), i.e. θ' = θ/s.

    Identical to HF ``rope_type="linear"``. No attention factor.
    """
    return default_inv_freq(head_dim, base, device) / scale, 1.0


@rope_scaling("ntk_aware")
def ntk_aware_scaling(*, head_dim: int, base: float, train_len: int, seq_len: int | None = None,
                      device: Device = None, scale: float = 4.0) -> ScalingResult:
    """NTK-aware scaled RoPE (bloc97 2023; YaRN Definition 1, Eq. 22): b' = b·s^(d/(d−2)).

    The highest frequency (i = 0) is unchanged and the lowest (i = d/2 − 1) is divided by exactly s.
    """
    return default_inv_freq(head_dim, base * scale ** (head_dim / (head_dim - 2)), device), 1.0


@rope_scaling("dynamic_ntk", relative=False, scale_policy="fixed")
def dynamic_ntk_scaling(*, head_dim: int, base: float, train_len: int, seq_len: int | None = None,
                        device: Device = None, scale: float = 4.0) -> ScalingResult:
    """Dynamic NTK (emozilla 2023), the formula of HF ``rope_type="dynamic"``.

    For the current length l > L: b' = b·((s·l/L) − (s − 1))^(d/(d−2)); for l ≤ L plain RoPE. The survey
    (Eq. 23) and YaRN instead use the NTK-aware base with s = max(1, l/L); both agree only at s = 1. The
    current length l is the largest position + 1, so shifting q and k together changes the frequencies once
    l > L (not relative). With a KV cache, keys must be cached before rotation.
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


@rope_scaling("ntk_by_parts")
def ntk_by_parts_scaling(*, head_dim: int, base: float, train_len: int, seq_len: int | None = None,
                         device: Device = None, scale: float = 4.0, beta_fast: float = 32.0,
                         beta_slow: float = 1.0) -> ScalingResult:
    """NTK-by-parts (bloc97 2023; YaRN Definition 2), with the ramp of the authors' code.

    h(θ_i) = (1 − γ_i)·θ_i/s + γ_i·θ_i. The paper's γ is a ramp in r = L/λ (0 below α = beta_slow, 1 above
    β = beta_fast); the code, copied by every framework, ramps linearly in the pair *index* between the
    floor/ceil correction dims (:func:`yarn_correction_range`): γ_i = 1 − clamp((i − low)/(high − low), 0, 1).
    Pairs with r > β are untouched, pairs with r < α are interpolated by s. No attention factor.
    """
    _check_betas("ntk_by_parts", beta_fast, beta_slow)
    return _by_parts(head_dim, base, train_len, scale, beta_fast, beta_slow, device), 1.0


def _check_betas(scaling: str, beta_fast: float, beta_slow: float) -> None:
    _need(_is_num(beta_fast) and beta_fast > 0, scaling, "beta_fast", beta_fast, "a number > 0")
    _need(_is_num(beta_slow) and 0 < beta_slow < beta_fast, scaling, "beta_slow", beta_slow,
          "a number in (0, beta_fast)")


def _by_parts(head_dim: int, base: float, train_len: int, scale: float, beta_fast: float, beta_slow: float,
              device: Device) -> Tensor:
    inv = default_inv_freq(head_dim, base, device)
    low, high = yarn_correction_range(head_dim, base, train_len, beta_fast, beta_slow)
    if low == high:
        high += 0.001  # the authors' guard against a zero-width ramp
    idx = torch.arange(head_dim // 2, dtype=torch.float32, device=inv.device)
    ramp = ((idx - low) / (high - low)).clamp(0.0, 1.0)  # 0: keep (extrapolate), 1: interpolate
    return inv / scale * ramp + inv * (1.0 - ramp)


@rope_scaling("yarn")
def yarn_scaling(*, head_dim: int, base: float, train_len: int, seq_len: int | None = None, device: Device = None,
                 scale: float = 4.0, beta_fast: float = 32.0, beta_slow: float = 1.0) -> ScalingResult:
    """YaRN (Peng et al., ICLR 2024, arXiv 2309.00071): NTK-by-parts frequencies plus a temperature.

    softmax(q·k/(t·√d)) with √(1/t) = 0.1·ln s + 1 (Eq. 22 of the paper; HF ``get_mscale`` with mscale = 1).
    The factor √(1/t) is returned as the attention factor, which multiplies cos and sin, so logits scale by
    (0.1·ln s + 1)²; it is applied once. (With the factor 1 this is :func:`ntk_by_parts_scaling`.)
    """
    _check_betas("yarn", beta_fast, beta_slow)
    inv = _by_parts(head_dim, base, train_len, scale, beta_fast, beta_slow, device)
    return inv, 1.0 if scale <= 1 else 0.1 * math.log(scale) + 1.0


@rope_scaling("truncated_basis")
def truncated_basis_scaling(*, head_dim: int, base: float, train_len: int, seq_len: int | None = None,
                            device: Device = None, scale: float = 1.0, a_cut: float | None = None,
                            b_cut: float | None = None, rho: float | None = None) -> ScalingResult:
    """Truncated basis (Giraffe; Pal et al. 2023, arXiv 2308.10882, Eq. 24).

    θ* = θ if θ ≥ b_cut; ρ if a_cut < θ < b_cut; 0 if θ ≤ a_cut, applied after linear scaling by s (the
    authors' code divides by the scale first; s = 1, the default, is pure truncation, fine-tuned at the target
    length). Defaults follow the authors' code (``truncate_frequency`` in abacusai/Long-Context): with a
    wavelength cut T, b_cut = 2π/T, a_cut = b_cut/8 and ρ = b_cut/16; here T defaults to the training length
    L (pairs that complete a full period within L are kept).
    """
    b = 2 * math.pi / train_len if b_cut is None else b_cut
    _need(_is_num(b) and b > 0, "truncated_basis", "b_cut", b_cut, "None or a number > 0")
    a = b / 8 if a_cut is None else a_cut
    _need(_is_num(a) and 0 <= a < b, "truncated_basis", "a_cut", a_cut, "None or a number in [0, b_cut)")
    r = b / 16 if rho is None else rho
    _need(_is_num(r) and r >= 0, "truncated_basis", "rho", rho, "None or a number ≥ 0")
    inv = default_inv_freq(head_dim, base, device) / scale
    out = torch.where(inv < b, torch.full_like(inv, r), inv)
    return torch.where(inv <= a, torch.zeros_like(inv), out), 1.0


@rope_scaling("llama3_scaling")
def llama3_scaling(*, head_dim: int, base: float, train_len: int, seq_len: int | None = None, device: Device = None,
                   scale: float = 8.0, low_freq_factor: float = 1.0, high_freq_factor: float = 4.0) -> ScalingResult:
    """Llama 3.1 RoPE scaling (Meta 2024; HF ``rope_type="llama3"``), with L = ``train_len``.

    λ < L/high_freq_factor: keep θ; λ > L/low_freq_factor: θ/s; in between, with
    smooth = (L/λ − low_freq_factor)/(high_freq_factor − low_freq_factor): (1 − smooth)·θ/s + smooth·θ.
    Defaults as in Llama 3.1: factor 8, low_freq_factor 1, high_freq_factor 4.
    """
    _need(_is_num(low_freq_factor) and low_freq_factor > 0, "llama3_scaling", "low_freq_factor", low_freq_factor,
          "> 0")
    _need(_is_num(high_freq_factor) and high_freq_factor > low_freq_factor, "llama3_scaling", "high_freq_factor",
          high_freq_factor, "> low_freq_factor")
    inv = default_inv_freq(head_dim, base, device)
    wavelen = 2 * math.pi / inv
    low_wl, high_wl = train_len / low_freq_factor, train_len / high_freq_factor
    out = torch.where(wavelen > low_wl, inv / scale, inv)
    smooth = (train_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    blended = (1 - smooth) * out / scale + smooth * out
    medium = (wavelen >= high_wl) & (wavelen <= low_wl)
    return torch.where(medium, blended, out), 1.0


def default_longrope_factors(head_dim: int, scale: float) -> list[float]:
    """Default long factors when none are given: the geometric ramp λ_i = s^(i/(d/2 − 1)) from 1 to s
    (NTK-shaped: high frequencies kept, the lowest one interpolated by s). A stand-in for searched factors."""
    half = head_dim // 2
    if half == 1:
        return [float(scale)]
    return [float(scale ** (i / (half - 1))) for i in range(half)]


def _longrope_attention(scale: float, train_len: int) -> float:
    """LongRoPE's attention factor √(1 + ln s/ln L) (1 for s ≤ 1), as in HF ``longrope``."""
    return 1.0 if scale <= 1 else math.sqrt(1 + math.log(scale) / math.log(train_len))


@rope_scaling("longrope", relative=False, rotation=LongRoPE)
def longrope_scaling(*, head_dim: int, base: float, train_len: int, seq_len: int | None = None,
                     device: Device = None, scale: float = 4.0, long_factors: Sequence[float] | None = None,
                     short_factors: Sequence[float] | None = None, attention_factor: float | None = None
                     ) -> ScalingResult:
    """LongRoPE (Ding et al., ICML 2024, arXiv 2402.13753): θ'_i = θ_i/λ_i per pair.

    The long list applies when the current length l > L, the short list otherwise (HF ``longrope``). The
    attention factor is √(1 + ln s/ln L) (``attention_factor`` overrides it), applied whatever the length, as
    in HF. Defaults: short factors all 1 (plain RoPE), long factors :func:`default_longrope_factors`. Not
    relative: the list switches at L.
    """
    half = head_dim // 2
    for name, lst in (("long_factors", long_factors), ("short_factors", short_factors)):
        ok = lst is None or (isinstance(lst, (list, tuple)) and len(lst) == half
                             and all(_is_num(v) and v > 0 for v in lst))
        _need(ok, "longrope", name, lst, f"None or {half} numbers > 0 (one per rotary pair)")
    _need(attention_factor is None or (_is_num(attention_factor) and attention_factor > 0), "longrope",
          "attention_factor", attention_factor, "None or > 0")
    if seq_len is not None and seq_len > train_len:
        lam = long_factors if long_factors is not None else default_longrope_factors(head_dim, scale)
    else:
        lam = short_factors if short_factors is not None else [1.0] * half
    lam_t = torch.as_tensor(lam, dtype=torch.float32, device=device)
    attn = _longrope_attention(scale, train_len) if attention_factor is None else float(attention_factor)
    return default_inv_freq(head_dim, base, device) / lam_t, attn


def critical_dimension(head_dim: int, base: float, train_len: int) -> int:
    """Critical dimension for extrapolation (Liu et al., ICLR 2024, arXiv 2310.05209, Eq. 7):
    d_extra = 2·⌈(d/2)·log_b(L/2π)⌉ dims (clamped to [0, d]).

    Pairs below d_extra/2 complete at least one full period within the tuning length L and are fully trained;
    the others see only part of a period, and their first unseen phase sets the extrapolation limit.
    """
    val = 2 * math.ceil((head_dim / 2) * math.log(train_len / (2 * math.pi)) / math.log(base))
    return min(max(val, 0), head_dim)


@rope_scaling("longrope2", relative=False)
def longrope2_scaling(*, head_dim: int, base: float, train_len: int, seq_len: int | None = None,
                      device: Device = None, scale: float = 4.0, critical_pair: int | None = None,
                      critical_factor: float | None = None) -> ScalingResult:
    """LongRoPE2 frequency rule (Shang et al., ICML 2025, arXiv 2502.20082), simplified.

    LongRoPE2 holds that RoPE pairs beyond a *critical dimension* (those whose period exceeds L, see
    :func:`critical_dimension`) are under-trained, so they must be scaled by at least s, and it searches the
    critical pair c and its factor λ_c (≥ s) with a needle-driven perplexity. Here: λ_i = λ_c for i ≥ c and an
    NTK-shaped (geometric) ramp λ_i = λ_c^(i/c) below c. Defaults: c = the theoretical critical pair
    ⌈(d/2)·log_b(L/2π)⌉, λ_c = s; both can be searched with
    :func:`~posenc.pe.longrope_search.search_longrope_factors`. Mixed context window: for l ≤ L the original
    RoPE is used (factors 1, attention factor 1); for l > L the attention factor is LongRoPE's
    √(1 + ln s/ln L). Simplified: no needle data or search inside, and no per-pair search below c.
    """
    half = head_dim // 2
    ok = critical_pair is None or (isinstance(critical_pair, int) and not isinstance(critical_pair, bool)
                                   and 0 <= critical_pair <= half)
    _need(ok, "longrope2", "critical_pair", critical_pair, f"None or an int in [0, {half}]")
    _need(critical_factor is None or (_is_num(critical_factor) and critical_factor >= 1), "longrope2",
          "critical_factor", critical_factor, "None or ≥ 1")
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
