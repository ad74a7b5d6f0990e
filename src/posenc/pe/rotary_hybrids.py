"""RoPE models whose attention is built differently: CoCA and local/global layers with two RoPE bases.

:class:`CoCA` constrains each key to be collinear with the query inside every rotary pair; :class:`LocalGlobalRoPE`
interleaves sliding-window layers (one RoPE base) with full-attention layers (another base), as in Gemma 3. Both
train from scratch and put position into :meth:`rotate` (and a window bias), so the model's fast attention
paths apply. The rotation (consecutive pairs, float32 angles) is :func:`posenc.pe.rope.rotate_pairs`.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor

from posenc.pe.base import PositionContext, register
from posenc.pe.rope import RoPE, default_inv_freq, rope_angles, rotate_pairs

__all__ = ["CoCA", "coca_key_coefficients", "LocalGlobalRoPE"]

CocaVariant = Literal["slack", "strict"]


def coca_key_coefficients(k: Tensor) -> Tensor:
    """CoCA's collinearity coefficients T = ReLU of the mean of each rotary pair, duplicated to both entries.

    k (…, D) is the key projection's output read as W_T·x (CoCA Eq. 5–6: t_2j = t_2j+1, t = ReLU(t)); the
    released code averages the two halves of the rotate-half layout, the same pairing after a fixed permutation.
    """
    pairs = k.float().unflatten(-1, (-1, 2))  # (..., D/2, 2)
    t = torch.relu(pairs.mean(dim=-1, keepdim=True))
    return t.expand_as(pairs).flatten(-2).to(k.dtype)


@register
class CoCA(RoPE):
    """CoCA, Collinear Constrained Attention (Zhu, Ye, Jiang, Xue, Zhang, Wu, Li, ACL 2024, arXiv 2309.08646,
    §2.3–2.4; released code codefuse-ai/Collinear-Constrained-Attention, ``model/*/modeling_*.py``).

    The key projection is replaced by coefficients t_n = ReLU(pair-mean of W_T·x_n) (:func:`coca_key_coefficients`),
    and the key seen by query m is collinear with it in every rotary pair j: k_{m,n} = q_m ∘ t_n (Eq. 7). With RoPE,

    * ``variant="strict"`` (Eq. 9): a(m, n) = Re⟨f(q_m, m), f(q_m, n) ∘ t_n⟩ = Σ_j t_{n,j}·|q_{m,j}|²·cos((m − n)θ_j);
    * ``variant="slack"`` (Eq. 10 without the constraint q_2j = q_2j+1, "CoCA-Slack"): a(m, n) =
      Re⟨f(q_m, m), q_m ∘ f(t_n, n)⟩ = Σ_d q_m[d]·f(q_m, m)[d]·f(t_n, n)[d].

    The released code implements the slack form (``contract('bpnd,bpsd,bpnd->bpns', q, rot(T), rot(q))``) and the
    paper's headline results use it (its Table 3 compares the two); it is the default here. Logits are a(m, n)/√d.

    Cost. Eq. 7 materialises an (N, N, d) key tensor. Both forms factor into an ordinary dot product of per-token
    d-vectors, which is how this class computes them (cost and memory of plain RoPE, and the model's SDPA/flash
    paths apply): slack = (q_m ∘ f(q_m, m))·f(t_n, n); strict = [|q_{m,j}|²·(cos mθ_j, sin mθ_j)]·[t_{n,j}·(cos nθ_j,
    sin nθ_j)]. The released code reaches the slack product through opt_einsum's contraction order, which pairs
    q with rot(q) first. The strict form depends on m − n only; the slack form does not (``relative = False``).
    """

    id = "coca"
    relative = False

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, base: float = 10000.0,
                 variant: CocaVariant = "slack") -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len, base=base)
        self._check("variant", variant, isinstance(variant, str) and variant in ("slack", "strict"),
                    "'slack' (the released code) or 'strict' (the paper's Eq. 9)")
        self.variant = variant

    def rotate(self, q: Tensor, k: Tensor, ctx: PositionContext, layer: int = 0) -> tuple[Tensor, Tensor]:
        cq, sq, ck, sk = ctx.get("cos_q"), ctx.get("sin_q"), ctx.get("cos_k"), ctx.get("sin_k")
        t = coca_key_coefficients(k)
        if self.variant == "slack":
            q_out = q.float() * rotate_pairs(q.float(), cq, sq)  # q ∘ f(q, m)
            return q_out.to(q.dtype), rotate_pairs(t, ck, sk)  # f(t, n)
        # strict: each pair j of the query becomes |q_j|²·(cos mθ_j, sin mθ_j), of the key t_j·(cos nθ_j, sin nθ_j)
        norm2 = q.float().unflatten(-1, (-1, 2)).pow(2).sum(-1)  # (..., D/2)
        q_out = torch.stack((norm2 * cq, norm2 * sq), dim=-1).flatten(-2)
        tj = t.float().unflatten(-1, (-1, 2))[..., 0]
        k_out = torch.stack((tj * ck, tj * sk), dim=-1).flatten(-2)
        return q_out.to(q.dtype), k_out.to(k.dtype)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", base={self.base}, variant={self.variant!r}"


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@register
class LocalGlobalRoPE(RoPE):
    """Local/global layers with two RoPE bases, Gemma 3 (Gemma Team, Google DeepMind, technical report, arXiv
    2503.19786, §2 and §5.3; Hugging Face ``Gemma3TextConfig``).

    Sliding-window ("local") layers alternate with full-attention ("global") layers: layer l (0-based) is global
    when (l + 1) is divisible by ``global_every`` (Gemma 3: 6, i.e. 5 local layers per global layer, the first
    layer local; HF ``sliding_window_pattern``). Local layers use RoPE with base b (``base``, 10k) and see the
    ``window`` most recent keys, itself included (key j visible iff i − j < W, HF's ``sliding_window`` mask), as a
    −inf bias. Global layers use RoPE with base b_g (``global_base``, 1M) over the whole context, with their
    positions divided by ``global_scale`` (the report's positional interpolation of the global layers, factor 8
    when extending the 32K pre-trained models to 128K; 1 = none, the pre-training setting).

    Defaults: the report's bases (10k, 1M) and 5:1 ratio. The report's window is 1,024 tokens at 32K pre-training
    (1/32 of the window); at this project's training lengths 1/32 would leave a handful of tokens, so ``window``
    defaults to ⌊train_len/8⌋. The report also uses QK-norm and GQA, model changes outside the PE interface.
    """

    id = "local_global_rope"
    relative = True
    bias_per_layer = True
    static_bias = True  # the window mask depends only on positions

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, base: float = 10000.0,
                 global_base: float = 1000000.0, global_every: int = 6, window: int | None = None,
                 global_scale: float = 1.0) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len, base=base)
        window = max(1, train_len // 8) if window is None else window
        self._check("global_base", global_base, _is_num(global_base) and global_base > 1, "a number > 1")
        self._check("global_every", global_every,
                    isinstance(global_every, int) and not isinstance(global_every, bool) and global_every >= 1,
                    "an int >= 1")
        self._check("window", window, isinstance(window, int) and not isinstance(window, bool) and window >= 1,
                    "an int >= 1")
        self._check("global_scale", global_scale, _is_num(global_scale) and global_scale >= 1, "a number >= 1")
        self.global_base, self.global_every = float(global_base), global_every
        self.window, self.global_scale = window, float(global_scale)

    def is_global(self, layer: int) -> bool:
        return (layer + 1) % self.global_every == 0

    def global_inv_freq(self, device: torch.device | str | None = None) -> Tensor:
        """θ_g = b_g^(−2i/d)/s (s = ``global_scale``), float32 (d/2,)."""
        return default_inv_freq(self.head_dim, self.global_base, device) / self.global_scale

    def prepare(self, ctx: PositionContext) -> None:
        super().prepare(ctx)  # the local layers' cos/sin (base b)
        inv_g = self.global_inv_freq(ctx.device)

        def cos_sin(pos: Tensor) -> tuple[Tensor, Tensor]:
            ang = rope_angles(pos, inv_g)
            return ang.cos(), ang.sin()

        self.put_cos_sin(ctx, cos_sin, prefix="global_")

        def window_bias(c: PositionContext) -> Tensor:  # built per context, so a query chunk gets its rows
            near = (c.q_pos[:, None] - c.k_pos[None, :]) < self.window
            zero = torch.zeros(near.shape, dtype=torch.float32, device=c.device)
            return zero.masked_fill(~near, float("-inf")).expand(self.num_heads, -1, -1)

        ctx.put_lazy("bias", window_bias, q_dim=-2, k_dim=-1)

    def rotate(self, q: Tensor, k: Tensor, ctx: PositionContext, layer: int = 0) -> tuple[Tensor, Tensor]:
        if not self.is_global(layer):
            return super().rotate(q, k, ctx, layer)
        return (rotate_pairs(q, ctx.get("global_cos_q"), ctx.get("global_sin_q")),
                rotate_pairs(k, ctx.get("global_cos_k"), ctx.get("global_sin_k")))

    def bias(self, ctx: PositionContext, layer: int = 0) -> Tensor | None:
        return None if self.is_global(layer) else ctx.get("bias")

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", base={self.base}, global_base={self.global_base}, "
                f"global_every={self.global_every}, window={self.window}, global_scale={self.global_scale}")
