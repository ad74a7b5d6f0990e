"""RNoPE-SWA, SWAN-GPT and Hard-ALiBi: hand-computed masks and scales, layer patterns against ``transformers``'
Cohere2 (the production form of RNoPE-SWA) and the sliding-window mask against its ``masking_utils``, and the
Hard-ALiBi masks against the released code's construction (re-derived)."""

from __future__ import annotations

import math

import pytest
import torch

import posenc
from posenc.pe.base import spec
from posenc.pe.hybrid_layers import hard_alibi_bias, window_bias

H, D, L = 4, 8, 16


def build(pe_id: str, **hp: object) -> posenc.PositionalEncoding:
    torch.manual_seed(0)
    return posenc.build(pe_id, head_dim=D, num_heads=H, train_len=L, **hp)


def test_window_bias_hand_computed() -> None:
    pos = torch.arange(4.0)
    allowed = window_bias(pos, pos, 2) == 0
    expect = torch.tensor([[1, 1, 1, 1],
                           [1, 1, 1, 1],
                           [0, 1, 1, 1],
                           [0, 0, 1, 1]], dtype=torch.bool)  # i − j < 2 (future keys left to the causal mask)
    assert torch.equal(allowed, expect)
    assert torch.isneginf(window_bias(pos, pos, 2)[3, 0])


def test_sliding_window_matches_transformers_masking_utils() -> None:
    masking = pytest.importorskip("transformers.masking_utils")
    T, w = 12, 5
    pos = torch.arange(float(T))
    ours = (window_bias(pos, pos, w) == 0) & (pos[None, :] <= pos[:, None])
    fn = masking.and_masks(masking.causal_mask_function, masking.sliding_window_overlay(w))
    ref = torch.tensor([[bool(fn(0, 0, torch.tensor(i), torch.tensor(j))) for j in range(T)] for i in range(T)])
    assert torch.equal(ours, ref)


def test_rnope_layer_pattern_matches_cohere2() -> None:
    cohere2 = pytest.importorskip("transformers.models.cohere2.configuration_cohere2")
    cfg = cohere2.Cohere2Config(num_hidden_layers=12)
    pe = build("rnope_swa", nope_every=4)
    assert [pe.is_nope(i) for i in range(12)] == [t == "full_attention" for t in cfg.layer_types]
    assert cfg.sliding_window == 4096  # the released models' window (our default is train_len // 2)


def test_rnope_layers() -> None:
    """RoPE layers: RoPE logits plus the window mask; NoPE layers: q·kᵀ/√d over the whole causal context."""
    pe, rope = build("rnope_swa", window=3), build("rope")
    assert pe.window == 3 and build("rnope_swa").window == L // 2 and spec("rnope_swa").relative
    torch.manual_seed(1)
    T = 10
    q, k = torch.randn(1, H, T, D), torch.randn(1, H, T, D)
    pos = torch.arange(float(T))
    ctx = pe.context(pos)
    local = rope.logits(q, k, rope.context(pos)) + window_bias(pos, pos, 3)
    torch.testing.assert_close(pe.logits(q, k, ctx, layer=0), local)
    torch.testing.assert_close(pe.logits(q, k, ctx, layer=3), q @ k.transpose(-1, -2) / math.sqrt(D))
    assert pe.bias(ctx, 3) is None


def test_swan_layer_pattern_and_window() -> None:
    pe = build("swan_gpt")
    assert [pe.is_nope(i) for i in range(8)] == [True, False, False, False, True, False, False, False]
    assert pe.window == L // 16 and not spec("swan_gpt").relative
    assert build("swan_gpt", window=5).window == 5


def test_swan_inference_scaling_hand_computed() -> None:
    """s(i) = ln(i + a)/ln a with a = 16: s(0) = 1, s(16) = ln 32/ln 16 = 5/4, s(240) = ln 256/ln 16 = 2."""
    pe = build("swan_gpt", log_base=16.0).eval()
    torch.testing.assert_close(pe.query_scale(torch.tensor([0.0, 16.0, 240.0])), torch.tensor([1.0, 1.25, 2.0]))
    pos = torch.tensor([0.0, 16.0, 240.0])
    q, k = torch.ones(1, H, 3, D), torch.ones(1, H, 3, D)
    qs, _ = pe.rotate(q, k, pe.context(pos), layer=0)  # a NoPE layer: queries scaled
    torch.testing.assert_close(qs[0, 0, :, 0], torch.tensor([1.0, 1.25, 2.0]))
    pe.train()
    qt, _ = pe.rotate(q, k, pe.context(pos), layer=0)  # training: no scaling
    torch.testing.assert_close(qt, q)
    off = build("swan_gpt", inference_scaling=False).eval()
    torch.testing.assert_close(off.rotate(q, k, off.context(pos), layer=0)[0], q)
    assert build("swan_gpt").log_base == float(L)


def _released_hard_alibi_masks(T: int, num_heads: int, num_masked_heads: int) -> torch.Tensor:
    """The released ``hard_alibi_model.py`` construction, re-derived: head i starts fully masked and the
    diagonals 0..i are opened one by one; unmasked heads add nothing. Returns allowed (H, T, T) with causality."""
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    out = causal[None].repeat(num_heads, 1, 1)
    for i in range(num_masked_heads):
        opened = torch.zeros(T, T, dtype=torch.bool)
        for j in range(i + 1):
            opened[range(j, T), range(0, T - j)] = True
        out[i] &= opened
    return out


def test_hard_alibi_hand_computed_and_released_masks() -> None:
    pe = build("hard_alibi")
    assert pe.num_masked_heads == H // 2 and spec("hard_alibi").relative
    T = 7
    pos = torch.arange(float(T))
    b = pe.bias(pe.context(pos))
    assert b.shape == (H, T, T)
    assert torch.isneginf(b[0, 3, 2]) and b[0, 3, 3] == 0  # head 0: the token itself only
    assert b[1, 3, 2] == 0 and torch.isneginf(b[1, 3, 1])  # head 1: distances 0 and 1
    assert (b[2:] == 0).all()  # NoPE heads
    causal = pos[None, :] <= pos[:, None]
    for masked in range(H + 1):
        ours = (hard_alibi_bias(pos, pos, H, masked) == 0) & causal
        assert torch.equal(ours, _released_hard_alibi_masks(T, H, masked))
    with pytest.raises(ValueError, match="num_masked_heads"):
        build("hard_alibi", num_masked_heads=H + 1)
