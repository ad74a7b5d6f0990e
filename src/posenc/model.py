"""The reference decoder-only Transformer: pre-LN, causal, nanoGPT-sized, any positional encoding.

Position enters only through the PE object (:class:`posenc.pe.base.PositionalEncoding`):

* ``pe.positions`` gives float positions (T,), and the causal mask is built from them;
* once per forward, ``pe.context`` builds the :class:`~posenc.pe.context.PositionContext` (positions, token
  ids, and the PE's cos/sin or bias), which is passed to every hook, as gpt-fast passes ``freqs_cis``;
* ``pe.embed`` adds absolute encodings to the token embeddings;
* in every layer, ``pe.logits`` (rotation of q/k, bias on logits, or a content-dependent rule) defines
  the attention logits.

How a layer attends is chosen once per forward, in one place (:meth:`Transformer.plan`), from
``ModelConfig.attn`` and the PE; every path gives the same result (a test checks it for every method):

* ``causal``: no bias and one increasing position sequence: ``scaled_dot_product_attention(is_causal=True)``
  with no mask, the speed limit of a plain causal model;
* ``mask``: a bias (or positions whose order is not the plain one): SDPA with the causal mask and the bias
  folded into one float mask, built once per forward at the working dtype; masks that depend only on
  positions (``pe.static_bias``, e.g. ALiBi) are kept across forwards at plain positions. SDPA cannot skip
  the masked upper triangle when given a mask, so with one increasing position sequence the queries are cut
  into blocks of about 256–512 rows, each attending only to the keys up to its last row (about 1.1× the
  is_causal cost instead of 2× at 4k tokens on CPU);
* ``flex``: FlexAttention with the bias computed in-kernel (``pe.score_mod``, e.g. ALiBi), compiled, chosen
  by ``attn="auto"`` on CUDA for forwards with autograd only (:func:`auto_flex`): it has no backward on CPU,
  and its kernel is compiled once per shape, which pays over the thousands of steps of a training run but not
  for evaluation, where each shape runs a few times; those forwards take the ``mask`` path;
* ``explicit``: ``pe.logits`` materialised and turned into weights by ``pe.weights`` (the softmax unless the PE
  replaces it, as stick-breaking attention does); PEs that override either always take it. Without autograd,
  long sequences are evaluated in query chunks so that one (B, H, chunk, S) float32 logits tensor stays
  under ``explicit_chunk_mb``: peak memory grows linearly with length, not quadratically. With autograd the
  logits are materialised whole (chunking would save nothing: every chunk is kept for backward).

``forward(tokens, last=n)`` returns the logits of the last ``n`` positions only. In a causal model no earlier
row reads the final layer's later rows, so that layer computes attention, MLP and head for those ``n`` query
rows alone: O(n·T) instead of O(T²) in the last layer. Evaluation that scores only the final tokens uses it
(a task's answer, the new half of a sliding window); every path gives the rows of the full forward.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention

from posenc.pe.base import PositionalEncoding, PositionContext, PositionOrder

__all__ = ["ModelConfig", "LayerPlan", "Transformer", "auto_flex"]

AttnMode = Literal["auto", "sdpa", "explicit", "flex"]
_STATIC_MASKS = 4  # float masks kept across forwards (e.g. training length and one evaluation length)
_MAX_MASK_BLOCKS, _MASK_BLOCK_ROWS = 8, 256  # query blocks of the mask path (see the module docstring)

#: One SDPA call of the mask path: queries ``start:stop`` against keys ``:k_stop`` with this mask.
MaskBlock = tuple[int, int, int, Tensor]


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 256  # bytes as tokens
    n_layer: int = 2
    n_head: int = 4
    d_model: int = 128
    dropout: float = 0.0
    #: "auto": the fastest path the PE allows (see the module docstring); "sdpa": SDPA (is_causal or a
    #: float mask) unless the PE overrides logits or weights; "explicit": always materialise ``pe.logits``;
    #: "flex": FlexAttention unless the PE overrides logits or weights.
    attn: AttnMode = "auto"
    #: Cap (MiB) of one (B, H, chunk, S) float32 logits tensor on the explicit path without autograd.
    explicit_chunk_mb: float = 64.0
    #: Scale of the token embeddings an absolute PE is added to; None: √d_model, as in the original
    #: Transformer (Vaswani et al. 2017, §3.4), so that an encoding of unit-scale entries meets token
    #: embeddings of comparable size instead of swamping them. The sum is scaled back by the same factor, so
    #: the residual stream keeps its initial scale and a PE that adds nothing sees plain token embeddings
    #: (see the conventions page).
    embed_scale: float | None = None

    def __post_init__(self) -> None:
        for name in ("vocab_size", "n_layer", "n_head", "d_model"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"ModelConfig: '{name}' must be a positive int, got {v!r}")
        if self.d_model % self.n_head:
            raise ValueError(f"ModelConfig: 'd_model' ({self.d_model}) must be divisible by 'n_head' ({self.n_head})")
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"ModelConfig: 'dropout' must be in [0, 1), got {self.dropout!r}")
        if self.attn not in ("auto", "sdpa", "explicit", "flex"):
            raise ValueError(f"ModelConfig: 'attn' must be 'auto', 'sdpa', 'explicit' or 'flex', got {self.attn!r}")
        if self.attn == "flex" and self.dropout:
            raise ValueError("ModelConfig: 'attn' = 'flex' has no attention dropout; set 'dropout' to 0")
        mb = self.explicit_chunk_mb
        if not isinstance(mb, (int, float)) or isinstance(mb, bool) or not mb > 0 or not math.isfinite(mb):
            raise ValueError(f"ModelConfig: 'explicit_chunk_mb' must be a number > 0, got {mb!r}")
        es = self.embed_scale
        if es is not None and (not isinstance(es, (int, float)) or isinstance(es, bool) or not es > 0
                               or not math.isfinite(es)):
            raise ValueError(f"ModelConfig: 'embed_scale' must be None or a number > 0, got {es!r}")

    @property
    def token_scale(self) -> float:
        """The factor on the token embeddings: ``embed_scale``, or √d_model when it is None."""
        return math.sqrt(self.d_model) if self.embed_scale is None else float(self.embed_scale)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head


@dataclass(frozen=True)
class LayerPlan:
    """How one layer attends in one forward (see the module docstring)."""

    kind: Literal["causal", "mask", "flex", "explicit"]
    masks: tuple[MaskBlock, ...] = ()  # "mask": bool (t, s) or float (1 or B, H, t, s) at the working dtype
    score_mod: Callable[..., Tensor] | None = None  # "flex"
    block_mask: BlockMask | None = None  # "flex"
    chunk: int | None = None  # "explicit": query rows per chunk, None for all at once


_compiled_flex: Callable[..., Tensor] | None = None


def auto_flex(device_type: str, has_score_mod: bool, dropout: bool, grad: bool) -> bool:
    """Whether ``attn="auto"`` takes FlexAttention: on CUDA, for a PE with an in-kernel bias, without attention
    dropout (FlexAttention has none), and with autograd on. Compiling costs seconds per shape, repaid by a
    training run's many steps of one shape; an evaluation forward without autograd takes the mask path."""
    return device_type == "cuda" and has_score_mod and not dropout and grad


def _flex(q: Tensor, k: Tensor, v: Tensor, plan: LayerPlan) -> Tensor:
    """FlexAttention, compiled on CUDA (eager elsewhere: CPU has no backward, so only inference runs)."""
    global _compiled_flex
    fn: Callable[..., Tensor] = flex_attention
    if q.is_cuda:
        if _compiled_flex is None:
            _compiled_flex = torch.compile(flex_attention, dynamic=False)
        fn = _compiled_flex
    return fn(q, k, v, score_mod=plan.score_mod, block_mask=plan.block_mask)


def _bias_score_mod(bias: Tensor) -> Callable[..., Tensor]:
    """A score_mod that reads a materialised bias (H, T, S) or (B, H, T, S)."""
    if bias.dim() == 3:
        return lambda score, b, h, q_idx, kv_idx: score + bias[h, q_idx, kv_idx]
    return lambda score, b, h, q_idx, kv_idx: score + bias[b, h, q_idx, kv_idx]


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.cfg, self.layer = cfg, layer
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, ctx: PositionContext, pe: PositionalEncoding, plan: LayerPlan,
                first: int = 0) -> Tensor:
        """Attention output of query rows ``first:`` (all rows by default) against every key: (B, T − first, C)."""
        B, T, C = x.shape
        H, D = self.cfg.n_head, self.cfg.head_dim
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)

        if plan.kind == "explicit":
            y = self.explicit(q, k, v, ctx, pe, plan.chunk, first)
        else:
            q, k = pe.rotate(q, k, ctx, self.layer)  # the rotation reads whole-length tables: rows are cut after
            p = self.cfg.dropout if self.training else 0.0
            if plan.kind == "causal" and first == 0:
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)
            elif plan.kind == "causal":  # the last rows see every key up to their own
                y = F.scaled_dot_product_attention(q[:, :, first:], k, v, attn_mask=ctx.causal_mask()[first:],
                                                   dropout_p=p)
            elif len(plan.masks) == 1 and first == 0:
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=plan.masks[0][3], dropout_p=p)
            elif plan.kind == "mask":  # query blocks, each against the keys up to its last row
                y = torch.cat([F.scaled_dot_product_attention(q[:, :, max(a, first):b], k[:, :, :s], v[:, :, :s],
                                                              attn_mask=m[..., max(a, first) - a:, :], dropout_p=p)
                               for a, b, s, m in plan.masks if b > first], dim=2)
            else:  # FlexAttention runs whole; its rows are cut here
                y = _flex(q, k, v, plan)[:, :, first:]

        y = y.transpose(1, 2).contiguous().view(B, T - first, C)
        return self.proj(y)

    def explicit(self, q: Tensor, k: Tensor, v: Tensor, ctx: PositionContext, pe: PositionalEncoding,
                 chunk: int | None, first: int = 0) -> Tensor:
        """``pe.weights``(``pe.logits``)·v (the softmax over the causal mask by default) for query rows
        ``first:``, whole or in query chunks of ``chunk`` rows: (B, H, T − first, D)."""
        T, S = q.size(-2), k.size(-2)
        if first == 0 and (chunk is None or chunk >= T):
            att = pe.logits(q, k, ctx, self.layer)  # (B, H, T, S)
            w = pe.weights(att, ctx.causal_mask(), ctx, self.layer)
            return self.drop(w.to(v.dtype)) @ v
        halo, outs, step = pe.logits_halo, [], chunk or T - first
        for start in range(first, T, step):
            stop = min(start + step, T)
            k_stop = stop if ctx.causal_order else S  # later keys are masked for every query of the chunk
            top = max(0, start - halo)  # rows above the chunk that the PE's logits read (DAPE v2)
            sub = ctx.rows(top, stop, k_stop)
            att = pe.logits(q[:, :, top:stop], k[:, :, :k_stop], sub, self.layer)[:, :, start - top:]
            rows = sub if top == start else ctx.rows(start, stop, k_stop)  # the context of these rows
            w = pe.weights(att, rows.causal_mask(), rows, self.layer)
            outs.append(self.drop(w.to(v.dtype)) @ v[:, :, :k_stop])
        return torch.cat(outs, dim=2)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, 4 * cfg.d_model, bias=False)
        self.proj = nn.Linear(4 * cfg.d_model, cfg.d_model, bias=False)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = Attention(cfg, layer)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = MLP(cfg)

    def forward(self, x: Tensor, ctx: PositionContext, pe: PositionalEncoding, plan: LayerPlan,
                first: int = 0) -> Tensor:
        """The block's output for rows ``first:`` (all by default): (B, T − first, C)."""
        x = x[:, first:] + self.attn(self.ln1(x), ctx, pe, plan, first)  # pre-LN residual
        return x + self.mlp(self.ln2(x))


class Transformer(nn.Module):
    """Decoder-only byte LM. ``forward(tokens, pos=None, targets=None) -> (logits, loss)``."""

    def __init__(self, cfg: ModelConfig, pe: PositionalEncoding) -> None:
        super().__init__()
        if pe.head_dim != cfg.head_dim or pe.num_heads != cfg.n_head:
            raise ValueError(
                f"positional encoding built for head_dim={pe.head_dim}, num_heads={pe.num_heads}, "
                f"but the model has head_dim={cfg.head_dim}, n_head={cfg.n_head}"
            )
        self.cfg, self.pe = cfg, pe
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.head.weight = self.wte.weight  # weight tying, as in GPT-2
        pe_modules = set(self.pe.modules())  # the PE initialises its own parameters
        for m in self.modules():
            if m not in pe_modules:
                self._init(m)
        for name, p in self.named_parameters():  # GPT-2's scaled init of residual projections
            if name.endswith("proj.weight") and not name.startswith("pe."):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))
        # Float masks that depend only on positions, kept across forwards: (T, dtype, device, layer key) -> mask.
        self._static_masks: OrderedDict[tuple[Any, ...], tuple[MaskBlock, ...]] = OrderedDict()
        self._block_masks: OrderedDict[tuple[Any, ...], BlockMask] = OrderedDict()  # FlexAttention's, likewise

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def working_dtype(self, device: torch.device) -> torch.dtype:
        """The dtype q and k have in attention: the autocast dtype when autocast is on, else the weights'."""
        if torch.is_autocast_enabled(device.type):
            return torch.get_autocast_dtype(device.type)
        return self.wte.weight.dtype

    def context(self, tokens: Tensor, pos: Tensor | None = None) -> PositionContext:
        """The forward's position context: positions (the PE's own unless ``pos`` is given), token ids and
        the PE's tensors."""
        T = tokens.size(1)
        order: PositionOrder | None = None  # given positions are inspected
        if pos is None:
            pos = self.pe.positions(T, training=self.training, device=tokens.device)
            order = "increasing" if self.pe.samples_positions(self.training) else "arange"
        if pos.shape != (T,):
            raise ValueError(f"positions must have shape ({T},), got {tuple(pos.shape)}")
        return self.pe.context(pos, tokens=tokens, dtype=self.working_dtype(tokens.device), order=order)

    def plan(self, ctx: PositionContext, batch: int) -> list[LayerPlan]:
        """How each layer attends in this forward: the one place where the attention path is chosen."""
        mode, pe = self.cfg.attn, self.pe
        explicit = mode == "explicit" or pe.needs_explicit()
        plans: dict[int, LayerPlan] = {}
        block_mask: list[BlockMask] = []  # built at most once per forward, shared by the flex layers
        out = []
        for layer in range(self.cfg.n_layer):
            key = layer if pe.bias_per_layer else -1
            if key in plans:
                out.append(plans[key])
                continue
            if explicit:
                plan = LayerPlan("explicit", chunk=self._chunk_rows(ctx, batch))
            else:
                mod = pe.score_mod(ctx, layer)
                flex = mode == "flex" or (mode == "auto" and auto_flex(ctx.device.type, mod is not None,
                                                                    bool(self.cfg.dropout and self.training),
                                                                    torch.is_grad_enabled()))
                if flex:
                    if not block_mask:
                        block_mask.append(self._block_mask(ctx))
                    bias = pe.bias(ctx, layer) if mod is None else None
                    plan = LayerPlan("flex", score_mod=mod if bias is None else _bias_score_mod(bias),
                                     block_mask=block_mask[0])
                else:
                    plan = self._sdpa_plan(ctx, layer, key)
            plans[key] = plan
            out.append(plan)
        return out

    def _sdpa_plan(self, ctx: PositionContext, layer: int, key: int) -> LayerPlan:
        static = self.pe.static_bias and ctx.order == "arange"  # the mask is a function of (T, dtype, device)
        ck = (ctx.q_pos.numel(), ctx.dtype, ctx.device, key)
        if static and ck in self._static_masks:
            self._static_masks.move_to_end(ck)
            return LayerPlan("mask", masks=self._static_masks[ck])  # the PE's bias is then never built
        bias = self.pe.bias(ctx, layer)
        T, S = ctx.q_pos.numel(), ctx.k_pos.numel()
        if bias is None:
            return LayerPlan("causal") if ctx.causal_order else LayerPlan("mask", masks=((0, T, S, ctx.causal_mask()),))
        masks = _float_masks(bias, ctx)
        if static:
            self._static_masks[ck] = tuple((a, b, s, m.detach()) for a, b, s, m in masks)
            while len(self._static_masks) > _STATIC_MASKS:
                self._static_masks.popitem(last=False)
        return LayerPlan("mask", masks=masks)

    def _chunk_rows(self, ctx: PositionContext, batch: int) -> int | None:
        """Query rows per explicit-path chunk: whole with autograd, else under ``explicit_chunk_mb``."""
        if torch.is_grad_enabled():
            return None
        per_row = batch * self.cfg.n_head * ctx.k_pos.numel() * 4  # bytes of one float32 logits row
        rows = max(1, int(self.cfg.explicit_chunk_mb * 2**20 // max(per_row, 1)))
        return None if rows >= ctx.q_pos.numel() else rows

    def _block_mask(self, ctx: PositionContext) -> BlockMask:
        """FlexAttention's causal block mask from the positions; kept across forwards at plain positions."""
        key = ("flex", ctx.q_pos.numel(), ctx.device)
        if ctx.order == "arange" and key in self._block_masks:
            return self._block_masks[key]
        q_pos, k_pos = ctx.q_pos, ctx.k_pos

        def causal(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
            return k_pos[kv_idx] <= q_pos[q_idx]

        bm = create_block_mask(causal, None, None, q_pos.numel(), k_pos.numel(), device=ctx.device)
        if ctx.order == "arange":
            self._block_masks[key] = bm
            while len(self._block_masks) > _STATIC_MASKS:
                self._block_masks.popitem(last=False)
        return bm

    def forward(self, tokens: Tensor, pos: Tensor | None = None, targets: Tensor | None = None, *,
                last: int | None = None) -> tuple[Tensor, Tensor | None]:
        """Logits (B, T, V), or (B, ``last``, V) for the last ``last`` positions only (see the module
        docstring); ``targets`` has the logits' shape without V."""
        T = tokens.size(1)
        if last is not None and (isinstance(last, bool) or not isinstance(last, int) or not 1 <= last <= T):
            raise ValueError(f"Transformer.forward: 'last' must be an int in 1..{T} (the sequence length), "
                             f"got {last!r}")
        ctx = self.context(tokens, pos)
        plans = self.plan(ctx, tokens.size(0))
        s = self.cfg.token_scale  # tok + PE/s: the PE is added to √d-scaled tokens, then scaled back
        x = self.drop(self.pe.embed(self.wte(tokens) * s, ctx) / s)  # (B, T, C)
        final = len(self.blocks) - 1
        for i, (block, plan) in enumerate(zip(self.blocks, plans, strict=True)):
            x = block(x, ctx, self.pe, plan, T - last if last is not None and i == final else 0)
        logits = self.head(self.ln_f(x))  # (B, T or last, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _float_masks(bias: Tensor, ctx: PositionContext) -> tuple[MaskBlock, ...]:
    """Causal mask (0 / −inf) and the bias as float masks at the working dtype, (1 or B, H, t, s) each: one
    per query block when the positions are one increasing sequence (keys after a block's last query are
    masked for all of it, so they are left out), else one for everything.

    Built in one pass over the bias (``where``), since at long lengths the O(H·T²) mask traffic is a large part
    of a small model's attention cost.
    """
    T, S = ctx.q_pos.numel(), ctx.k_pos.numel()
    if ctx.causal_order:
        n = min(_MAX_MASK_BLOCKS, max(1, T // _MASK_BLOCK_ROWS))
        bounds = [(i * T // n, (i + 1) * T // n, (i + 1) * T // n) for i in range(n)]
    else:
        bounds = [(0, T, S)]
    sizes = [b - a for a, b, _ in bounds]
    # Row blocks by split (whose backward concatenates), then keys by narrow: a learned bias's gradient is not
    # assembled from one zero-filled (H, T, S) tensor per block.
    rows, allowed = bias.split(sizes, dim=-2), ctx.causal_mask().split(sizes, dim=-2)
    neg_inf = torch.tensor(float("-inf"), dtype=ctx.dtype, device=bias.device)
    out = []
    for (a, b, s), rb, ab in zip(bounds, rows, allowed, strict=True):
        m = torch.where(ab[:, :s], rb[..., :s].to(ctx.dtype), neg_inf)
        out.append((a, b, s, m[None] if m.dim() == 3 else m))  # CPU SDPA takes a much slower path for 3-D masks
    return tuple(out)
