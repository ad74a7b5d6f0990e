"""Relative PEs that act on the attention logits: the T5-bias family, Shaw, and content-dependent biases.

Conventions (the book's conventions page): ``rel = i − j`` (query position minus key position, ≥ 0 under the
causal mask); logits are ``q·kᵀ/√d + bias`` with the bias added *after* the 1/√d scaling; :meth:`bias`
returns float32 ``(H, T, S)`` (``(B, H, T, S)`` for content-dependent ones). Entries above the diagonal
(future keys) are finite and ignored: the model masks them. Biases are computed once per forward by the PE's
``prepare`` into the position context (:class:`BiasPE`) and are shared by all layers (one set of parameters
per model, as T5 shares its table across layers); methods that need q or k override
:meth:`~posenc.pe.base.PositionalEncoding.logits`. Learned per-entry networks (FIRE, DAPE) run in float32
whatever the dtype of their parameters, so a pure-bf16 model works.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from posenc.pe.base import PositionalEncoding, PositionContext, register

__all__ = [
    "BiasPE",
    "alibi_slopes",
    "t5_bucket",
    "relative_distance",
    "Shaw",
    "T5Bias",
    "TISA",
    "ALiBi",
    "KerpleLog",
    "KerplePower",
    "Sandwich",
    "FIRE",
    "DAPE",
    "DAPEv2",
    "CABLE",
    "FoX",
]

_ROW_CHUNK = 256  # rows of the (T, S) map processed at once by the per-entry MLPs (FIRE, DAPE)


def relative_distance(q_pos: Tensor, k_pos: Tensor) -> Tensor:
    """rel[i, j] = q_pos[i] − k_pos[j], float32 (T, S)."""
    return q_pos.to(torch.float32)[:, None] - k_pos.to(torch.float32)[None, :]


def offset_bias(fn: Callable[[Tensor], Tensor], q_pos: Tensor, k_pos: Tensor) -> Tensor:
    """A per-head function of the offset, ``fn(rel (N,)) -> (H, N)``, as a bias (H, T, S).

    A relative bias depends on i − j alone, so at integer positions it takes at most T + S − 1 distinct
    values: ``fn`` is evaluated on those offsets only and gathered, turning O(H·T·S) evaluations of ``fn``
    into O(H·(T + S)) plus one gather. Fractional positions (e.g. interpolated ones) give the same values
    through ``fn`` on the full grid.
    """
    qf, kf = q_pos.to(torch.float32), k_pos.to(torch.float32)
    if qf.numel() and kf.numel() and torch.equal(qf, qf.round()) and torch.equal(kf, kf.round()):
        lo = int(qf.min() - kf.max())
        hi = int(qf.max() - kf.min())
        table = fn(torch.arange(lo, hi + 1, dtype=torch.float32, device=q_pos.device))  # (H, N)
        idx = (qf[:, None] - kf[None, :]).long() - lo  # (T, S)
        return table[:, idx]
    rel = relative_distance(q_pos, k_pos)
    return fn(rel.flatten()).view(-1, *rel.shape)


def alibi_slopes(num_heads: int) -> Tensor:
    """ALiBi head slopes (Press et al., ICLR 2022, §3): m_h = 2^(−8h/H), h = 1..H, for H a power of two.

    Otherwise (the paper's rule, as in its released code): the slopes of the nearest lower power of two n,
    then every other slope of the 2n sequence until there are H. Float32 (H,).
    """
    if not isinstance(num_heads, int) or num_heads <= 0:
        raise ValueError(f"alibi_slopes: 'num_heads' must be a positive int, got {num_heads!r}")

    def power_of_two(n: int) -> list[float]:
        return [2.0 ** (-8.0 * h / n) for h in range(1, n + 1)]

    n = 2 ** math.floor(math.log2(num_heads))
    slopes = power_of_two(n)
    if n < num_heads:
        slopes += power_of_two(2 * n)[0::2][: num_heads - n]
    return torch.tensor(slopes, dtype=torch.float32)


def t5_bucket(rel: Tensor, num_buckets: int = 32, max_distance: int = 128) -> Tensor:
    """T5's causal (unidirectional) bucket of a distance rel = i − j (Raffel et al. 2020; HF convention).

    Distances below num_buckets/2 are their own bucket; larger ones are log-spaced up to ``max_distance``
    and everything beyond shares the last bucket (num_buckets − 1). Negative distances (future keys) map to
    bucket 0. HF's ``_relative_position_bucket(key − query, bidirectional=False)`` gives the same buckets.
    """
    n = rel.round().long().clamp(min=0)
    max_exact = num_buckets // 2
    is_small = n < max_exact
    large = max_exact + (
        torch.log(n.float().clamp(min=1) / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact)
    ).long()
    large = large.clamp(max=num_buckets - 1)
    return torch.where(is_small, n, large)


def _rowwise(fn: Callable[[Tensor], Tensor], rows: Tensor, dim: int) -> Tensor:
    """Apply ``fn`` to chunks of ``rows`` along ``dim`` and concatenate; with autograd, each chunk is
    checkpointed so the peak memory of a per-entry MLP is one chunk, not the whole (T, S) map."""
    if rows.size(dim) <= _ROW_CHUNK:
        return fn(rows)
    outs = []
    for chunk in rows.split(_ROW_CHUNK, dim=dim):
        if torch.is_grad_enabled() and chunk.requires_grad:
            outs.append(checkpoint(fn, chunk, use_reentrant=False))
        else:
            outs.append(fn(chunk))
    return torch.cat(outs, dim=dim)


def _linear32(x: Tensor, layer: nn.Linear) -> Tensor:
    """``layer(x)`` computed in float32 whatever the parameters' dtype (autocast still applies)."""
    bias = None if layer.bias is None else layer.bias.float()
    return F.linear(x.float(), layer.weight.float(), bias)


class BiasPE(PositionalEncoding):
    """A PE whose position enters only as a logit bias, built once per forward by :meth:`compute_bias`."""

    def compute_bias(self, ctx: PositionContext) -> Tensor:
        """The float32 bias (H, T, S) or (B, H, T, S) for the context's positions."""
        raise NotImplementedError

    def prepare(self, ctx: PositionContext) -> None:
        ctx.put_lazy("bias", self.compute_bias, q_dim=-2, k_dim=-1)

    def bias(self, ctx: PositionContext, layer: int = 0) -> Tensor | None:
        return ctx.get("bias")


# ---------------------------------------------------------------------- Shaw, T5, TISA


@register
class Shaw(PositionalEncoding):
    """Relative position representations (Shaw, Uszkoreit, Vaswani, NAACL 2018, Eq. 4–5).

    e_ij = q_i·(k_j + a^K_{ij})ᵀ/√d with a^K_{ij} = w^K_{clip(i − j, −k, k)}: 2k + 1 learned key vectors of
    size head_dim, shared across heads (as in the paper) and layers. Only the key term is implemented; the
    paper's value vectors a^V are not (the PE interface changes logits, not values). Default clip k = 16;
    initialised N(0, 0.02²). Distances beyond k share the clipped vector, so no unseen vector is ever used.
    """

    id = "shaw"
    relative = True
    learnable = True

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, max_relative_position: int = 16) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len)
        k = max_relative_position
        self._check("max_relative_position", k, isinstance(k, int) and k >= 0, "an int >= 0")
        self.max_relative_position = k
        self.rel_keys = nn.Parameter(torch.randn(2 * k + 1, head_dim) * 0.02)

    def index(self, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        """Table row clip(i − j, −k, k) + k for every (i, j): (T, S) int64."""
        k = self.max_relative_position
        return relative_distance(q_pos, k_pos).round().long().clamp(-k, k) + k

    def prepare(self, ctx: PositionContext) -> None:
        ctx.put("shaw_idx", self.index(ctx.q_pos, ctx.k_pos), q_dim=-2, k_dim=-1)

    def logits(self, q: Tensor, k: Tensor, ctx: PositionContext, layer: int = 0) -> Tensor:
        qf = q.float()
        att = qf @ k.float().transpose(-2, -1)  # (B, H, T, S)
        qa = qf @ self.rel_keys.float().t()  # (B, H, T, 2k+1): q_i·w_r for every r
        idx = ctx.get("shaw_idx").expand(*qa.shape[:2], -1, -1)
        return (att + qa.gather(-1, idx)) / math.sqrt(q.size(-1))


@register
class T5Bias(BiasPE):
    """T5 relative bias (Raffel et al., JMLR 2020, §2.1): logits + β[h, bucket(i − j)].

    One learned scalar per head and bucket, causal bucketing (HF-compatible, see :func:`t5_bucket`) with
    ``num_buckets`` = 32 and ``max_distance`` = 128. One table shared by all layers, as in T5. Initialised
    N(0, d_model^−1) as in HF's T5. (T5 itself does not scale q·kᵀ by 1/√d; here the bias is added after the
    project-wide 1/√d scaling.)
    """

    id = "t5_bias"
    relative = True
    learnable = True

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, num_buckets: int = 32,
                 max_distance: int = 128) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len)
        self._check("num_buckets", num_buckets, isinstance(num_buckets, int) and num_buckets >= 2, "an int >= 2")
        self._check("max_distance", max_distance,
                    isinstance(max_distance, int) and max_distance > num_buckets // 2, "an int > num_buckets/2")
        self.num_buckets, self.max_distance = num_buckets, max_distance
        self.table = nn.Parameter(torch.randn(num_buckets, num_heads) * self.d_model**-0.5)

    def compute_bias(self, ctx: PositionContext) -> Tensor:
        def per_offset(rel: Tensor) -> Tensor:  # (N,) → (H, N)
            return self.table.float()[t5_bucket(rel, self.num_buckets, self.max_distance)].T

        return offset_bias(per_offset, ctx.q_pos, ctx.k_pos)


@register
class TISA(BiasPE):
    """TISA, translation-invariant self-attention (Wennberg & Henter, ACL 2021, Eq. 6).

    Per head h: f_h(Δ) = Σ_{s=1..S} a_{h,s}·exp(−|b_{h,s}|·(Δ − c_{h,s})²) with Δ = i − j, added to the
    logits. S = ``num_kernels`` radial-basis kernels (default 5, to be checked against the paper). Init (this
    implementation's choice): a = 0 (starts as NoPE), centres c evenly spaced over [0, train_len), widths
    |b| = 1/spacing², so that the kernels tile the training range; far distances decay to 0.
    """

    id = "tisa"
    relative = True
    learnable = True

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, num_kernels: int = 5) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len)
        self._check("num_kernels", num_kernels, isinstance(num_kernels, int) and num_kernels > 0, "a positive int")
        self.num_kernels = num_kernels
        spacing = max(train_len / num_kernels, 1.0)
        self.amplitude = nn.Parameter(torch.zeros(num_heads, num_kernels))
        self.sharpness = nn.Parameter(torch.full((num_heads, num_kernels), 1.0 / spacing**2))
        centres = torch.arange(num_kernels, dtype=torch.float32) * spacing
        self.centre = nn.Parameter(centres[None, :].repeat(num_heads, 1))

    def compute_bias(self, ctx: PositionContext) -> Tensor:
        a, b, c = (p.float()[:, None, :] for p in (self.amplitude, self.sharpness, self.centre))

        def per_offset(rel: Tensor) -> Tensor:  # (N,) → (H, N)
            return (a * torch.exp(-b.abs() * (rel[None, :, None] - c) ** 2)).sum(-1)

        return offset_bias(per_offset, ctx.q_pos, ctx.k_pos)


# ---------------------------------------------------------------------- ALiBi, KERPLE, Sandwich


@register
class ALiBi(BiasPE):
    """ALiBi (Press, Smith, Lewis, ICLR 2022, Eq. in §3): logits − m_h·(i − j).

    Fixed slopes m_h = 2^(−8h/H) with the paper's rule for non-powers of two (:func:`alibi_slopes`); the bias
    is not scaled by 1/√d and the diagonal is 0. No parameters, no maximum length. On a GPU the model can
    compute the bias inside FlexAttention from positions (:meth:`score_mod`) instead of reading a mask.
    """

    id = "alibi"
    relative = True
    static_bias = True

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len)
        self.register_buffer("slopes", alibi_slopes(num_heads), persistent=False)

    def compute_bias(self, ctx: PositionContext) -> Tensor:
        rel = relative_distance(ctx.q_pos, ctx.k_pos)
        return -self.slopes.to(rel.device)[:, None, None] * rel[None]

    def score_mod(self, ctx: PositionContext, layer: int = 0) -> Callable[..., Tensor]:
        slopes, q_pos, k_pos = self.slopes.to(ctx.device), ctx.q_pos.float(), ctx.k_pos.float()

        def alibi(score: Tensor, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
            return score - slopes[h] * (q_pos[q_idx] - k_pos[kv_idx])

        return alibi


_KERPLE_EPS = 1e-2  # lower bound of r1, r2 in the released KERPLE code


class _Kerple(BiasPE):
    """KERPLE's shared part (Chi et al., NeurIPS 2022): a bias −k_h(|i − j|) with learnable r1_h, r2_h > 0.

    As in the authors' code, r1 ~ U(0, ``r1_init``) and r2 ~ U(0, ``r2_init``) at init, and the forward uses
    values clamped to [0.01, ``r2_max``] (the code clamps the parameters in place, which gives the same
    logits). Subclasses give the kernel.
    """

    relative = True
    learnable = True
    r1_init: ClassVar[float]
    r2_init: ClassVar[float]
    r2_max: ClassVar[float | None] = None

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len)
        self.r1 = nn.Parameter(torch.rand(num_heads) * self.r1_init)
        self.r2 = nn.Parameter(torch.rand(num_heads) * self.r2_init)

    def kernel(self, d: Tensor, r1: Tensor, r2: Tensor) -> Tensor:
        """The bias at distances d (1, N) ≥ 0 for per-head r1, r2 (H, 1) → (H, N)."""
        raise NotImplementedError

    def compute_bias(self, ctx: PositionContext) -> Tensor:
        r1 = self.r1.float().clamp(min=_KERPLE_EPS)[:, None]
        r2 = self.r2.float().clamp(min=_KERPLE_EPS, max=self.r2_max)[:, None]
        return offset_bias(lambda rel: self.kernel(rel.abs()[None], r1, r2), ctx.q_pos, ctx.k_pos)


@register
class KerpleLog(_Kerple):
    """KERPLE, logarithmic variant (Chi et al., NeurIPS 2022, Eq. in §4): logits − r1_h·log(1 + r2_h·|i − j|).

    r1, r2 > 0 per head; r1 ~ U(0, 2), r2 ~ U(0, 1) at init, as in the authors' ParallelKerpleLog.
    """

    id = "kerple_log"
    r1_init, r2_init = 2.0, 1.0

    def kernel(self, d: Tensor, r1: Tensor, r2: Tensor) -> Tensor:
        return -r1 * torch.log1p(r2 * d)


@register
class KerplePower(_Kerple):
    """KERPLE, power variant (Chi et al., NeurIPS 2022): logits − r1_h·|i − j|^(r2_h), r1 > 0, 0 < r2 ≤ 2.

    r1 ~ U(0, 1), r2 ~ U(0, 2) at init and 0.01 ≤ r2 ≤ 2, as in the authors' ParallelKerplePower. ALiBi is
    r2 = 1 with fixed r1.
    """

    id = "kerple_power"
    r1_init, r2_init, r2_max = 1.0, 2.0, 2.0

    def kernel(self, d: Tensor, r1: Tensor, r2: Tensor) -> Tensor:
        # |d|^r2 through exp(r2·log d) with a safe log, so d = 0 gives 0 and a finite gradient in r2.
        return -r1 * torch.where(d > 0, torch.exp(r2 * torch.log(d.clamp(min=1e-6))), torch.zeros_like(d))


@register
class Sandwich(BiasPE):
    """Sandwich (Chi, Fan, Rudnicky, Ramadge, ACL 2023, §5): the position–position term p_iᵀp_j of the
    sinusoidal APE, kept alone as a parameter-free relative bias.

    p_iᵀp_j = Σ_{k=1..d̄/2} cos((i − j)·ω_k), ω_k = 10000^(−2k/d̄). Following the NeMo implementation of the
    paper, the bias subtracts d̄/2 (so the diagonal is 0) and is divided per head by an ALiBi-like compression
    ratio h·8/H (h = 1..H): bias_h = (Σ_k cos((i − j)ω_k) − d̄/2)/(8h/H). ``sandwich_dim`` d̄ defaults to
    ``head_dim`` (as NeMo passes the per-head size); the paper's exact d̄ was not re-checked.
    """

    id = "sandwich"
    relative = True
    static_bias = True

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, sandwich_dim: int | None = None) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len)
        dbar = head_dim if sandwich_dim is None else sandwich_dim
        self._check("sandwich_dim", sandwich_dim, isinstance(dbar, int) and dbar > 0 and dbar % 2 == 0,
                    "a positive even int (or None for head_dim)")
        self.sandwich_dim = dbar
        k = torch.arange(1, dbar // 2 + 1, dtype=torch.float32)
        self.register_buffer("inv_freq", 10000.0 ** (-2.0 * k / dbar), persistent=False)
        ratio = torch.arange(1, num_heads + 1, dtype=torch.float32) * 8.0 / num_heads
        self.register_buffer("ratio", ratio, persistent=False)

    def compute_bias(self, ctx: PositionContext) -> Tensor:
        def per_offset(rel: Tensor) -> Tensor:  # (N,) → (H, N)
            s = torch.cos(rel[:, None] * self.inv_freq.to(rel.device)).sum(-1) - self.sandwich_dim / 2
            return s[None] / self.ratio.to(rel.device)[:, None]

        return offset_bias(per_offset, ctx.q_pos, ctx.k_pos)


# ---------------------------------------------------------------------- FIRE


@register
class FIRE(BiasPE):
    """FIRE, functional interpolation for relative positions (Li et al., ICLR 2024, Eq. 6–7).

    b_h(i, j) = f_θ(ψ(i − j) / (ψ(max(L_thr, i)) + ε))_h with ψ(x) = log(|c|·x + 1): the normalised distance
    stays in [0, 1] at every length ("progressive interpolation"). f_θ: MLP 1 → ``mlp_width`` → H with ReLU,
    shared by layers. Parameterisation of the reference implementation (the paper's appendix code, copied in
    the public ports, e.g. mcleish7/arithmetic ``cramming/architectures/embeddings.py``): c is learned directly
    and used as |c| (initial value ``c``); the threshold is L_thr = |m·L₀| with a fixed constant L₀ = ``l_thr``
    and a learned multiplier m initialised at 1, so L_thr starts at ``l_thr`` but, under Adam, moves by about
    L₀ times the learning rate per step instead of the learning rate; ε = 1e-6. Defaults (mlp_width = 32,
    c = 0.1, L₀ = 512) as in that code. Depends on i, not only on i − j, so it is not ``relative``. The per-entry
    MLP is evaluated in checkpointed row chunks.
    """

    id = "fire"
    learnable = True
    #: ε added to the normaliser (the reference's ``eps``).
    eps: ClassVar[float] = 1e-6

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, mlp_width: int = 32, c: float = 0.1,
                 l_thr: float = 512.0) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len)
        self._check("mlp_width", mlp_width, isinstance(mlp_width, int) and mlp_width > 0, "a positive int")
        self._check("c", c, isinstance(c, (int, float)) and math.isfinite(c) and c > 0, "a finite number > 0")
        self._check("l_thr", l_thr, isinstance(l_thr, (int, float)) and math.isfinite(l_thr) and l_thr >= 1,
                    "a finite number >= 1")
        self.mlp_width = mlp_width
        self.c = nn.Parameter(torch.tensor(float(c)))
        self.register_buffer("l_thr", torch.tensor(float(l_thr)))  # L₀: fixed, as in the reference
        self.l_multiplier = nn.Parameter(torch.tensor(1.0))  # m: L_thr = |m·L₀|
        self.fc1 = nn.Linear(1, mlp_width)
        self.fc2 = nn.Linear(mlp_width, num_heads)

    def threshold(self) -> Tensor:
        """The current L_thr = |m·L₀| (a 0-d float32 tensor)."""
        return (self.l_multiplier.float() * self.l_thr.float()).abs()

    def normalised(self, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        """ψ(i − j)/(ψ(max(L_thr, i)) + ε) for every (i, j): (T, S) float32, 0 for future keys."""
        c = self.c.float().abs()
        rel = relative_distance(q_pos, k_pos).clamp(min=0)  # future keys: 0 (masked anyway, keeps log finite)
        i = q_pos.to(torch.float32)[:, None]
        denom = torch.log(c * torch.maximum(self.threshold(), i) + 1) + self.eps
        return torch.log(c * rel + 1) / denom

    def compute_bias(self, ctx: PositionContext) -> Tensor:
        def mlp(u: Tensor) -> Tensor:  # (t, S) → (t, S, H)
            return _linear32(F.relu(_linear32(u[..., None], self.fc1)), self.fc2)

        return _rowwise(mlp, self.normalised(ctx.q_pos, ctx.k_pos), dim=0).permute(2, 0, 1)


# ---------------------------------------------------------------------- DAPE, DAPE v2


@register
class DAPE(PositionalEncoding):
    """DAPE (Zheng et al., NeurIPS 2024; "CAPE" in arXiv 2405.14722 v1, Eq. 3): the bias adapts to content.

    A = S + B + f(S, B), with S = q·kᵀ/√d, B the base bias (KERPLE-log, :class:`KerpleLog`, by default) and f
    a two-layer MLP with LeakyReLU applied at every (i, j) across heads: [S_{1..H}, B_{1..H}] (2H) →
    ``mlp_width`` → H. The residual S + B keeps the base bias at initialisation (f starts small). f is shared by
    layers. Default mlp_width = 32 (as on the method card). Content-dependent: not ``relative``.
    """

    id = "dape"
    learnable = True

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, mlp_width: int = 32) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len)
        self._check("mlp_width", mlp_width, isinstance(mlp_width, int) and mlp_width > 0, "a positive int")
        self.mlp_width = mlp_width
        self.base_pe = KerpleLog(head_dim=head_dim, num_heads=num_heads, train_len=train_len)
        self.fc1 = nn.Linear(2 * num_heads, mlp_width)
        self.fc2 = nn.Linear(mlp_width, num_heads)
        nn.init.normal_(self.fc1.weight, std=0.02)
        nn.init.zeros_(self.fc1.bias)
        nn.init.normal_(self.fc2.weight, std=0.02)
        nn.init.zeros_(self.fc2.bias)

    def prepare(self, ctx: PositionContext) -> None:
        self.base_pe.prepare(ctx.child_for())  # the base bias, built once per forward in a child context

    def logits(self, q: Tensor, k: Tensor, ctx: PositionContext, layer: int = 0) -> Tensor:
        s = (q.float() @ k.float().transpose(-2, -1)) / math.sqrt(q.size(-1))  # (B, H, T, S)
        b = self.base_pe.bias(_child(ctx)).expand_as(s)
        feats = torch.cat((s, b), dim=1).permute(0, 2, 3, 1)  # (B, T, S, 2H)

        def mlp(x: Tensor) -> Tensor:
            return _linear32(F.leaky_relu(_linear32(x, self.fc1)), self.fc2)

        return s + b + _rowwise(mlp, feats, dim=1).permute(0, 3, 1, 2)


@register
class DAPEv2(PositionalEncoding):
    """DAPE V2 (Zheng et al., arXiv 2410.04798): attention scores treated as feature maps and refined by a
    convolution.

    A = S + B + Conv([S, B]) with S = q·kᵀ/√d, B the KERPLE-log base bias and Conv a 2-D convolution from 2H
    to H channels over the (i, j) map with a ``kernel_size`` × ``kernel_size`` kernel, shared by layers.
    Causality: future entries (j > i) are zeroed before the convolution and the rows are padded only on the
    top (rows i − K + 1..i), so entry (i, j) never sees a later query or a future key. Columns are padded
    symmetrically. Default kernel 3 (not re-checked). The convolution starts at zero (the model starts as
    KERPLE-log).
    """

    id = "dape_v2"
    learnable = True

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, kernel_size: int = 3) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len)
        self._check("kernel_size", kernel_size, isinstance(kernel_size, int) and kernel_size >= 1
                    and kernel_size % 2 == 1, "a positive odd int")
        self.kernel_size = kernel_size
        self.logits_halo = kernel_size - 1  # rows above a query chunk that the convolution reads
        self.base_pe = KerpleLog(head_dim=head_dim, num_heads=num_heads, train_len=train_len)
        self.conv = nn.Conv2d(2 * num_heads, num_heads, kernel_size)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def prepare(self, ctx: PositionContext) -> None:
        self.base_pe.prepare(ctx.child_for())

    def logits(self, q: Tensor, k: Tensor, ctx: PositionContext, layer: int = 0) -> Tensor:
        s = (q.float() @ k.float().transpose(-2, -1)) / math.sqrt(q.size(-1))  # (B, H, T, S)
        b = self.base_pe.bias(_child(ctx)).expand_as(s)
        feats = torch.cat((s, b), dim=1).masked_fill(~ctx.causal_mask(), 0.0)  # no future content enters the conv
        kk = self.kernel_size
        feats = F.pad(feats, (kk // 2, kk // 2, kk - 1, 0))  # (left, right, top, bottom): causal in rows
        w, bias = self.conv.weight.float(), self.conv.bias.float()
        return s + b + F.conv2d(feats, w, bias)


# ---------------------------------------------------------------------- CABLE, FoX (data-dependent decay)


def _cumulative_decay(log_step: Tensor, ctx: PositionContext) -> Tensor:
    """D_ij = Σ_{l=j+1..i} log_step_l from per-key log steps (B, H, S) → (B, H, T, S), float32.

    Every query is one of the keys (self-attention): query i is the key at the same position. Computed as
    c_i − c_j with c the cumulative sum, so masked future entries hold c_i − c_j > 0 (finite).
    """
    c = torch.cumsum(log_step.float(), dim=-1)  # (B, H, S)
    cq = c[..., torch.searchsorted(ctx.k_pos, ctx.q_pos)]  # (B, H, T)
    return cq[..., :, None] - c[..., None, :]


def _child(ctx: PositionContext) -> PositionContext:
    if ctx.child is None:
        raise ValueError("the position context has no child context: build it with pe.context(...)")
    return ctx.child


@register
class CABLE(PositionalEncoding):
    """CABLE, context-aware biases (Veisi, Amirzadeh, Mansourian, arXiv 2503.08067, and the released code).

    Every token t gets a non-negative per-head bias step β_t^h = softplus(z_t^h) and the logits get
    B_ij = −Σ_{l=j+1..i} β_l^h (a cumulative sum, so the bias decreases with distance like ALiBi, with a
    slope that depends on the tokens in between). The paper computes z_t = W·x_t + b from the layer input
    x_t; the PE hooks see q and k but not x, so here z_t^h = w_h·k_t^h + b_h from the key vector (a linear
    function of x_t). Init: w ~ N(0, 0.02²), b = 0, so β ≈ log 2 per token at the start (as with the code's
    zero-initialised linear layer). Logits are q·kᵀ/√d + B (the released code uses no 1/√d factor).
    """

    id = "cable"
    learnable = True

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len)
        self.weight = nn.Parameter(torch.randn(num_heads, head_dim) * 0.02)
        self.bias_ = nn.Parameter(torch.zeros(num_heads))

    def decay(self, k: Tensor, ctx: PositionContext) -> Tensor:
        z = torch.einsum("bhsd,hd->bhs", k.float(), self.weight.float()) + self.bias_.float()[:, None]
        return _cumulative_decay(-F.softplus(z), ctx)

    def logits(self, q: Tensor, k: Tensor, ctx: PositionContext, layer: int = 0) -> Tensor:
        att = (q.float() @ k.float().transpose(-2, -1)) / math.sqrt(q.size(-1))
        return att + self.decay(k, ctx)


@register
class FoX(PositionalEncoding):
    """Forgetting Transformer, FoX (Lin, Nikishin, He, Courville, ICLR 2025, Eq. 5–7). No other PE.

    Per-head forget gate f_t = σ(w_h·x_t + b_h) and logits q_i·k_j/√d + D_ij with
    D_ij = Σ_{l=j+1..i} log f_l (computed as a cumulative sum of log f: c_i − c_j). The paper computes the gate
    from the layer input x_t; the PE hooks see q and k but not x, so here the gate is computed from the key
    vector, f_t^h = σ(w_h·k_t^h + b_h) (k_t is a linear function of x_t). Init: w ~ N(0, 0.02²),
    b = ``gate_bias_init`` (0 by default, as the released code's plain linear layer). Note that
    log σ(z) = −softplus(−z): FoX and :class:`CABLE` parameterise the same family of decays.
    """

    id = "fox"
    learnable = True

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, gate_bias_init: float = 0.0) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len)
        self._check("gate_bias_init", gate_bias_init, isinstance(gate_bias_init, (int, float))
                    and math.isfinite(gate_bias_init), "a finite number")
        self.weight = nn.Parameter(torch.randn(num_heads, head_dim) * 0.02)
        self.bias_ = nn.Parameter(torch.full((num_heads,), float(gate_bias_init)))

    def log_forget(self, k: Tensor) -> Tensor:
        """log f_t per head and key: (B, H, S) float32."""
        z = torch.einsum("bhsd,hd->bhs", k.float(), self.weight.float()) + self.bias_.float()[:, None]
        return F.logsigmoid(z)

    def logits(self, q: Tensor, k: Tensor, ctx: PositionContext, layer: int = 0) -> Tensor:
        att = (q.float() @ k.float().transpose(-2, -1)) / math.sqrt(q.size(-1))
        return att + _cumulative_decay(self.log_forget(k), ctx)
