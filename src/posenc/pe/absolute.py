"""Absolute positional encodings: added to (or multiplied into) the token embeddings before the first block.

Every class here overrides :meth:`~posenc.pe.base.PositionalEncoding.embed` (and SHAPE also
:meth:`~posenc.pe.base.PositionalEncoding.positions`). BiPE and CoPE, which the survey files under "other RPEs",
also live here because BiPE's intra-segment part is an absolute encoding and both read the token ids.

Conventions: positions are float tensors ``(T,)``; ``d_model = head_dim · num_heads``; relative distances are
``rel = i − j`` (query minus key); biases are added after the 1/√d scaling of q·kᵀ.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from posenc.pe.base import PositionalEncoding, PositionContext, register
from posenc.pe.bias import alibi_slopes

__all__ = [
    "sinusoidal_table",
    "Sinusoidal",
    "Learned",
    "SHAPE",
    "CAPE",
    "ComplexOrder",
    "Floater",
    "BiPE",
    "CoPE",
    "segment_positions",
    "SEGMENT_BYTES",
]


def sinusoidal_table(pos: Tensor, dim: int, base: float = 10000.0) -> Tensor:
    """Vaswani et al. (2017) §3.5, interleaved: PE(p, 2i) = sin(p·ω_i), PE(p, 2i+1) = cos(p·ω_i).

    ω_i = base^(−2i/dim). ``pos`` may have any shape (…); returns (…, dim) in float32.
    """
    if dim % 2:
        raise ValueError(f"sinusoidal_table: 'dim' must be even, got {dim}")
    inv_freq = base ** (-torch.arange(0, dim, 2, dtype=torch.float32, device=pos.device) / dim)  # (dim/2,)
    ang = pos.to(torch.float32)[..., None] * inv_freq  # (…, dim/2)
    return torch.stack((ang.sin(), ang.cos()), dim=-1).flatten(-2)


# ---------------------------------------------------------------------- sinusoidal, learned


@register
class Sinusoidal(PositionalEncoding):
    """Sinusoidal APE (Vaswani et al., NeurIPS 2017, §3.5): x_t + PE(pos_t).

    PE(pos, 2i) = sin(pos/base^(2i/d)), PE(pos, 2i+1) = cos(pos/base^(2i/d)) over d = d_model (interleaved
    layout). Added to the token embeddings once, before the first block; functional, so it has no maximum
    length (it is defined for any float position, fractional or shifted).
    """

    id = "sinusoidal"

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, base: float = 10000.0) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len)
        self._check("base", base, isinstance(base, (int, float)) and base > 1, "a number > 1")
        self._check("head_dim", head_dim, self.d_model % 2 == 0, "such that d_model is even")
        self.base = float(base)

    def table(self, pos: Tensor) -> Tensor:
        """PE for positions ``pos`` (…) → (…, d_model), float32."""
        return sinusoidal_table(pos, self.d_model, self.base)

    def embed(self, x: Tensor, ctx: PositionContext) -> Tensor:
        return x + self.table(ctx.q_pos).to(x.dtype)


@register
class Learned(PositionalEncoding):
    """Learned absolute table (Gehring et al. 2017; BERT; GPT-2): x_t + E[pos_t], E ∈ ℝ^(max_len × d_model).

    ``max_len`` defaults to ``train_len``. There is no vector for a position ≥ max_len, so such positions raise
    ``ValueError`` (never clamped silently); positions must be non-negative integers. Initialised N(0, 0.02²)
    as in GPT-2.
    """

    id = "learned"
    learnable = True

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, max_len: int | None = None) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len)
        max_len = train_len if max_len is None else max_len
        self._check("max_len", max_len, isinstance(max_len, int) and max_len > 0, "a positive int")
        self.max_len = max_len
        self.weight = nn.Parameter(torch.randn(max_len, self.d_model) * 0.02)

    def embed(self, x: Tensor, ctx: PositionContext) -> Tensor:
        pos = ctx.q_pos
        if pos.numel():
            lo, hi = float(pos.min()), float(pos.max())
            if lo < 0 or hi >= self.max_len:
                raise ValueError(
                    f"learned: position {hi if hi >= self.max_len else lo:g} is outside the learned table "
                    f"(max_len={self.max_len}); a learned absolute PE has no vector for positions >= max_len"
                )
            if not torch.equal(pos, pos.round()):
                raise ValueError("learned: positions must be integers to index the table (max_len="
                                 f"{self.max_len})")
        return x + self.weight[pos.long()].to(x.dtype)


# ---------------------------------------------------------------------- shift invariance


@register
class SHAPE(Sinusoidal):
    """SHAPE (Kiyono et al., EMNLP 2021): sinusoidal APE at positions shifted by a random offset in training.

    p_t = PE(t + k) with k ~ U{0..max_shift} drawn afresh for every training batch, and k = ``eval_shift``
    (default 0) at evaluation. Shift invariance makes k = 0 and the released code's evaluation offset
    (k = K, ``eval_shift=max_shift``) equivalent in principle. Defaults: K = 500, the paper's main WMT setting
    (``pe_noise_size: 500`` in the released configs). Differences from the paper's code: it draws one k per
    sequence from U{0..K−1}; here one k per batch (the hook returns one position vector per batch), from
    U{0..K}. Positions stay increasing, so the causal mask built from them is unchanged.
    """

    id = "shape"

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, base: float = 10000.0,
                 max_shift: int = 500, eval_shift: int = 0) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len, base=base)
        self._check("max_shift", max_shift, isinstance(max_shift, int) and max_shift >= 0, "an int >= 0")
        self._check("eval_shift", eval_shift, isinstance(eval_shift, int) and eval_shift >= 0, "an int >= 0")
        self.max_shift, self.eval_shift = max_shift, eval_shift

    def positions(self, seq_len: int, *, training: bool = False, device: torch.device | str | None = None) -> Tensor:
        k = int(torch.randint(0, self.max_shift + 1, ())) if training else self.eval_shift
        return torch.arange(seq_len, dtype=torch.float32, device=device) + float(k)

    def samples_positions(self, training: bool) -> bool:
        return training or self.eval_shift != 0


@register
class CAPE(Sinusoidal):
    """CAPE (Likhomanenko et al., NeurIPS 2021): sinusoidal APE on augmented continuous positions.

    In training, per sequence b: pos′_t = λ_b·(pos_t + Δ_b + ε_{b,t}) with global shift Δ ~ U[−Δmax, Δmax],
    local shift ε ~ U[−εmax/2, εmax/2] and global scaling log λ ~ U[−log λmax, log λmax]; then PE(pos′)
    (interleaved sin/cos). At evaluation the positions are used as they are (identity). With ``normalize`` the
    mean position of each sequence is subtracted first (the paper's option for audio/images).
    The augmentation happens inside :meth:`embed`, per sequence as in the paper's code, and the positions
    returned by :meth:`positions` stay ``arange`` so the causal mask is unaffected.
    Defaults (Δmax = 5, εmax = 1, λmax = 1.03) follow the text setting of the public CAPE re-implementation
    (gcambara/cape), which follows the paper's MT recipe; the exact MT values were not re-checked in the paper.
    """

    id = "cape_likhomanenko"

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, base: float = 10000.0,
                 max_global_shift: float = 5.0, max_local_shift: float = 1.0, max_global_scaling: float = 1.03,
                 normalize: bool = False) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len, base=base)
        self._check("max_global_shift", max_global_shift,
                    isinstance(max_global_shift, (int, float)) and max_global_shift >= 0, "a number >= 0")
        self._check("max_local_shift", max_local_shift,
                    isinstance(max_local_shift, (int, float)) and max_local_shift >= 0, "a number >= 0")
        self._check("max_global_scaling", max_global_scaling,
                    isinstance(max_global_scaling, (int, float)) and max_global_scaling >= 1, "a number >= 1")
        self._check("normalize", normalize, isinstance(normalize, bool), "a bool")
        self.max_global_shift = float(max_global_shift)
        self.max_local_shift = float(max_local_shift)
        self.max_global_scaling = float(max_global_scaling)
        self.normalize = normalize

    def augment(self, pos: Tensor, batch: int) -> Tensor:
        """Positions (T,) → (B, T) float32: normalised and, in training, shifted and scaled per sequence."""
        p = pos.to(torch.float32)[None, :].expand(batch, -1)
        if self.normalize:
            p = p - p.mean(dim=1, keepdim=True)
        if not self.training:
            return p
        dev = pos.device
        delta = (torch.rand(batch, 1, device=dev) * 2 - 1) * self.max_global_shift
        local = (torch.rand(batch, p.size(1), device=dev) - 0.5) * self.max_local_shift
        log_l = math.log(self.max_global_scaling)
        lam = torch.exp((torch.rand(batch, 1, device=dev) * 2 - 1) * log_l)
        return (p + delta + local) * lam

    def embed(self, x: Tensor, ctx: PositionContext) -> Tensor:
        if not self.training and not self.normalize:
            return super().embed(x, ctx)
        return x + sinusoidal_table(self.augment(ctx.q_pos, x.size(0)), self.d_model, self.base).to(x.dtype)


# ---------------------------------------------------------------------- smoothness


@register
class ComplexOrder(PositionalEncoding):
    """Complex word-order embedding (Wang et al., ICLR 2020, Eq. 3): f(j, pos) = r_j·e^{i(ω_j·pos + θ_j)}.

    Amplitude r, frequency ω and phase θ are specific to each word j (the "Multiply" integration of the
    survey's Table 1). Real-valued form, as in the paper's real implementation that keeps real and imaginary
    parts as separate real channels: with n = d_model/2,

        out[:, :n] = r_re ⊙ cos(ω_j·pos + θ_j),   out[:, n:] = r_im ⊙ sin(ω_j·pos + θ_j),

    where the amplitudes (r_re, r_im) are the model's own token embedding x (a per-word lookup table, as
    r_j is in the paper; tied to the output head here) and ω_j, θ_j ∈ ℝ^n are per-word lookup tables indexed
    by the token ids that the model passes in the position context. With r_re = r_im this is exactly the
    paper's Eq.; separate halves let the tied embedding keep all its d_model channels.
    The token ids are required: without them (a context built without ``tokens``) ``embed`` raises rather
    than falling back to something else.

    Initialisation: ω_j starts at the sinusoidal frequencies base^(−k/n) for every word (so the model starts
    as a multiplicative sinusoidal encoding) and θ_j = 0; the paper's own initialisation was not re-checked.
    """

    id = "complex_order"
    learnable = True

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, vocab_size: int = 256,
                 base: float = 10000.0) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len)
        self._check("vocab_size", vocab_size, isinstance(vocab_size, int) and vocab_size > 0, "a positive int")
        self._check("base", base, isinstance(base, (int, float)) and base > 1, "a number > 1")
        self._check("head_dim", head_dim, self.d_model % 2 == 0, "such that d_model is even")
        self.vocab_size, self.base = vocab_size, float(base)
        n = self.d_model // 2
        freq = float(base) ** (-torch.arange(n, dtype=torch.float32) / n)
        self.freq = nn.Parameter(freq[None, :].repeat(vocab_size, 1))  # ω_j (V, n)
        self.phase = nn.Parameter(torch.zeros(vocab_size, n))  # θ_j (V, n)

    def embed(self, x: Tensor, ctx: PositionContext) -> Tensor:
        tokens, pos = ctx.tokens, ctx.q_pos
        if tokens is None or tokens.shape != x.shape[:2]:
            raise ValueError(
                "complex_order: needs the token ids of x (B, T); build the context with "
                "pe.context(pos, tokens=tokens), as the reference model does"
            )
        if int(tokens.max()) >= self.vocab_size or int(tokens.min()) < 0:
            raise ValueError(f"complex_order: token id outside [0, vocab_size={self.vocab_size})")
        omega, theta = self.freq[tokens], self.phase[tokens]  # (B, T, n)
        phi = omega * pos.to(torch.float32)[None, :, None] + theta  # float32 angles
        n = self.d_model // 2
        xf = x.float()
        out = torch.cat((xf[..., :n] * phi.cos(), xf[..., n:] * phi.sin()), dim=-1)
        return out.to(x.dtype)


@register
class Floater(PositionalEncoding):
    """FLOATER (Liu et al., ICML 2020, Eq. 4–5): positions as the solution of a learned neural ODE.

    p(t) = p(0) + ∫_0^t h(τ, p(τ); θ_h) dτ and p_i = p(i·Δt). h is a small MLP of [p, τ] (tanh hidden
    layer); p(0) is learned. The ODE is solved with a fixed-step RK4 integrator whose nodes are every ``grid``
    positions (step grid·Δt); between nodes p is the cubic Hermite interpolant with the ODE's own derivatives
    h at the nodes (4th-order accurate, like RK4 itself), which also serves fractional positions. The
    trajectory is computed once per forward (in :meth:`embed`, in float32 whatever the parameters' dtype) and
    backpropagated through directly; the cost is ⌈max position / grid⌉ RK4 steps, and there is no maximum
    length.
    The paper injects p at every block with shared h; here it is added once at the input (the survey's
    Table 1 "Initial" row), since the PE interface adds absolute encodings only at the embeddings.
    Δt = 0.1, grid = 8 and the MLP width are this implementation's choices (not re-checked in the paper).
    """

    id = "floater"
    learnable = True

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, delta_t: float = 0.1,
                 hidden: int = 64, grid: int = 8) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len)
        self._check("delta_t", delta_t, isinstance(delta_t, (int, float)) and delta_t > 0, "a number > 0")
        self._check("hidden", hidden, isinstance(hidden, int) and hidden > 0, "a positive int")
        self._check("grid", grid, isinstance(grid, int) and grid > 0, "a positive int")
        self.delta_t, self.hidden, self.grid = float(delta_t), hidden, grid
        c = self.d_model
        self.p0 = nn.Parameter(torch.randn(c) * 0.02)
        self.fc1 = nn.Linear(c + 1, hidden)
        self.fc2 = nn.Linear(hidden, c)
        nn.init.normal_(self.fc1.weight, std=1.0 / math.sqrt(c + 1))
        nn.init.zeros_(self.fc1.bias)
        nn.init.normal_(self.fc2.weight, std=0.02)
        nn.init.zeros_(self.fc2.bias)

    def h(self, tau: Tensor, p: Tensor) -> Tensor:
        """Latent force h(τ, p): τ (N,) and p (N, C) → (N, C), float32."""
        u = torch.cat((p, tau[:, None]), dim=-1)
        u = torch.tanh(nn.functional.linear(u, self.fc1.weight.float(), self.fc1.bias.float()))
        return nn.functional.linear(u, self.fc2.weight.float(), self.fc2.bias.float())

    def nodes(self, n: int) -> tuple[Tensor, Tensor]:
        """RK4 nodes p(m·grid·Δt), m = 0..n−1, and the derivatives h there: two (n, C) float32 tensors."""
        dt = self.grid * self.delta_t
        p = self.p0.float()[None, :]
        ps = [p]
        for m in range(n - 1):
            t = torch.full((1,), m * dt, device=p.device)
            k1 = self.h(t, p)
            k2 = self.h(t + dt / 2, p + dt / 2 * k1)
            k3 = self.h(t + dt / 2, p + dt / 2 * k2)
            k4 = self.h(t + dt, p + dt * k3)
            p = p + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
            ps.append(p)
        nodes = torch.cat(ps)
        taus = torch.arange(n, dtype=torch.float32, device=nodes.device) * dt
        return nodes, self.h(taus, nodes)

    def table(self, pos: Tensor) -> Tensor:
        """Position vectors at float positions ``pos`` (T,) → (T, C), float32."""
        if pos.numel() == 0:
            return torch.zeros(0, self.d_model, device=pos.device)
        if float(pos.min()) < 0:
            raise ValueError("floater: positions must be >= 0 (the ODE is integrated forward from p(0))")
        g = self.grid
        n = int(math.ceil(float(pos.max()) / g)) + 2
        nodes, deriv = self.nodes(n)
        u = pos.float() / g  # position in node units
        lo = u.floor().long().clamp(max=n - 2)
        s = (u - lo.float())[:, None]
        step = g * self.delta_t  # time between nodes: derivatives are per unit time
        h00, h10 = 2 * s**3 - 3 * s**2 + 1, s**3 - 2 * s**2 + s
        h01, h11 = -2 * s**3 + 3 * s**2, s**3 - s**2
        return h00 * nodes[lo] + h10 * step * deriv[lo] + h01 * nodes[lo + 1] + h11 * step * deriv[lo + 1]

    def embed(self, x: Tensor, ctx: PositionContext) -> Tensor:
        return x + self.table(ctx.q_pos).to(x.dtype)


# ---------------------------------------------------------------------- token-dependent: BiPE, CoPE

#: Byte values that end a segment for BiPE: '.', '\n', '?', '!'.
SEGMENT_BYTES: tuple[int, ...] = (ord("."), ord("\n"), ord("?"), ord("!"))


def segment_positions(tokens: Tensor, separators: tuple[int, ...] = SEGMENT_BYTES) -> tuple[Tensor, Tensor]:
    """Segment index and intra-segment position of every token (B, T) → two (B, T) int64 tensors.

    A separator token closes its segment (it belongs to the segment it ends); the next token starts a new
    one at intra-segment position 0.
    """
    is_sep = torch.zeros_like(tokens, dtype=torch.bool)
    for s in separators:
        is_sep |= tokens == s
    # Segment of t = number of separators strictly before t.
    seg = torch.cumsum(is_sep.long(), dim=1) - is_sep.long()
    idx = torch.arange(tokens.size(1), device=tokens.device).expand_as(tokens)
    # Start of t's segment = index after the last separator before t (0 if none).
    start_marks = torch.where(is_sep, idx + 1, torch.zeros_like(idx))
    last_end = torch.cummax(start_marks, dim=1).values
    start = torch.cat((torch.zeros_like(last_end[:, :1]), last_end[:, :-1]), dim=1)
    return seg, idx - start


@register
class BiPE(Sinusoidal):
    """BiPE, Bilevel Positional Encoding (He et al., ICML 2024), BiPE-ALiBi variant.

    The text is split into segments at the bytes '.', '\\n', '?', '!' (read from the token ids in the position
    context). Each token gets
      * an intra-segment absolute encoding: x_t + PE(pos_in_segment(t)), sinusoidal (interleaved sin/cos);
      * an inter-segment relative encoding in every layer: bias −m_h·(seg(i) − seg(j)), ALiBi slopes m_h,
        not scaled by 1/√d, returned as (B, H, T, S) because it depends on the tokens.
    The paper's other variant (BiPE-RoPE: RoPE on segment indices) is not implemented here. The segments need
    the token ids: a context built without ``tokens`` (the reference model always passes them) makes the
    hooks raise rather than fall back to something else. Query i and key j must index the same token
    sequence (T = S).
    """

    id = "bipe"

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, base: float = 10000.0) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len, base=base)
        self.register_buffer("slopes", alibi_slopes(num_heads), persistent=False)

    def prepare(self, ctx: PositionContext) -> None:
        tok = ctx.tokens
        if tok is None:
            raise ValueError("bipe: needs the token ids to find segments; build the context with "
                             "pe.context(pos, tokens=tokens), as the reference model does")
        if ctx.q_pos.numel() != ctx.k_pos.numel() or tok.size(1) != ctx.k_pos.numel():
            raise ValueError("bipe: queries and keys must index the same token sequence (T = S = len(tokens))")
        seg, intra = segment_positions(tok.to(ctx.device))
        ctx.put("bipe_intra", intra)
        rel = seg.float()[:, :, None] - seg.float()[:, None, :]  # (B, T, S), seg(i) − seg(j)
        bias = -self.slopes.to(ctx.device)[None, :, None, None] * rel[:, None]
        ctx.put("bias", bias, q_dim=-2, k_dim=-1)

    def embed(self, x: Tensor, ctx: PositionContext) -> Tensor:
        intra = ctx.get("bipe_intra") if "bipe_intra" in ctx else None
        if intra is None or tuple(intra.shape) != tuple(x.shape[:2]):
            raise ValueError(f"bipe: the context's token ids do not match the sequence {tuple(x.shape[:2])}; "
                             "build it with pe.context(pos, tokens=tokens)")
        return x + self.table(intra.to(torch.float32)).to(x.dtype)

    def bias(self, ctx: PositionContext, layer: int = 0) -> Tensor:
        return ctx.get("bias")


@register
class CoPE(PositionalEncoding):
    """CoPE, Contextual Position Encoding (Golovneva et al., arXiv 2405.18719, Eq. 3–5; released code
    facebookresearch/RAM, ``projects/cope/src/cope/context_position.py``).

    Gates g_ij = σ(q_i·k_j/√d) (the scaled logits, as in the released code; the paper writes σ(q_iᵀk_j)), zero
    for masked j > i; contextual positions p_ij = Σ_{t=j..i} g_it (a reverse cumulative sum), capped at
    ``npos_max − 1``; the position embedding e[p] is interpolated between e[⌊p⌋] and e[⌈p⌉], computed as q_i·e[p]
    by interpolating the integer logits q_i·e[n]. Logits follow the released code's default path (its run script
    does not pass ``--cope-nodiv``): the position logit is added *before* the division by √d,

        logits_ij = (q_i·k_j + q_i·e[p_ij]) / √d.

    (With ``--cope-nodiv`` the code adds q_i·e[p_ij] after the division; x-transformers' ``CoPE`` returns that
    unscaled term.) e ∈ ℝ^(npos_max × head_dim) is shared by heads and initialised to zero, so the model starts
    as NoPE. Deviations from the released code: e is also shared by layers (the code keeps one table per layer
    unless ``--cope-shared``), and ``npos_max`` defaults to ``train_len`` (the code: block size + 1).
    Depends on content: not relative.
    """

    id = "cope"
    learnable = True

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, npos_max: int | None = None) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len)
        npos_max = train_len if npos_max is None else npos_max
        self._check("npos_max", npos_max, isinstance(npos_max, int) and npos_max > 0, "a positive int")
        self.npos_max = npos_max
        self.pos_emb = nn.Parameter(torch.zeros(npos_max, head_dim))

    def logits(self, q: Tensor, k: Tensor, ctx: PositionContext, layer: int = 0) -> Tensor:
        scale = 1.0 / math.sqrt(q.size(-1))
        qk = q.float() @ k.float().transpose(-2, -1)  # (B, H, T, S), unscaled
        gates = torch.sigmoid(qk * scale).masked_fill(~ctx.causal_mask(), 0.0)
        pos = gates.flip(-1).cumsum(dim=-1).flip(-1).clamp(max=self.npos_max - 1)
        logits_int = q.float() @ self.pos_emb.float().t()  # (B, H, T, npos_max)
        lo, hi = pos.floor().long(), pos.ceil().long()
        w = pos - lo.float()
        cope = logits_int.gather(-1, hi) * w + logits_int.gather(-1, lo) * (1 - w)
        return (qk + cope) * scale  # the released code's default: divide after adding the position logit
