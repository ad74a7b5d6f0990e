"""RoPE extensions beyond a frequency function: a new base (ABF, Code Llama, the RoPE scaling laws), a
per-position query scaling (Entropy-ABF) and learned frequencies (CLEX).

All are RoPE (:mod:`posenc.pe.rope`, consecutive pairs, float32 angles) with another frequency rule or an
extra factor, fine-tuned from a RoPE model (``applies_to = "rope"``).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from posenc.pe.base import PositionContext, register
from posenc.pe.rope import RoPE, critical_dimension, default_inv_freq, rope_angles

__all__ = ["ABF", "CodeLlamaBase", "RoPEBaseScalingLaws", "EntropyABF", "CLEX", "extrapolation_limit",
           "critical_small_base"]


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
        shape_ok = all(isinstance(v, int) and not isinstance(v, bool) for v in (head_dim, train_len))
        derive = base is None and shape_ok and head_dim > 2 and train_len > 0
        chosen = critical_small_base(head_dim, train_len) if derive else base
        if derive and chosen is not None and chosen <= 1:
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

    def prepare(self, ctx: PositionContext) -> None:
        super().prepare(ctx)
        ctx.put("eabf_scale", self.query_scale(ctx.q_pos), q_dim=0)

    def rotate(self, q: Tensor, k: Tensor, ctx: PositionContext, layer: int = 0) -> tuple[Tensor, Tensor]:
        q, k = super().rotate(q, k, ctx, layer)
        if layer < self.unscaled_layers:
            return q, k
        return (q.float() * ctx.get("eabf_scale")).to(q.dtype), k


@register
class CLEX(RoPE):
    """CLEX, Continuous Length EXtrapolation (Chen et al., ICLR 2024, arXiv 2310.16450), small version.

    The log-frequencies z(t) = ln θ(t) at length-scaling factor t ≥ 1 follow a learned ODE,
    dz/dt = ξ(t) + g_φ(z, ln t), z(1) = ln θ. ξ_i(t) = −(2i/(d−2))/t is the derivative of NTK-aware scaling
    (whose solution is b' = b·t^(d/(d−2))), and g_φ is a small MLP (``hidden`` units, tanh) whose output layer
    starts at zero, so the untrained ODE *is* NTK-aware scaling. It is integrated in float32 with
    ``ode_steps`` fixed RK4 steps from 1 to t. Training (``self.training``): t is drawn uniformly from
    [1, ``scale``] once per forward (CLEX's sampled scaling; positions are left as they are here, a
    simplification). Evaluation: t = max(1, l/L) for the current length l (continuous, not capped at
    ``scale``), so l ≤ L is plain RoPE; ``scale`` is a fixed training range, not set per evaluation length.
    """

    id = "clex"
    applies_to = "rope"
    relative = False
    learnable: ClassVar[bool] = True
    scale_policy = "fixed"
    length_dependent = True

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, base: float = 10000.0,
                 scale: float = 4.0, hidden: int = 32, ode_steps: int = 8) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len, base=base)
        ok = isinstance(scale, (int, float)) and not isinstance(scale, bool) and math.isfinite(scale) and scale >= 1
        self._check("scale", scale, ok, "a number ≥ 1")
        self._check("head_dim", head_dim, head_dim >= 4, "≥ 4 for CLEX")
        self._check("hidden", hidden, isinstance(hidden, int) and hidden > 0, "a positive int")
        self._check("ode_steps", ode_steps, isinstance(ode_steps, int) and ode_steps > 0, "a positive int")
        half = head_dim // 2
        self.scale = float(scale)
        self.ode_steps = ode_steps
        self.net = nn.Sequential(nn.Linear(half + 1, hidden), nn.Tanh(), nn.Linear(hidden, half))
        nn.init.zeros_(self.net[2].weight)
        nn.init.zeros_(self.net[2].bias)
        i = torch.arange(half, dtype=torch.float32)
        self.register_buffer("xi_coef", -2 * i / (head_dim - 2), persistent=False)

    def field(self, z: Tensor, t: float) -> Tensor:
        """dz/dt at (z, t), float32 whatever the parameters' dtype."""
        lt = torch.full((1,), math.log(t), dtype=torch.float32, device=z.device)
        fc1, fc2 = self.net[0], self.net[2]
        h = torch.tanh(F.linear(torch.cat([z, lt]), fc1.weight.float(), fc1.bias.float()))
        return self.xi_coef.to(z.device).float() / t + F.linear(h, fc2.weight.float(), fc2.bias.float())

    def log_freq(self, t: float, device: torch.device | str | None = None) -> Tensor:
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
        """t for this forward: drawn in training, max(1, l/L) at evaluation."""
        if self.training:
            return 1.0 + (self.scale - 1.0) * float(torch.rand(()))
        return max(1.0, seq_len / self.train_len)

    def inv_freq(self, seq_len: int, device: torch.device | str | None = None) -> Tensor:
        return torch.exp(self.log_freq(self.current_t(seq_len), device))

    def prepare(self, ctx: PositionContext) -> None:
        # One t (hence one set of frequencies) per forward, shared by q, k and every layer.
        inv = self.inv_freq(ctx.length, ctx.device)

        def cos_sin(pos: Tensor) -> tuple[Tensor, Tensor]:
            ang = rope_angles(pos, inv)
            return ang.cos(), ang.sin()

        self.put_cos_sin(ctx, cos_sin)


# ---------------------------------------------------------------------- scaling-law helpers
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
