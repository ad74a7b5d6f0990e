"""The posenc attention function against posenc's own reference model, on identical q, k and v.

For every supported method (registry-driven), the function registered in transformers' attention registry
(queries and keys in transformers' rotate-half layout, grouped key-value heads) returns what the reference
model's explicit attention (:meth:`posenc.model.Attention.explicit`) returns on the permuted q and repeated
k, v: in one piece and in query chunks, for a prefill (T = S) and for decoding with a cache (T < S), and with
an attention scale other than 1/√d.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from posenc.hf import supported_methods
from posenc.hf.attention import bind, chunked_attention, posenc_attention, to_consecutive
from posenc.hf.rotary import PosencRotaryEmbedding
from posenc.model import Attention, ModelConfig
from posenc.pe import build

H, H_KV, D, L = 4, 2, 16, 16
LAYER = 3  # iRoPE's first NoPE layer (nope_every = 4), an Entropy-ABF scaled layer


class FakeAttention(nn.Module):
    """What the function reads from a transformers attention module."""

    def __init__(self) -> None:
        super().__init__()
        self.layer_idx, self.num_key_value_groups = LAYER, H // H_KV


def setup(method: str, chunk_mb: float = 256.0) -> tuple[FakeAttention, PosencRotaryEmbedding]:
    pe = build(method, head_dim=D, num_heads=H, train_len=L).eval()
    rotary = PosencRotaryEmbedding(pe, "attention", method=method, hparams={}, original_attn_implementation="sdpa",
                                   chunk_mb=chunk_mb)
    module = FakeAttention().eval()
    bind(module, rotary)
    return module, rotary


def qkv(T: int, S: int, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(1, H, T, D, generator=g) * 2, torch.randn(1, H_KV, S, D, generator=g) * 2,
            torch.randn(1, H_KV, S, D, generator=g))


def reference(method: str, pe: nn.Module, q: Tensor, k: Tensor, v: Tensor, q_pos: Tensor, k_pos: Tensor,
              q_factor: float = 1.0) -> Tensor:
    """posenc's reference model attention on the permuted q (× q_factor) and repeated, permuted k, v."""
    attn = Attention(ModelConfig(n_head=H, d_model=H * D, n_layer=LAYER + 1), LAYER).eval()
    rep = H // H_KV
    k_r, v_r = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    ctx = pe.context(q_pos, None if k_pos is q_pos else k_pos)
    with torch.no_grad():
        out = attn.explicit(to_consecutive(q) * q_factor, to_consecutive(k_r), v_r, ctx, pe, None)
    return out.transpose(1, 2)  # (B, T, H, D)


def run(module: FakeAttention, rotary: PosencRotaryEmbedding, q: Tensor, k: Tensor, v: Tensor, q_pos: Tensor,
        scaling: float | None = None) -> Tensor:
    rotary(q, q_pos[None].long())  # the model calls its rotary module once per forward, before the layers
    with torch.no_grad():
        out, weights = posenc_attention(module, q, k, v, None, scaling=scaling if scaling else D**-0.5)
    assert weights is None
    return out


def test_to_consecutive_is_the_fixed_permutation() -> None:
    x = torch.arange(8.0)
    assert to_consecutive(x).tolist() == [0, 4, 1, 5, 2, 6, 3, 7]  # pair i = (i, i + d/2) → (2i, 2i + 1)


@pytest.mark.parametrize("method", supported_methods())
def test_prefill_equals_the_reference_model(method: str) -> None:
    T = 3 * L
    q, k, v = qkv(T, T)
    pos = torch.arange(T, dtype=torch.float32)
    module, rotary = setup(method)
    ref = reference(method, rotary.pe, q, k, v, pos, pos)
    torch.testing.assert_close(run(module, rotary, q, k, v, pos), ref, rtol=1e-5, atol=1e-5)
    module, rotary = setup(method, chunk_mb=H * T * 4 * 7 / 2**20)  # 7-row chunks
    torch.testing.assert_close(run(module, rotary, q, k, v, pos), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", supported_methods())
def test_decoding_with_a_cache_equals_the_reference_model(method: str) -> None:
    """Queries at the last T of S positions against all S cached (unrotated) keys."""
    T, S = 5, 3 * L
    q, k, v = qkv(T, S, seed=1)
    q_pos, k_pos = torch.arange(S - T, S, dtype=torch.float32), torch.arange(S, dtype=torch.float32)
    module, rotary = setup(method)
    ref = reference(method, rotary.pe, q, k, v, q_pos, k_pos)
    torch.testing.assert_close(run(module, rotary, q, k, v, q_pos), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["rerope", "ssmax", "streaming_llm"])
def test_a_model_specific_attention_scale_is_kept(method: str) -> None:
    T = 2 * L
    q, k, v = qkv(T, T, seed=2)
    pos = torch.arange(T, dtype=torch.float32)
    module, rotary = setup(method)
    ref = reference(method, rotary.pe, q, k, v, pos, pos, q_factor=0.7)
    torch.testing.assert_close(run(module, rotary, q, k, v, pos, scaling=0.7 / math.sqrt(D)), ref, rtol=1e-5,
                               atol=1e-5)


def test_masks_are_intersected_and_empty_rows_give_zeros() -> None:
    T = 12
    pe = build("rope", head_dim=D, num_heads=H, train_len=L)
    pos = torch.arange(T, dtype=torch.float32)
    q, k, v = (t.repeat_interleave(H // H_KV, 1) if i else t for i, t in enumerate(qkv(T, T, seed=3)))
    keep = torch.ones(1, 1, T, T, dtype=torch.bool)
    keep[..., :3] = False  # three padding keys: rows 0..2 see nothing
    out = chunked_attention(q, k, v, pe.context(pos), pe, 0, mask=keep)
    assert torch.isfinite(out).all() and out[:, :, :3].abs().max() == 0
    additive = torch.zeros(1, 1, T, T).masked_fill(~keep, float("-inf"))
    torch.testing.assert_close(chunked_attention(q, k, v, pe.context(pos), pe, 0, mask=additive)[:, :, 3:],
                               out[:, :, 3:])
    att = pe.logits(q, k, pe.context(pos)).masked_fill(~(keep[0, 0] & torch.ones(T, T).tril().bool()), -math.inf)
    torch.testing.assert_close(out[:, :, 3:], (att.softmax(-1) @ v)[:, :, 3:], rtol=1e-5, atol=1e-5)


def test_an_unprepared_module_is_named() -> None:
    q, k, v = qkv(4, 4)
    with pytest.raises(RuntimeError, match="FakeAttention, which posenc.hf.apply did not prepare"):
        posenc_attention(FakeAttention(), q, k, v, None, scaling=D**-0.5)
