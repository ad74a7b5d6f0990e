"""Wavelet-based relative positional representation (Oka, Hasegawa, Nishida, Saito, ICLR 2025, arXiv 2502.02004).

Position enters as in Shaw et al.'s relative position representation, with fixed wavelets in place of learned
embeddings (§5.1, Eq. 10–14):

    e_{m,n} = (q_m·k_n + q_m·p_{m,n}) / √d,    p_{m,n}[c] = ψ((m − n − b_c)/a_c),    ψ(t) = (1 − t²)·exp(−t²/2),

the Ricker ("Mexican hat") wavelet without the 1/√a amplitude factor (Eq. 11), one (scale a, shift b) pair per
head dimension c: (a, b) ∈ {2^s₀, …, 2^(s₀+s−1)} × {0, …, d/s − 1} (Eq. 13; the paper's WikiText-103 models use
d = 128, s = 8 scales a = 2^0..2^7 and 16 shifts; its Llama-2 run uses a = 2^2..2^9). No clipping: every distance
gets a representation, and wavelets of large scale reach far.

Cost (the paper's Appendix A.6, tip 2): p_{m,n} depends on m − n only, so q_m·p_{m,n} is computed as
q·Ψᵀ over the R distinct distances (Ψ: R × d), then gathered into the (T, S) logits: O(B·H·T·R·d) time and
(B, H, T, R) memory with R ≤ T + S − 1, never the (T, S, d) tensor of p.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from posenc.pe.base import PositionalEncoding, PositionContext, register

__all__ = ["ricker", "wavelet_grid", "WaveletPE"]


def ricker(t: Tensor) -> Tensor:
    """The Ricker wavelet of the paper's Eq. 12, ψ(t) = (1 − t²)·exp(−t²/2) (no normalisation constant)."""
    t2 = t * t
    return (1.0 - t2) * torch.exp(-0.5 * t2)


def wavelet_grid(head_dim: int, num_scales: int, min_scale_exp: int = 0,
                 device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """Scales a and shifts b per head dimension, float32 (d,) each: dimension c = b·s + j has a = 2^(s₀ + j) and
    shift b = ⌊c/s⌋ (the order of the paper's Eq. 4: the scale varies fastest)."""
    c = torch.arange(head_dim, device=device)
    scale = torch.pow(2.0, (min_scale_exp + c % num_scales).to(torch.float32))
    shift = (c // num_scales).to(torch.float32)
    return scale, shift


@register
class WaveletPE(PositionalEncoding):
    """Wavelet-based relative positional representation (see the module docstring for the equations).

    Hyperparameters: ``num_scales`` s (8, the paper's value for d = 128), which must divide ``head_dim`` (d/s
    shifts), and ``min_scale_exp`` s₀ (0: scales 2^0..2^(s−1); the paper's Llama-2 run uses 2). Fixed, not
    learned; shared by heads and layers; depends on m − n only (``relative``).
    """

    id = "wavelet_pe"
    relative = True

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, num_scales: int = 8,
                 min_scale_exp: int = 0) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len)
        self._check("num_scales", num_scales,
                    isinstance(num_scales, int) and not isinstance(num_scales, bool) and num_scales >= 1
                    and head_dim % num_scales == 0, f"a positive int that divides head_dim ({head_dim})")
        self._check("min_scale_exp", min_scale_exp,
                    isinstance(min_scale_exp, int) and not isinstance(min_scale_exp, bool) and 0 <= min_scale_exp <= 30,
                    "an int in [0, 30]")
        self.num_scales, self.min_scale_exp = num_scales, min_scale_exp

    def table(self, dist: Tensor) -> Tensor:
        """p for distances ``dist`` (R,) (= m − n): float32 (R, d)."""
        a, b = wavelet_grid(self.head_dim, self.num_scales, self.min_scale_exp, dist.device)
        return ricker((dist.to(torch.float32)[:, None] - b[None, :]) / a[None, :])

    def prepare(self, ctx: PositionContext) -> None:
        rel = ctx.q_pos[:, None] - ctx.k_pos[None, :]  # (T, S), m − n
        dist, index = torch.unique(rel, return_inverse=True)  # R distinct distances; (T, S) → their index
        ctx.put("wavelet_table", self.table(dist))  # (R, d)
        ctx.put("wavelet_index", index, q_dim=0, k_dim=1)

    def logits(self, q: Tensor, k: Tensor, ctx: PositionContext, layer: int = 0) -> Tensor:
        qf = q.float()
        content = qf @ k.float().transpose(-2, -1)  # (B, H, T, S)
        per_dist = qf @ ctx.get("wavelet_table").t()  # (B, H, T, R): q_m·p for every distance
        index = ctx.get("wavelet_index")  # (T, S)
        position = per_dist.gather(-1, index.expand(*per_dist.shape[:-1], -1))
        return (content + position) / math.sqrt(q.size(-1))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", num_scales={self.num_scales}, min_scale_exp={self.min_scale_exp}"
