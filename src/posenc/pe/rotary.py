"""The one rotation (RoPE) and the PEs that change it.

RoPE (Su et al., RoFormer, arXiv 2104.09864, Eq. 12–14): q and k at position m are rotated by the
block-diagonal R_{Θ,m}, with 2×2 blocks rotating the *consecutive* pair (2i, 2i+1) by m·θ_i and
θ_i = b^(−2i/d). Some libraries rotate the half-split pair (i, i + d/2) ("rotate-half"); both give
identical logits after a fixed permutation of head dimensions, which the tests check.

Angles are computed in float32, also under bf16 autocast, and cast to the input dtype only when applied.
Every RoPE scaling (:mod:`posenc.pe.rope_scaling`) is a subclass that changes :meth:`RoPE.inv_freq` and
:meth:`RoPE.attention_scaling`; the factor multiplies cos and sin, so logits scale by its square.
"""

from __future__ import annotations

import torch
from torch import Tensor

from posenc.pe.base import PositionalEncoding, register

__all__ = ["RoPE", "default_inv_freq", "rope_angles", "apply_rotary", "rotate_pairs"]


def default_inv_freq(head_dim: int, base: float, device: torch.device | str | None = None) -> Tensor:
    """θ_i = base^(−2i/d) for i = 0..d/2−1, float32 (d/2,)."""
    exponent = torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim
    return 1.0 / (base**exponent)


def rope_angles(pos: Tensor, inv_freq: Tensor) -> Tensor:
    """Angles pos ⊗ θ in float32: positions (T,) × (d/2,) → (T, d/2)."""
    return pos.to(torch.float32)[:, None] * inv_freq.to(torch.float32)[None, :]


def rotate_pairs(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate consecutive pairs (x_{2i}, x_{2i+1}) of the last dim by the angle whose cos/sin are given.

    x: (..., T, D); cos, sin: (T, D/2) broadcastable. Computed in float32, returned in x's dtype.
    """
    xf = x.float()
    x1, x2 = xf[..., 0::2], xf[..., 1::2]  # (..., T, D/2) each
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)  # (..., T, D/2, 2)
    return out.flatten(-2).to(x.dtype)


def apply_rotary(x: Tensor, pos: Tensor, inv_freq: Tensor, scaling: float = 1.0) -> Tensor:
    """RoPE-rotate x (..., T, D) at positions pos (T,) with frequencies inv_freq (D/2,)."""
    ang = rope_angles(pos, inv_freq)
    return rotate_pairs(x, ang.cos() * scaling, ang.sin() * scaling)


@register
class RoPE(PositionalEncoding):
    """Rotary position embedding (Su et al. 2021, Eq. 12–14), consecutive-pair convention.

    Hyperparameters: ``base`` b (10000). Subclasses override :meth:`inv_freq` and
    :meth:`attention_scaling`; the rotation itself lives here only.
    """

    id = "rope"
    relative = True

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, base: float = 10000.0) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len)
        self._check("head_dim", head_dim, head_dim % 2 == 0, "even for RoPE")
        self._check("base", base, isinstance(base, (int, float)) and base > 1, "a number > 1")
        self.base = float(base)

    def inv_freq(self, seq_len: int, device: torch.device | str | None = None) -> Tensor:
        """Frequencies θ (d/2,) float32 for a sequence whose largest position is ``seq_len − 1``."""
        return default_inv_freq(self.head_dim, self.base, device)

    def attention_scaling(self, seq_len: int) -> float:
        """Factor multiplying cos and sin (1 for plain RoPE)."""
        return 1.0

    def cos_sin(self, pos: Tensor, seq_len: int) -> tuple[Tensor, Tensor]:
        """cos, sin (T, d/2) float32 for positions ``pos``, memoised per forward scope."""

        def make() -> tuple[Tensor, Tensor]:
            ang = rope_angles(pos, self.inv_freq(seq_len, pos.device))
            a = self.attention_scaling(seq_len)
            return ang.cos() * a, ang.sin() * a

        return self.shared(("cos_sin", id(pos), seq_len), make)

    def current_length(self, q_pos: Tensor, k_pos: Tensor) -> int:
        """Current length l = largest position + 1 (used by dynamic scalings)."""
        return int(torch.maximum(q_pos.max(), k_pos.max()).item()) + 1 if k_pos.numel() else 0

    def rotate(self, q: Tensor, k: Tensor, q_pos: Tensor, k_pos: Tensor, *, layer: int = 0) -> tuple[Tensor, Tensor]:
        seq_len = self.shared(("len", id(q_pos), id(k_pos)), lambda: self.current_length(q_pos, k_pos))
        cq, sq = self.cos_sin(q_pos, seq_len)
        ck, sk = (cq, sq) if k_pos is q_pos else self.cos_sin(k_pos, seq_len)
        return rotate_pairs(q, cq, sq), rotate_pairs(k, ck, sk)
