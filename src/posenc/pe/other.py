"""Beyond the PE: index remapping, windows and sinks, logit temperatures, NoPE hybrids.

Index-remapping methods (ReRoPE, Self-Extend, DCA) and the window methods (StreamingLLM, LM-Infinite) are
applied zero-shot to a RoPE-trained model (``applies_to = "rope"``). Each computes a few RoPE score
passes with different position indices and combines them with ``torch.where``; they override
:meth:`~posenc.pe.base.PositionalEncoding.logits` (explicit attention path). Their derived position indices,
the cos/sin at those indices and the branch masks are built once per forward by ``prepare``. Window masks
return −inf outside the window but always keep the diagonal finite; the model applies the causal mask
afterwards.

Conventions: rel = i − j (query minus key), logits ``q·kᵀ/√d``; RoPE is the consecutive-pair rotation of
:mod:`posenc.pe.rotary`, angles in float32. Positions are the model's float positions (``arange`` at
evaluation); index arithmetic (floor, mod) assumes integer-valued positions.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from posenc.pe.base import PositionalEncoding, PositionContext, register
from posenc.pe.rope import RoPE, rope_angles, rotate_pairs
from posenc.pe.sampling import InnerPE

__all__ = ["ReRoPE", "SelfExtend", "DualChunkAttention", "StreamingLLM", "LMInfinite", "SSMax", "DroPE", "IRoPE"]


def _scores(q: Tensor, k: Tensor) -> Tensor:
    """q·kᵀ/√d for (B, H, T, D) × (B, H, S, D) → (B, H, T, S)."""
    return (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))


class _RemappedRoPE(RoPE):
    """RoPE plus helpers to rotate by derived position indices, prepared once per forward."""

    applies_to = "rope"
    relative = False  # the remapped indices depend on absolute positions (chunks, groups, sinks, log scale)

    def put_rotation(self, ctx: PositionContext, name: str, pos: Tensor, side: str) -> None:
        """cos/sin at derived positions ``pos`` of the queries (``side="q"``, (T,)) or keys (``"k"``, (S,))."""
        ang = rope_angles(pos, ctx.get("inv_freq"))
        a = ctx.get("attention_factor")
        dims = {"q_dim": 0} if side == "q" else {"k_dim": 0}
        ctx.put(name + "_cos", ang.cos() * a, **dims)
        ctx.put(name + "_sin", ang.sin() * a, **dims)

    def put_map(self, ctx: PositionContext, name: str, value: Tensor) -> None:
        """A (T, S) map over query/key pairs."""
        ctx.put(name, value, q_dim=-2, k_dim=-1)

    def rot(self, x: Tensor, ctx: PositionContext, name: str) -> Tensor:
        return rotate_pairs(x, ctx.get(name + "_cos"), ctx.get(name + "_sin"))

    def rel(self, ctx: PositionContext) -> Tensor:
        return ctx.q_pos[:, None] - ctx.k_pos[None, :]

    def plain(self, q: Tensor, k: Tensor, ctx: PositionContext) -> tuple[Tensor, Tensor, Tensor]:
        """Plain RoPE scores and the rotated query and key (reused by branches that keep a position)."""
        qr, kr = RoPE.rotate(self, q, k, ctx)
        return _scores(qr, kr), qr, kr


# ---------------------------------------------------------------------- index remapping
@register
class ReRoPE(_RemappedRoPE):
    """ReRoPE, rectified rotary position embeddings (Su, blog posts kexue.fm/archives/9706 and 9708, 2023).

    Relative positions are kept inside a window w and frozen beyond it::

        score_ij = (R_i q_i)·(R_j k_j)/√d   if i − j < w
                 = (R_w q_i)·k_j/√d          if i − j ≥ w       (relative position w)

    two score passes combined with ``torch.where``. Leaky ReRoPE (``leaky_k`` = k) uses the relative
    position w + (i − j − w)/k beyond the window instead (rotations by (i + w(k − 1))/k and j/k).

    As in the author's released patch, queries are also scaled by max(1, log(i + 1)/log L) (``log_scale``,
    L = ``train_len``), which sharpens attention beyond the training length. The released patch uses
    w = 512 for a 4096-token model (w = L/8, our default) and k = 16 for the leaky variant.
    Reduces to RoPE when T ≤ w (and, with ``log_scale``, T ≤ L).
    """

    id = "rerope"

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, base: float = 10000.0,
                 window: int | None = None, leaky_k: float | None = None, log_scale: bool = True) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len, base=base)
        window = max(1, train_len // 8) if window is None else window
        self._check("window", window, isinstance(window, int) and 1 <= window <= train_len,
                    f"an int in [1, train_len={train_len}]")
        self._check("leaky_k", leaky_k, leaky_k is None or (isinstance(leaky_k, (int, float)) and leaky_k > 1),
                    "None (ReRoPE) or a number > 1 (Leaky ReRoPE)")
        self._check("log_scale", log_scale, isinstance(log_scale, bool), "a bool")
        self.window, self.leaky_k, self.log_scale = window, leaky_k, log_scale

    def query_scale(self, q_pos: Tensor) -> Tensor:
        """max(1, log(i + 1)/log L) per query (T,), float32; 1 everywhere when ``log_scale`` is off."""
        if not self.log_scale or self.train_len < 2:
            return torch.ones_like(q_pos, dtype=torch.float32)
        return (torch.log(q_pos.float() + 1) / math.log(self.train_len)).clamp(min=1.0)

    def prepare(self, ctx: PositionContext) -> None:
        super().prepare(ctx)
        w = float(self.window)
        ctx.put("rerope_qscale", self.query_scale(ctx.q_pos)[:, None], q_dim=0)
        if self.leaky_k is None:
            self.put_rotation(ctx, "rerope_q", torch.full_like(ctx.q_pos, w), "q")
        else:
            kk = float(self.leaky_k)
            self.put_rotation(ctx, "rerope_q", (ctx.q_pos + w * (kk - 1)) / kk, "q")
            self.put_rotation(ctx, "rerope_k", ctx.k_pos / kk, "k")
        self.put_map(ctx, "rerope_near", self.rel(ctx) < w)

    def logits(self, q: Tensor, k: Tensor, ctx: PositionContext, layer: int = 0) -> Tensor:
        q = (q.float() * ctx.get("rerope_qscale")).to(q.dtype)
        inside, _, _ = self.plain(q, k, ctx)
        if self.leaky_k is None:
            outside = _scores(self.rot(q, ctx, "rerope_q"), k)
        else:
            outside = _scores(self.rot(q, ctx, "rerope_q"), self.rot(k, ctx, "rerope_k"))
        return torch.where(ctx.get("rerope_near"), inside, outside)


@register
class SelfExtend(_RemappedRoPE):
    """Self-Extend (Jin et al., "LLM Maybe LongLM", ICML 2024, arXiv 2401.01325, §3).

    Neighbour attention keeps exact RoPE positions for i − j < w (``neighbor_window``); beyond it,
    grouped attention uses floor-divided positions, shifted so the two join continuously::

        rel_ij = i − j                                   if i − j < w
               = ⌊i/G⌋ − ⌊j/G⌋ + w − w/G                 otherwise

    (query at ⌊i/G⌋ + w − w/G, key at ⌊j/G⌋, as in the authors' code, which uses w/G unfloored).
    Defaults follow the released code for Llama-2 (4k): G = 8 (``group_size``), w = 1024 = L/4. The
    largest relative position at length T is about (T − w)/G + w, so to stay below L at a target length
    T choose G ≥ (T − w)/(L − w) (e.g. G ≥ 43 for T = 32L with w = L/4). Equals RoPE when T ≤ w.
    """

    id = "self_extend"

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, base: float = 10000.0,
                 group_size: int = 8, neighbor_window: int | None = None) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len, base=base)
        neighbor_window = max(1, train_len // 4) if neighbor_window is None else neighbor_window
        self._check("group_size", group_size, isinstance(group_size, int) and group_size >= 1, "an int >= 1")
        self._check("neighbor_window", neighbor_window,
                    isinstance(neighbor_window, int) and 1 <= neighbor_window < train_len,
                    f"an int in [1, train_len={train_len})")
        self.group_size, self.neighbor_window = group_size, neighbor_window

    def prepare(self, ctx: PositionContext) -> None:
        super().prepare(ctx)
        g, w = float(self.group_size), float(self.neighbor_window)
        self.put_rotation(ctx, "se_q", torch.floor(ctx.q_pos / g) + w - w / g, "q")
        self.put_rotation(ctx, "se_k", torch.floor(ctx.k_pos / g), "k")
        self.put_map(ctx, "se_near", self.rel(ctx) < w)

    def logits(self, q: Tensor, k: Tensor, ctx: PositionContext, layer: int = 0) -> Tensor:
        neighbour, _, _ = self.plain(q, k, ctx)
        grouped = _scores(self.rot(q, ctx, "se_q"), self.rot(k, ctx, "se_k"))
        return torch.where(ctx.get("se_near"), neighbour, grouped)


@register
class DualChunkAttention(_RemappedRoPE):
    """Dual Chunk Attention (An et al., "Training-Free Long-Context Scaling of LLMs", ICML 2024,
    arXiv 2402.17463, §3; released code ChunkLlama).

    The sequence is cut into chunks of length s = c − w (``chunk_size`` c, ``local_window`` w); keys sit
    at j mod s. Queries use three position indices, chosen by the chunk distance of the pair:

    * intra-chunk (same chunk): query at i mod s, so rel = i − j;
    * successive-chunk (key in the previous chunk): query at min(i mod s + s, c), exact for the first w
      queries of a chunk and capped at c after;
    * inter-chunk (older chunks): query at the constant min(2s − 1, c) (= c whenever s > w).

    Every relative position is ≤ c < L, so none is unseen. Defaults follow the released code:
    c = 3L/4 and w = L/16 (L = ``train_len``). (The paper writes the inter/successive query index with
    the pretraining length; the code, implemented here, caps at c.) Equals RoPE when T ≤ c.
    """

    id = "dca"

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, base: float = 10000.0,
                 chunk_size: int | None = None, local_window: int | None = None) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len, base=base)
        chunk_size = max(2, 3 * train_len // 4) if chunk_size is None else chunk_size
        local_window = max(1, train_len // 16) if local_window is None else local_window
        self._check("chunk_size", chunk_size, isinstance(chunk_size, int) and 2 <= chunk_size <= train_len,
                    f"an int in [2, train_len={train_len}]")
        self._check("local_window", local_window, isinstance(local_window, int) and 1 <= local_window < chunk_size,
                    f"an int in [1, chunk_size={chunk_size})")
        self.chunk_size, self.local_window = chunk_size, local_window

    @property
    def chunk_len(self) -> int:
        """s = chunk_size − local_window, the number of tokens per chunk."""
        return self.chunk_size - self.local_window

    def indices(self, q_pos: Tensor, k_pos: Tensor) -> dict[str, Tensor]:
        """Position indices and branch masks of the three attention parts (floats / bools)."""
        s, c = float(self.chunk_len), float(self.chunk_size)
        qi = torch.remainder(q_pos, s)
        cq, ck = torch.floor(q_pos / s), torch.floor(k_pos / s)
        return {
            "key": torch.remainder(k_pos, s),
            "intra": qi,
            "succ": (qi + s).clamp(max=c),
            "inter": torch.full_like(q_pos, min(2 * s - 1, c)),
            "same": cq[:, None] == ck[None, :],
            "prev": (cq[:, None] - ck[None, :]) == 1,
        }

    def prepare(self, ctx: PositionContext) -> None:
        super().prepare(ctx)
        ix = self.indices(ctx.q_pos, ctx.k_pos)
        self.put_rotation(ctx, "dca_key", ix["key"], "k")
        for name in ("intra", "succ", "inter"):
            self.put_rotation(ctx, "dca_" + name, ix[name], "q")
        self.put_map(ctx, "dca_same", ix["same"])
        self.put_map(ctx, "dca_prev", ix["prev"])

    def logits(self, q: Tensor, k: Tensor, ctx: PositionContext, layer: int = 0) -> Tensor:
        kr = self.rot(k, ctx, "dca_key")
        intra = _scores(self.rot(q, ctx, "dca_intra"), kr)
        succ = _scores(self.rot(q, ctx, "dca_succ"), kr)
        inter = _scores(self.rot(q, ctx, "dca_inter"), kr)
        return torch.where(ctx.get("dca_same"), intra, torch.where(ctx.get("dca_prev"), succ, inter))


# ---------------------------------------------------------------------- windows and sinks
@register
class StreamingLLM(_RemappedRoPE):
    """StreamingLLM, attention sinks (Xiao et al., ICLR 2024, arXiv 2309.17453, §3.2).

    Each query sees the first ``num_sinks`` tokens (the sinks, 4 in the paper) plus the ``window`` most
    recent tokens (itself included); the KV cache holds C = num_sinks + window entries. Positions are
    assigned by *cache slot*, not by position in the text: the query sits at slot min(i, C − 1), a recent
    key at its slot, a sink j at slot j. Hence

        rel_ij = i − j                    for a recent key (unchanged by the re-indexing)
               = min(i, C − 1) − j        for a sink

    Full-sequence evaluation here is a mask plus these positions. It equals token-by-token streaming
    decoding with a per-token rolling cache whose keys are stored before RoPE and re-rotated by slot (the
    paper's implementation): attention is causal, so the states a token contributes to later layers are
    the ones it computed when it was the query. Differences from a real streaming run are only cost (a
    T×T score matrix instead of a C-sized cache) and float rounding. Default window = L − num_sinks,
    so the cache holds L = ``train_len`` tokens. Equals RoPE when T ≤ C.
    """

    id = "streaming_llm"

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, base: float = 10000.0,
                 num_sinks: int = 4, window: int | None = None) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len, base=base)
        self._check("num_sinks", num_sinks, isinstance(num_sinks, int) and 0 <= num_sinks < train_len,
                    f"an int in [0, train_len={train_len})")
        window = train_len - num_sinks if window is None else window
        self._check("window", window, isinstance(window, int) and window >= 1, "an int >= 1")
        self.num_sinks, self.window = num_sinks, window

    def visible(self, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        """(T, S) bool: key j is a sink or among the ``window`` most recent tokens of query i."""
        return (q_pos[:, None] - k_pos[None, :] < self.window) | (k_pos < self.num_sinks)[None, :]

    def prepare(self, ctx: PositionContext) -> None:
        super().prepare(ctx)
        cache = float(self.num_sinks + self.window)
        self.put_rotation(ctx, "sl_slot", ctx.q_pos.clamp(max=cache - 1), "q")
        ctx.put("sl_sink", (ctx.k_pos < self.num_sinks)[None, :], k_dim=-1)
        self.put_map(ctx, "sl_vis", self.visible(ctx.q_pos, ctx.k_pos))

    def logits(self, q: Tensor, k: Tensor, ctx: PositionContext, layer: int = 0) -> Tensor:
        recent, _, kr = self.plain(q, k, ctx)
        sink = _scores(self.rot(q, ctx, "sl_slot"), kr)
        return torch.where(ctx.get("sl_sink"), sink, recent).masked_fill(~ctx.get("sl_vis"), float("-inf"))


@register
class LMInfinite(_RemappedRoPE):
    """LM-Infinite (Han et al., NAACL 2024, arXiv 2308.16137, §4).

    Λ-shaped mask: each query sees the first ``n_global`` tokens and the ``n_local`` most recent ones
    (itself included). Distance limit: relative distances are capped at d (``limit_distance``), so a
    global token beyond the local window is seen at distance d (the released code rotates the query by
    d and leaves the key unrotated)::

        rel_ij = i − j      if i − j < n_local
               = d          if j < n_global and i − j ≥ n_local;  masked otherwise

    Defaults follow the released code: n_local = d = L (``train_len``) and n_global = 10 (README; the
    experiments use 100, and 10–100 behave alike). Equals RoPE when T ≤ n_local.
    """

    id = "lm_infinite"

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, base: float = 10000.0,
                 n_global: int = 10, n_local: int | None = None, limit_distance: int | None = None) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len, base=base)
        n_local = train_len if n_local is None else n_local
        limit_distance = n_local if limit_distance is None else limit_distance
        self._check("n_global", n_global, isinstance(n_global, int) and n_global >= 0, "an int >= 0")
        self._check("n_local", n_local, isinstance(n_local, int) and n_local >= 1, "an int >= 1")
        self._check("limit_distance", limit_distance, isinstance(limit_distance, int) and limit_distance >= 1,
                    "an int >= 1")
        self.n_global, self.n_local, self.limit_distance = n_global, n_local, limit_distance

    def visible(self, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        """(T, S) bool: the Λ-shaped mask (global starting tokens plus the local window)."""
        return (q_pos[:, None] - k_pos[None, :] < self.n_local) | (k_pos < self.n_global)[None, :]

    def prepare(self, ctx: PositionContext) -> None:
        super().prepare(ctx)
        self.put_rotation(ctx, "lmi_d", torch.full_like(ctx.q_pos, float(self.limit_distance)), "q")
        self.put_map(ctx, "lmi_near", self.rel(ctx) < self.n_local)
        self.put_map(ctx, "lmi_vis", self.visible(ctx.q_pos, ctx.k_pos))

    def logits(self, q: Tensor, k: Tensor, ctx: PositionContext, layer: int = 0) -> Tensor:
        local, _, _ = self.plain(q, k, ctx)
        capped = _scores(self.rot(q, ctx, "lmi_d"), k)
        out = torch.where(ctx.get("lmi_near"), local, capped)
        return out.masked_fill(~ctx.get("lmi_vis"), float("-inf"))


# ---------------------------------------------------------------------- logit temperatures, NoPE hybrids
@register
class SSMax(InnerPE):
    """Scalable-Softmax (Nakanishi, arXiv 2501.19399, Eq. 2), around any base PE (``inner``, RoPE).

    Softmax over n inputs is replaced by ``softmax((s·log n)·z)``: for query i the logits z_ij are
    multiplied by s_h·log n_i, where n_i is the number of keys it may attend (i + 1 under the causal
    mask) and s_h a learnable scalar per head (per layer and head when ``num_layers`` > 1; shared by
    all layers otherwise). The factor is applied to the query (scaled before ``q·kᵀ``) and to the inner
    PE's bias, so the model keeps its fast attention path.

    Initialisation: s = 1/log L (``s_init`` default, L = ``train_len``), so the factor is 1 for the
    last query of a training window (*unverified: check the paper's initial value*). The paper trains
    GPT-2-style models with RoPE, hence the default inner PE.
    """

    id = "ssmax"
    learnable = True

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, inner: str = "rope",
                 s_init: float | None = None, num_layers: int = 1,
                 inner_kwargs: dict[str, object] | None = None) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len)
        s_init = 1.0 / math.log(max(train_len, 2)) if s_init is None else s_init
        self._check("s_init", s_init, isinstance(s_init, (int, float)) and math.isfinite(s_init), "a finite number")
        self._check("num_layers", num_layers, isinstance(num_layers, int) and num_layers >= 1, "an int >= 1")
        self._init_inner(inner, inner_kwargs)
        self.num_layers = num_layers
        self.s = nn.Parameter(torch.full((num_layers, num_heads), float(s_init)))
        self.bias_per_layer = self.inner.bias_per_layer or num_layers > 1
        self.static_bias = False  # the bias is scaled by the learned s

    def log_n(self, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        """log n_i (T,), n_i = number of keys with k_pos ≤ q_pos[i] (at least 1)."""
        n = (k_pos[None, :] <= q_pos[:, None]).sum(-1).clamp(min=1)
        return n.float().log()

    def prepare(self, ctx: PositionContext) -> None:
        super().prepare(ctx)  # the inner PE's tensors, in the child context
        ctx.put("ssmax_logn", self.log_n(ctx.q_pos, ctx.k_pos), q_dim=0)

    def factor(self, ctx: PositionContext, layer: int = 0) -> Tensor:
        """s_h·log n_i, float32 (H, T)."""
        if self.num_layers > 1 and not 0 <= layer < self.num_layers:
            raise ValueError(f"{self.id}: layer {layer} >= hyperparameter 'num_layers' ({self.num_layers})")
        s = self.s[layer if self.num_layers > 1 else 0]
        return s.float()[:, None] * ctx.get("ssmax_logn")[None, :]

    def rotate(self, q: Tensor, k: Tensor, ctx: PositionContext, layer: int = 0) -> tuple[Tensor, Tensor]:
        q, k = self.inner.rotate(q, k, self.inner_context(ctx), layer)
        f = self.factor(ctx, layer)  # (H, T)
        return (q.float() * f[:, :, None]).to(q.dtype), k

    def bias(self, ctx: PositionContext, layer: int = 0) -> Tensor | None:
        b = self.inner.bias(self.inner_context(ctx), layer)
        return None if b is None else b * self.factor(ctx, layer)[:, :, None].to(b.dtype)


@register
class DroPE(PositionalEncoding):
    """DroPE, dropping positional embeddings (Gelberg, Eguchi, Akiba, Cetin, arXiv 2512.12167).

    A RoPE-trained model has its rotation removed (NoPE) and is recalibrated briefly at the training
    length; this PE is therefore NoPE, applied to a RoPE checkpoint (``applies_to = "rope"``; the
    experiment swaps it in and fine-tunes). Optionally, beyond the training length the logits get the
    temperature 1 + c·ln s with s = l/L (l = current length, L = ``train_len``; c = ``temperature_c``),
    folded into the query; c = 0 (default) is plain NoPE. *Unverified: check the paper for c and for
    whether s is taken per sequence (as here) or per query.* The paper's recalibration also adds
    QK-normalisation, which is a model change outside the PE interface and is not done here.
    """

    id = "drope"
    applies_to = "rope"

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, temperature_c: float = 0.0) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len)
        self._check("temperature_c", temperature_c,
                    isinstance(temperature_c, (int, float)) and math.isfinite(temperature_c) and temperature_c >= 0,
                    "a finite number >= 0")
        self.temperature_c = float(temperature_c)

    def temperature(self, length: int) -> float:
        """1 + c·ln(max(1, length/L))."""
        return 1.0 + self.temperature_c * math.log(max(1.0, length / self.train_len))

    def prepare(self, ctx: PositionContext) -> None:
        if self.temperature_c != 0.0 and ctx.k_pos.numel():
            ctx.put("drope_t", self.temperature(ctx.length))

    def rotate(self, q: Tensor, k: Tensor, ctx: PositionContext, layer: int = 0) -> tuple[Tensor, Tensor]:
        t = ctx.get("drope_t") if "drope_t" in ctx else 1.0
        return (q * t, k) if t != 1.0 else (q, k)


@register
class IRoPE(RoPE):
    """iRoPE, interleaved RoPE and NoPE layers (Meta, Llama 4, 2025; released model code).

    Every ``nope_every``-th layer is NoPE (layers with (layer + 1) mod nope_every = 0, i.e. the last of
    each group, as in Llama 4's ``no_rope_layers``); the others use RoPE. With ``temperature_tuning``,
    the queries of NoPE layers are scaled by

        scale(i) = attn_scale · log(⌊(i + 1)/floor_scale⌋ + 1) + 1,

    which is 1 up to position floor_scale − 2 and grows slowly after (Llama 4: ``floor_scale`` = 8192,
    its RoPE-layer attention chunk; ``attn_scale`` = 0.1). Here floor_scale defaults to ``train_len``.
    Llama 4's RoPE layers also attend within chunks of ``attention_chunk`` tokens (key j visible iff
    ⌊j/C⌋ = ⌊i/C⌋); this is off by default (None) and, when set, is a −inf bias on RoPE layers. Llama 4
    also L2-normalises q and k on RoPE layers (a model change, not done here).
    """

    id = "irope"
    relative = False  # the NoPE layers' temperature depends on the absolute query position
    bias_per_layer = True
    static_bias = True  # the chunk mask depends on positions only

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, base: float = 10000.0,
                 nope_every: int = 4, temperature_tuning: bool = True, floor_scale: int | None = None,
                 attn_scale: float = 0.1, attention_chunk: int | None = None) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len, base=base)
        floor_scale = train_len if floor_scale is None else floor_scale
        self._check("nope_every", nope_every, isinstance(nope_every, int) and nope_every >= 1, "an int >= 1")
        self._check("temperature_tuning", temperature_tuning, isinstance(temperature_tuning, bool), "a bool")
        self._check("floor_scale", floor_scale, isinstance(floor_scale, int) and floor_scale >= 1, "an int >= 1")
        self._check("attn_scale", attn_scale,
                    isinstance(attn_scale, (int, float)) and math.isfinite(attn_scale) and attn_scale >= 0,
                    "a finite number >= 0")
        self._check("attention_chunk", attention_chunk,
                    attention_chunk is None or (isinstance(attention_chunk, int) and attention_chunk >= 1),
                    "None or an int >= 1")
        self.nope_every, self.temperature_tuning = nope_every, temperature_tuning
        self.floor_scale, self.attn_scale, self.attention_chunk = floor_scale, float(attn_scale), attention_chunk

    def is_nope(self, layer: int) -> bool:
        return (layer + 1) % self.nope_every == 0

    def query_temperature(self, q_pos: Tensor) -> Tensor:
        """Llama 4's per-position query scale (T,), float32."""
        return torch.log(torch.floor((q_pos.float() + 1.0) / self.floor_scale) + 1.0) * self.attn_scale + 1.0

    def prepare(self, ctx: PositionContext) -> None:
        super().prepare(ctx)
        if self.temperature_tuning:
            ctx.put("irope_temp", self.query_temperature(ctx.q_pos)[:, None], q_dim=0)
        if self.attention_chunk is not None:
            c = float(self.attention_chunk)
            same = torch.floor(ctx.q_pos / c)[:, None] == torch.floor(ctx.k_pos / c)[None, :]
            zero = torch.zeros(same.shape, dtype=torch.float32, device=ctx.device)
            ctx.put("bias", zero.masked_fill(~same, float("-inf")).expand(self.num_heads, -1, -1), q_dim=-2, k_dim=-1)

    def rotate(self, q: Tensor, k: Tensor, ctx: PositionContext, layer: int = 0) -> tuple[Tensor, Tensor]:
        if not self.is_nope(layer):
            return super().rotate(q, k, ctx, layer)
        if not self.temperature_tuning:
            return q, k
        return (q.float() * ctx.get("irope_temp")).to(q.dtype), k

    def bias(self, ctx: PositionContext, layer: int = 0) -> Tensor | None:
        if self.attention_chunk is None or self.is_nope(layer):
            return None
        return ctx.get("bias")
