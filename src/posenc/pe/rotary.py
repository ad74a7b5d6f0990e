"""The PEs that change RoPE's rotation itself and are trained with it.

:class:`XPos` (RoPE × a per-pair exponential decay), :class:`PRoPE` (the lowest frequencies removed),
:class:`HoPE` (only full-period frequencies kept), :class:`FoPE` (Fourier series per pair, under-trained
frequencies clipped to zero) and :class:`ResonanceRoPE` (wavelengths rounded to whole tokens, optionally on
top of YaRN). The rotation, RoPE itself and the RoPE scalings are in :mod:`posenc.pe.rope`; the convention
(consecutive pairs, float32 angles) is stated there.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor, nn

from posenc.pe.base import PositionContext, register
from posenc.pe.rope import RoPE, default_inv_freq, rope_angles, yarn_scaling

__all__ = ["XPos", "PRoPE", "HoPE", "FoPE", "ResonanceRoPE", "resonance_inv_freq"]


# ---------------------------------------------------------------------- PEs that change the rotation
def _pair_mask_to_zero(inv_freq: Tensor, keep: Tensor) -> Tensor:
    """Frequencies with the pairs where ``keep`` is False set to 0 (angle 0: cos 1, sin 0, no rotation)."""
    return torch.where(keep, inv_freq, torch.zeros_like(inv_freq))


@register
class XPos(RoPE):
    """xPos, the length-extrapolatable RoPE (Sun et al., "A Length-Extrapolatable Transformer", ACL 2023).

    RoPE (consecutive pairs) times an exponential decay per pair, in the convention of the authors' torchscale
    ``XPOS`` and of rotary-embedding-torch (``use_xpos=True``): ζ_k = (2k + 0.4·d)/(1.4·d) for pair k (the
    paper's γ = 0.4), and with ``scale_base`` B = 512 the query at position n is multiplied by ζ_k^(n/B) and
    the key at position m by ζ_k^(−m/B). Their product ζ_k^((n−m)/B) decays with the distance n − m ≥ 0
    (ζ_k < 1), which is the survey's Eq. 15 (RoPE score × γ^(i−j)).

    Both reference implementations *centre* the positions before exponentiating (torchscale from
    −⌈l/2⌉, rotary-embedding-torch n − ⌊l/2⌋, with l the current length) so that neither q nor k overflows;
    the centre cancels in q·k. Here positions are centred at c = ⌊l/2⌋ (rotary-embedding-torch), with l =
    largest position + 1. Because the centre cancels, logits depend on positions only through n − m
    (``relative = True``, up to float rounding). The paper's blockwise causal attention at inference is an
    attention-window change, not part of the PE, and is not applied here.
    """

    id = "xpos"
    relative = True

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, base: float = 10000.0,
                 scale_base: float = 512.0, gamma: float = 0.4) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len, base=base)
        self._check("scale_base", scale_base, isinstance(scale_base, (int, float)) and scale_base > 0, "> 0")
        self._check("gamma", gamma, isinstance(gamma, (int, float)) and 0 < gamma, "> 0")
        self.scale_base = float(scale_base)
        self.gamma = float(gamma)

    def zeta(self, device: torch.device | str | None = None) -> Tensor:
        """ζ_k = (2k + γ·d)/((1 + γ)·d), float32 (d/2,)."""
        d = self.head_dim
        k2 = torch.arange(0, d, 2, dtype=torch.float32, device=device)
        return (k2 + self.gamma * d) / ((1.0 + self.gamma) * d)

    def decay(self, pos: Tensor, centre: int, sign: float) -> Tensor:
        """ζ^(sign·(pos − centre)/B) per pair, repeated for both dims of the pair: (T, D) float32."""
        power = sign * (pos.to(torch.float32) - centre) / self.scale_base
        s = self.zeta(pos.device)[None, :] ** power[:, None]  # (T, d/2)
        return s.repeat_interleave(2, dim=-1)

    def prepare(self, ctx: PositionContext) -> None:
        super().prepare(ctx)
        c = ctx.length // 2
        ctx.put("xpos_q", self.decay(ctx.q_pos, c, 1.0), q_dim=0)
        ctx.put("xpos_k", self.decay(ctx.k_pos, c, -1.0), k_dim=0)

    def rotate(self, q: Tensor, k: Tensor, ctx: PositionContext, layer: int = 0) -> tuple[Tensor, Tensor]:
        qr, kr = super().rotate(q, k, ctx, layer)
        return (qr.float() * ctx.get("xpos_q")).to(q.dtype), (kr.float() * ctx.get("xpos_k")).to(k.dtype)


@register
class PRoPE(RoPE):
    """p-RoPE (Barbero et al., "Round and Round We Go! What makes Rotary Positional Encodings useful?",
    ICLR 2025, arXiv 2410.06205, Sec. 6 and the ``apply_p_rope`` listing).

    Keeps the highest fraction ``p`` of RoPE frequencies and removes the rest: pairs k < ⌊p·d/2⌋ keep
    θ_k = b^(−2k/d) (the *same* frequencies as RoPE, not re-spread), the lowest ones get θ = 0 (the paper
    pads the timescale with ∞), i.e. no rotation, so those dimensions act as position-free semantic channels.
    p = 1 is RoPE, p = 0 is NoPE; the paper's Gemma 2B runs find p = 0.75 (25 % cut) best.
    """

    id = "p_rope"
    relative = True

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, base: float = 10000.0,
                 p: float = 0.75) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len, base=base)
        self._check("p", p, isinstance(p, (int, float)) and 0.0 <= p <= 1.0, "in [0, 1]")
        self.p = float(p)

    def inv_freq(self, seq_len: int, device: torch.device | str | None = None) -> Tensor:
        inv = default_inv_freq(self.head_dim, self.base, device)
        n_rope = int(self.p * self.head_dim // 2)  # the paper's int(rope_percentage * head_dim // 2)
        return _pair_mask_to_zero(inv, torch.arange(inv.numel(), device=inv.device) < n_rope)


@register
class HoPE(RoPE):
    """HoPE, High-frequency rotary Position Encoding (Chen et al., arXiv 2410.21216, ACL 2025).

    HoPE replaces the RoPE components that produce long-term decay and the U-shaped attention (the
    low-frequency and "activated" components) with position-independent ones and keeps only the
    high-frequency rotations. Our reading of the rule: a pair k keeps its rotation iff it completes at least
    ``min_rotations`` full periods within the training length, θ_k·L/(2π) ≥ min_rotations; every other pair
    gets θ = 0 (cos 1, sin 0: position-independent). With min_rotations = 1 (default) this removes every
    component whose cosine has not returned to its start within L (the monotone-decay ones and the activated
    ones whose first minimum lies inside L). The exact cut-off used in the paper's experiments is an open
    check on the card.
    """

    id = "hope"
    relative = True

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, base: float = 10000.0,
                 min_rotations: float = 1.0) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len, base=base)
        self._check("min_rotations", min_rotations,
                    isinstance(min_rotations, (int, float)) and min_rotations >= 0, "a number ≥ 0")
        self.min_rotations = float(min_rotations)

    def inv_freq(self, seq_len: int, device: torch.device | str | None = None) -> Tensor:
        inv = default_inv_freq(self.head_dim, self.base, device)
        rotations = inv * self.train_len / (2 * math.pi)
        return _pair_mask_to_zero(inv, rotations >= self.min_rotations)


@register
class FoPE(RoPE):
    """FoPE, Fourier Position Embedding (Hua et al., ICML 2025, arXiv 2412.17739).

    Two changes to RoPE:

    * **Clip to floor.** Frequencies that do not complete a period within the training length,
      θ_k < 2π/L, are under-trained; they are replaced by the zero frequency (cos 1, sin 0), so those pairs
      carry no position.
    * **Fourier series.** Each kept pair j no longer sees a single frequency: its cos and sin are series over
      all K kept frequencies, cos_j(n) = Σ_k C[h, k, j]·cos(θ_k·n) and sin_j(n) = Σ_k S[h, k, j]·sin(θ_k·n),
      with per-head coefficient matrices C, S (H, K, K) initialised to the identity (the dominant
      frequency) plus N(0, σ²/K) noise (the paper's σ: 0.3 at its smallest scale) and learned.

    The pair is then "rotated" by (cos_j, sin_j), which is no longer a rotation (C ≠ S or off-diagonal terms)
    and makes q·k depend on more than n − m, so ``relative = False``. Differences from the authors' code
    (recorded on the card): it normalises each coefficient column by its sum, and pads the clipped pairs
    with cos = sin = 1, a fixed map identical for q and k that only doubles those pairs' logit
    contribution; here the zero-frequency component (cos 1, sin 0) is used, as in the paper's text.
    """

    id = "fope"
    relative = False
    learnable: ClassVar[bool] = True

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, base: float = 10000.0,
                 sigma: float = 0.3, learn_coefficients: bool = True) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len, base=base)
        self._check("sigma", sigma, isinstance(sigma, (int, float)) and sigma >= 0, "a number ≥ 0")
        self._check("learn_coefficients", learn_coefficients, isinstance(learn_coefficients, bool), "a bool")
        self.sigma = float(sigma)
        inv = default_inv_freq(head_dim, self.base)
        keep = inv >= 2 * math.pi / train_len
        self.register_buffer("kept_inv_freq", inv[keep].clone(), persistent=False)
        kk = int(keep.sum())
        self.num_kept = kk
        gen = torch.Generator().manual_seed(0)  # deterministic init; the model's seed governs the rest

        def init() -> Tensor:
            noise = torch.randn(num_heads, kk, kk, generator=gen) * (self.sigma / math.sqrt(max(kk, 1)))
            return torch.eye(kk).expand(num_heads, kk, kk) + noise

        self.cos_coef = nn.Parameter(init(), requires_grad=learn_coefficients)
        self.sin_coef = nn.Parameter(init(), requires_grad=learn_coefficients)

    def fourier_cos_sin(self, pos: Tensor) -> tuple[Tensor, Tensor]:
        """cos, sin (H, T, d/2) float32: the Fourier series on kept pairs, (1, 0) on the clipped ones."""
        ang = rope_angles(pos, self.kept_inv_freq.to(pos.device))  # (T, K)
        cos = torch.einsum("tk,hkj->htj", ang.cos(), self.cos_coef.float())
        sin = torch.einsum("tk,hkj->htj", ang.sin(), self.sin_coef.float())
        pad = self.head_dim // 2 - self.num_kept
        if pad:
            cos = nn.functional.pad(cos, (0, pad), value=1.0)
            sin = nn.functional.pad(sin, (0, pad), value=0.0)
        return cos, sin

    def prepare(self, ctx: PositionContext) -> None:
        cq, sq = self.fourier_cos_sin(ctx.q_pos)
        ck, sk = (cq, sq) if ctx.k_pos is ctx.q_pos else self.fourier_cos_sin(ctx.k_pos)
        ctx.put("cos_q", cq, q_dim=-2)
        ctx.put("sin_q", sq, q_dim=-2)
        ctx.put("cos_k", ck, k_dim=-2)
        ctx.put("sin_k", sk, k_dim=-2)


def resonance_inv_freq(inv_freq: Tensor) -> Tensor:
    """Resonance RoPE (Wang et al. 2024, Eq. 5): θ̃ = 2π/round(2π/θ), wavelengths rounded to whole tokens.

    Zero frequencies stay zero; a wavelength is never rounded below 1 token.
    """
    out = torch.zeros_like(inv_freq)
    nz = inv_freq > 0
    wl = torch.round(2 * math.pi / inv_freq[nz]).clamp_min(1.0)
    out[nz] = 2 * math.pi / wl
    return out


@register
class ResonanceRoPE(RoPE):
    """Resonance RoPE (Wang et al., "Resonance RoPE: Improving Context Length Generalization of Large
    Language Models", Findings of ACL 2024, arXiv 2403.00071).

    Every wavelength λ_k = 2π/θ_k is rounded to a whole number of tokens, θ̃_k = 2π/round(λ_k), so that the
    phases seen beyond the training length repeat those seen within it (no feature gap for pre-critical
    pairs). As in the authors' code, the rounding is applied to all pairs. With ``scale`` s > 1 the rounding
    is applied on top of YaRN (the paper's Resonance YaRN: by-parts frequencies with ``beta_fast``,
    ``beta_slow``, then rounding, with YaRN's attention factor 0.1·ln s + 1 multiplying cos and sin, applied
    once). s = 1 is Resonance RoPE on plain RoPE, trained with it from scratch.
    """

    id = "resonance_rope"
    relative = True

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, base: float = 10000.0,
                 scale: float = 1.0, beta_fast: float = 32.0, beta_slow: float = 1.0) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len, base=base)
        self._check("scale", scale, isinstance(scale, (int, float)) and scale >= 1, "a number ≥ 1")
        self._check("beta_fast", beta_fast, isinstance(beta_fast, (int, float)) and beta_fast > 0, "> 0")
        self._check("beta_slow", beta_slow,
                    isinstance(beta_slow, (int, float)) and 0 < beta_slow < beta_fast, "in (0, beta_fast)")
        self.scale, self.beta_fast, self.beta_slow = float(scale), float(beta_fast), float(beta_slow)

    def inv_freq(self, seq_len: int, device: torch.device | str | None = None) -> Tensor:
        inv, _ = yarn_scaling(head_dim=self.head_dim, base=self.base, train_len=self.train_len, scale=self.scale,
                              beta_fast=self.beta_fast, beta_slow=self.beta_slow, device=device)
        return resonance_inv_freq(inv)

    def attention_scaling(self, seq_len: int) -> float:
        return 1.0 if self.scale <= 1 else 0.1 * math.log(self.scale) + 1.0
