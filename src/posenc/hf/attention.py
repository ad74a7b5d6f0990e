"""The posenc attention function for Hugging Face models, registered through transformers' attention registry.

Methods of the ``attention`` kind (:mod:`posenc.hf.support`) change attention beyond a rotation: their
``logits`` combine several RoPE passes (ReRoPE, Self-Extend, DCA), mask windows and keep sinks (StreamingLLM,
LM-Infinite), scale queries (SSMax, Entropy-ABF) or differ per layer (iRoPE). For them the model's rotary
module returns the identity rotation, so the attention function receives *unrotated* queries and keys (and a
KV cache stores keys before rotation, which remapping methods need), and computes

    softmax(mask(pe.logits(q, k, ctx, layer))) · v

with posenc's position context ``ctx`` of this forward. Conventions:

* transformers' Llama family rotates the half-split pairs (i, i + d/2) ("rotate-half"), posenc the
  consecutive pairs (2i, 2i + 1) with the same θ_i. The head dimensions of q and k are permuted into posenc's
  order before ``pe.logits`` (q·kᵀ is unchanged by a permutation applied to both); v is not permuted.
* ``pe.logits`` divides by √d; a model whose attention scale differs passes its ``scaling`` and q is
  multiplied by ``scaling·√d`` first.
* The mask is posenc's causal mask from positions, intersected with transformers' mask when it gives one
  (padding, sliding window). Key positions are 0..S−1 (the cache holds every earlier token).
* Without autograd, queries are processed in chunks so that one (B, H, chunk, S) float32 logits tensor stays
  under ``chunk_mb``: memory grows linearly with the length (as in :mod:`posenc.model`'s explicit path).

The function finds the method through the attention module it is called for: :func:`bind` records, per
attention module, the :class:`~posenc.hf.rotary.PosencRotaryEmbedding` that owns the forward's context.
"""

from __future__ import annotations

import math
import weakref
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from posenc.pe.base import PositionalEncoding
from posenc.pe.context import PositionContext

if TYPE_CHECKING:
    from posenc.hf.rotary import PosencRotaryEmbedding

__all__ = ["ATTN_IMPLEMENTATION", "to_consecutive", "bind", "bound", "posenc_attention", "chunked_attention",
           "register"]

#: The name under which the attention function (and its mask function) is registered in transformers.
ATTN_IMPLEMENTATION = "posenc"

_BINDINGS: weakref.WeakKeyDictionary[nn.Module, PosencRotaryEmbedding] = weakref.WeakKeyDictionary()


def to_consecutive(x: Tensor) -> Tensor:
    """Rotate-half head layout (pair i = dims i, i + d/2) → posenc's (pair i = dims 2i, 2i + 1): (..., D)."""
    half = x.size(-1) // 2
    return torch.stack((x[..., :half], x[..., half:]), dim=-1).flatten(-2)


def bind(attention_module: nn.Module, rotary: PosencRotaryEmbedding) -> None:
    """Route ``attention_module``'s calls of the posenc attention function to ``rotary``'s method."""
    _BINDINGS[attention_module] = rotary


def bound(attention_module: nn.Module) -> PosencRotaryEmbedding | None:
    return _BINDINGS.get(attention_module)


def _repeat_kv(x: Tensor, n_rep: int) -> Tensor:
    """(B, H_kv, S, D) → (B, H_kv·n_rep, S, D), each key-value head repeated for its group of query heads."""
    if n_rep == 1:
        return x
    b, h, s, d = x.shape
    return x[:, :, None].expand(b, h, n_rep, s, d).reshape(b, h * n_rep, s, d)


def chunked_attention(q: Tensor, k: Tensor, v: Tensor, ctx: PositionContext, pe: PositionalEncoding, layer: int, *,
                      mask: Tensor | None = None, chunk: int | None = None, dropout: float = 0.0,
                      training: bool = False) -> Tensor:
    """softmax(masked ``pe.logits``)·v for q (B, H, T, D), k, v (B, H, S, D) in posenc's layout → (B, H, T, D).

    ``mask``: transformers' mask (B or 1, 1 or H, T, S), bool (True: attend) or additive float; it is
    intersected with the causal mask from positions. ``chunk``: query rows per chunk (None: all at once).
    Rows with no visible key (padding) output zeros.
    """
    T, S = q.size(-2), k.size(-2)
    step = T if chunk is None else max(1, chunk)
    outs = []
    for start in range(0, T, step):
        stop = min(start + step, T)
        k_stop = stop if ctx.causal_order else S  # later keys are masked for every query of the chunk
        sub = ctx if (start, stop, k_stop) == (0, T, S) else ctx.rows(start, stop, k_stop)
        att = pe.logits(q[:, :, start:stop], k[:, :, :k_stop], sub, layer).float()  # (B, H, t, s)
        allowed = sub.causal_mask()
        if mask is not None:
            m = mask[..., start:stop, :k_stop]
            if m.dtype == torch.bool:
                allowed = allowed & m
            else:
                att = att + m.float()
        att = att.masked_fill(~allowed, float("-inf"))
        p = att.softmax(dim=-1).nan_to_num(0.0)  # a fully masked row (padding) gives zeros, not NaN
        if dropout and training:
            p = nn.functional.dropout(p, p=dropout, training=True)
        outs.append(p.to(v.dtype) @ v[:, :, :k_stop])
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)


def posenc_attention(module: nn.Module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None,
                     scaling: float | None = None, dropout: float = 0.0, **kwargs: Any) -> tuple[Tensor, None]:
    """transformers attention-function signature: q (B, H, T, D), k, v (B, H_kv, S, D) → ((B, T, H, D), None)."""
    rotary = bound(module)
    if rotary is None:
        raise RuntimeError(f"posenc attention called for {type(module).__name__}, which posenc.hf.apply did not "
                           "prepare (re-apply the method to this model)")
    B, H, T, D = query.shape
    key, value = _repeat_kv(key, H // key.size(1)), _repeat_kv(value, H // value.size(1))
    q, k = to_consecutive(query), to_consecutive(key)
    if scaling is not None and not math.isclose(scaling, D**-0.5, rel_tol=1e-6):
        q = q * (scaling * math.sqrt(D))  # pe.logits divides by √d
    ctx = rotary.attention_context(T, key.size(-2), query.device, query.dtype)
    chunk = None
    if not torch.is_grad_enabled():  # with autograd every chunk would be kept for backward anyway
        per_row = B * H * key.size(-2) * 4
        rows = max(1, int(rotary.chunk_mb * 2**20 // per_row))
        chunk = None if rows >= T else rows
    out = chunked_attention(q, k, value, ctx, rotary.pe, int(module.layer_idx), mask=attention_mask, chunk=chunk,
                            dropout=dropout, training=module.training)
    return out.transpose(1, 2).contiguous(), None


def register() -> None:
    """Register :func:`posenc_attention` and its mask function (transformers' SDPA mask: None when plainly
    causal, else a boolean mask) under :data:`ATTN_IMPLEMENTATION`. Idempotent."""
    from transformers import AttentionInterface  # lazy: transformers is an optional dependency
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTN_IMPLEMENTATION, posenc_attention)
    AttentionMaskInterface.register(ATTN_IMPLEMENTATION, sdpa_mask)
