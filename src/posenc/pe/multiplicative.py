"""Multiplicative position encodings beyond RoPE's rotation: polar (PoPE) and accumulated Householder (PaTH).

Both define the logit as a bilinear form q_iᵀ M_ij k_j that is not a plain rotation of q and k by their own
positions, so both override :meth:`~posenc.pe.base.PositionalEncoding.logits` (explicit attention path):

* :class:`PoPE`: every head dimension becomes a complex number with magnitude softplus(x) (content) and phase
  position × θ_c (position), so q·k has d terms instead of d/2 pairs;
* :class:`PaTH`: M_ij = H_i H_{i−1} ⋯ H_{j+1}, a product of data-dependent Householder-like matrices
  H_t = I − β_t w_t w_tᵀ along the path from key j to query i, computed exactly with the blockwise UT
  transform (:func:`path_logits`).

Conventions: logits are scaled by 1/√d (d = head_dim); angles in float32.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from posenc.pe.base import PositionalEncoding, PositionContext, register

__all__ = ["PoPE", "pope_frequencies", "PaTH", "path_logits", "path_key_ends", "PATH_BLOCK"]


def _is_num(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# ---------------------------------------------------------------------- PoPE
def pope_frequencies(head_dim: int, base: float, device: torch.device | str | None = None) -> Tensor:
    """θ_c = base^(−c/d) for c = 0..d−1, float32 (d,): one frequency per head dimension."""
    return base ** -(torch.arange(head_dim, dtype=torch.float32, device=device) / head_dim)


@register
class PoPE(PositionalEncoding):
    """Polar Coordinate Position Embeddings (Gopalakrishnan, Csordás, Schmidhuber, Mozer, "Decoupling the
    'What' and 'Where' With Polar Coordinate Positional Embeddings", arXiv 2509.10534).

    Each of the d components c of q and k is a complex number with magnitude μ = softplus(x_c) (the content,
    "what") and phase p·θ_c (the position, "where"); a learnable phase bias δ_{h,c} is added to the keys'
    phase. The logit is the real part of the Hermitian product,

        a_ij = Σ_c softplus(q_ic) softplus(k_jc) cos((i − j)·θ_c − δ_{h,c}) / √d,

    so content never shifts the phase, unlike RoPE where a pair's own angle adds to the rotation. Frequencies
    θ_c = ``base``^(−c/d) (d frequencies, not d/2), ``base`` 10⁴; δ starts at 0 and is clamped to [−2π, 0]
    (``phase_bias`` False removes it). The clamp range, the zero initialisation and δ's place on the keys
    follow the PoPE-pytorch port (github.com/lucidrains/PoPE-pytorch); the paper describes δ as an optional
    learnable per-frequency bias; no official code was found. Computed as two real matrix products of width d
    (cos and sin parts), i.e. twice the work of q·kᵀ.
    """

    id = "pope"
    relative = True
    learnable = True

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, base: float = 10000.0,
                 phase_bias: bool = True) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len)
        self._check("base", base, _is_num(base) and base > 1, "a number > 1")
        self._check("phase_bias", phase_bias, isinstance(phase_bias, bool), "a bool")
        self.base = float(base)
        self.register_buffer("theta", pope_frequencies(head_dim, self.base), persistent=False)
        self.delta = nn.Parameter(torch.zeros(num_heads, head_dim)) if phase_bias else None

    def prepare(self, ctx: PositionContext) -> None:
        theta = self.theta.to(ctx.device)
        ctx.put("pope_phase_q", ctx.q_pos.float()[:, None] * theta, q_dim=0)  # (T, d)
        ctx.put("pope_phase_k", ctx.k_pos.float()[:, None] * theta, k_dim=0)  # (S, d)

    def logits(self, q: Tensor, k: Tensor, ctx: PositionContext, layer: int = 0) -> Tensor:
        mq, mk = F.softplus(q.float()), F.softplus(k.float())  # magnitudes (B, H, T, d), (B, H, S, d)
        pq, pk = ctx.get("pope_phase_q"), ctx.get("pope_phase_k")[None]  # (T, d), (1, S, d)
        if self.delta is not None:
            pk = pk + self.delta.float().clamp(-2 * math.pi, 0.0)[:, None, :]  # (H, S, d)
        re = (mq * pq.cos()) @ (mk * pk.cos()).transpose(-2, -1)
        im = (mq * pq.sin()) @ (mk * pk.sin()).transpose(-2, -1)
        return (re + im) * q.size(-1) ** -0.5


# ---------------------------------------------------------------------- PaTH
#: Key block of the blockwise algorithm (one PATH_BLOCK × PATH_BLOCK triangular solve per block). The work is
#: O(T·S·(d + PATH_BLOCK)) plus one Python step per block; 32 was the fastest of 16/32/64 on CPU at 64 and 512 tokens.
PATH_BLOCK = 32


def path_key_ends(q_pos: Tensor, k_pos: Tensor) -> Tensor:
    """e_i = index of the last key with position ≤ q_pos[i] (keys in increasing order), −1 if none: (T,) int64."""
    return (k_pos[None, :] <= q_pos[:, None]).sum(-1) - 1


def path_logits(q: Tensor, k: Tensor, w: Tensor, beta: Tensor, ends: Tensor, block: int = PATH_BLOCK) -> Tensor:
    """PaTH logits q_iᵀ (H_{e_i} ⋯ H_{j+1}) k_j, unscaled, for H_t = I − β_t w_t w_tᵀ (Yang et al., arXiv
    2505.16381, §2.2 and §3).

    q (B, H, T, d); k, w (B, H, S, d) with unit w; beta (B, H, S); ``ends`` (T,) from :func:`path_key_ends`
    (for one sequence, e_i = i). Returns float32 (B, H, T, S); entries with j > e_i are finite and meaningless
    (the causal mask removes them).

    Exact and O(T·S·(d + block)): keys are scanned in blocks from right to left (the paper's FlashAttention-
    style scan). The product of a block's transforms has the UT form ∏ H_t = I − Wᵀ N W with
    N = (I + diag(β)·strictly_lower(W Wᵀ))⁻¹ diag(β), lower triangular; because N is triangular, the product
    over any sub-range of the block uses the same N, masked (the paper's masked UT transform). Each query
    carries a state qᵢᵀ H_{e_i} ⋯ H_{c1} (the transforms right of the current block) that is updated block by
    block; within a block, logit_ij = stateᵢ·k_j − Σ_{s ≤ e_i} Σ_{t > j} (stateᵢ·w_s) N_st (w_t·k_j).
    """
    q, k, w, beta = q.float(), k.float(), w.float(), beta.float()
    S = k.size(-2)
    ends = ends.to(q.device)
    state = q
    out = []
    for c0 in reversed(range(0, S, block)):
        c1 = min(c0 + block, S)
        n = c1 - c0
        wb, bb = w[..., c0:c1, :], beta[..., c0:c1]
        wk = torch.cat([wb, k[..., c0:c1, :]], dim=-2).transpose(-2, -1)  # (B, H, d, 2n): the block's w and k
        ww, w_k = (wb @ wk).split(n, dim=-1)  # w_s·w_t and w_t·k_j (B, H, n, n)
        # N = (I + diag(β)·strictly_lower(W Wᵀ))⁻¹ diag(β); the unit diagonal is implied (unitriangular).
        n_mat = torch.linalg.solve_triangular(bb[..., :, None] * torch.tril(ww, diagonal=-1), torch.diag_embed(bb),
                                              upper=False, unitriangular=True)
        idx = torch.arange(c0, c1, device=q.device)
        applies = (idx[None, :] <= ends[:, None]).to(q.dtype)  # (T, n): H_s is on query i's path
        after_key = (idx[:, None] > idx[None, :]).to(q.dtype)  # (n, n): t > j
        sw, sk = (state @ wk).split(n, dim=-1)  # state·w_s and state·k_j (B, H, T, n)
        an = (sw * applies) @ n_mat
        out.append(sk - an @ (w_k * after_key))
        if c0 > 0:
            state = state - an @ wb  # carry the state across this block to the next one on the left
    return torch.cat(out[::-1], dim=-1) if out else q.new_zeros(*q.shape[:-1], 0)


@register
class PaTH(PositionalEncoding):
    """PaTH attention (Yang, Shen, Wen, Tan, Mishra, Ren, Panda, Kim, "PaTH Attention: Position Encoding via
    Accumulating Householder Transformations", NeurIPS 2025, arXiv 2505.16381; code in flash-linear-attention,
    ``fla/layers/path_attn.py``).

    The logit of query i and key j is q_iᵀ (∏_{t=j+1}^{i} H_t) k_j / √d with data-dependent Householder-like
    transforms H_t = I − β_t w_t w_tᵀ, β_t = 2σ(u·x_t + b) ∈ (0, 2) (negative eigenvalues allowed) and
    w_t = L2norm(SiLU(causal depthwise conv₃(W_w x_t))) (the paper's low-rank linear layer, short convolution
    of width 3 and L2 normalisation; SiLU is the default activation of fla's ``ShortConvolution``). No other
    position signal (no RoPE).

    Deviation: the PE interface sees a layer's queries and keys, not its input x, so w_t and β_t are computed
    from the head's key k_t = W_k x_t (per head: a d×d map, the width-3 causal convolution over positions,
    SiLU and L2 normalisation for w; u_h·k_t + b_h for β) instead of from x_t. Parameters are per layer
    (``num_layers`` > 1) or shared (1), and per head. The forget gate of PaTH-FoX is not included.

    Cost: :func:`path_logits` is exact with O(T·S·(d + b)) work (key blocks of b = :data:`PATH_BLOCK` = 32)
    and a (B, H, T, S) logits tensor, looping over key blocks in Python. The paper's kernel fuses the same
    right-to-left block scan into a FlashAttention-style kernel with the UT transforms precomputed per block,
    so it never materialises the logits and keeps the cost close to FlashAttention's.
    """

    id = "path"
    learnable = True
    conv_width = 3

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, num_layers: int = 1) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len)
        self._check("num_layers", num_layers, isinstance(num_layers, int) and not isinstance(num_layers, bool)
                    and num_layers >= 1, "an int >= 1")
        self.num_layers = num_layers
        L, H, d = num_layers, num_heads, head_dim
        self.w_proj = nn.Parameter(torch.randn(L, H, d, d) * d**-0.5)  # k_t → pre-convolution w_t
        bound = 1.0 / math.sqrt(self.conv_width)  # nn.Conv1d's default init for a depthwise kernel
        self.w_conv = nn.Parameter(torch.empty(L, H, d, self.conv_width).uniform_(-bound, bound))
        self.beta_proj = nn.Parameter(torch.randn(L, H, d) * 0.02)
        self.beta_bias = nn.Parameter(torch.zeros(L, H))  # β = 2σ(0) = 1 at initialisation

    def _layer(self, layer: int) -> int:
        if self.num_layers == 1:
            return 0
        if not 0 <= layer < self.num_layers:
            raise ValueError(f"{self.id}: layer {layer} >= hyperparameter 'num_layers' ({self.num_layers})")
        return layer

    def transforms(self, k: Tensor, layer: int = 0) -> tuple[Tensor, Tensor]:
        """(w (B, H, S, d) unit vectors, β (B, H, S) in (0, 2)) of the keys ``k`` (B, H, S, d), float32."""
        ell = self._layer(layer)
        k = k.float()
        u = torch.einsum("bhsd,hed->bhse", k, self.w_proj[ell].float())  # (B, H, S, d)
        # Causal depthwise convolution of width 3 over positions (left zero padding).
        u = F.pad(u, (0, 0, self.conv_width - 1, 0))
        kernel = self.w_conv[ell].float()  # (H, d, 3): taps for positions t−2, t−1, t
        conv = sum(u[..., i:i + k.size(-2), :] * kernel[None, :, None, :, i] for i in range(self.conv_width))
        w = F.normalize(F.silu(conv), dim=-1, eps=1e-6)
        beta = 2.0 * torch.sigmoid((k * self.beta_proj[ell].float()[None, :, None, :]).sum(-1)
                                   + self.beta_bias[ell].float()[None, :, None])
        return w, beta

    def prepare(self, ctx: PositionContext) -> None:
        ctx.put("path_ends", path_key_ends(ctx.q_pos, ctx.k_pos), q_dim=0)

    def logits(self, q: Tensor, k: Tensor, ctx: PositionContext, layer: int = 0) -> Tensor:
        w, beta = self.transforms(k, layer)
        return path_logits(q, k, w, beta, ctx.get("path_ends")) * q.size(-1) ** -0.5

    def extra_repr(self) -> str:
        return super().extra_repr() + f", num_layers={self.num_layers}"
