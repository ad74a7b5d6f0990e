"""The per-forward position context (posenc.pe.context)."""

from __future__ import annotations

import pytest
import torch

import posenc
from posenc.pe.context import PositionContext


def test_order_is_detected_from_positions() -> None:
    a = torch.arange(6.0)
    assert PositionContext.build(a).order == "arange"
    assert PositionContext.build(a * 2).order == "increasing"
    assert PositionContext.build(a.flip(0)).order == "any"
    assert PositionContext.build(a, torch.arange(9.0)).order == "any"  # decoding: queries are not the keys
    assert PositionContext.build(a, a.clone()).order == "arange"  # equal tensors count as one sequence
    with pytest.raises(ValueError, match="one position tensor"):
        PositionContext.build(a, torch.arange(6.0), order="arange")
    with pytest.raises(ValueError, match="1-D"):
        PositionContext.build(torch.zeros(2, 3))


def test_length_is_the_largest_position_plus_one() -> None:
    assert PositionContext.build(torch.arange(6.0), order="arange").length == 6
    assert PositionContext.build(torch.tensor([0.0, 5.0, 40.0])).length == 41
    assert PositionContext.build(torch.tensor([3.0]), torch.tensor([0.0, 9.0])).length == 10


def test_put_get_lazy_and_errors() -> None:
    ctx = PositionContext.build(torch.arange(4.0))
    calls = []
    ctx.put("a", 1)
    ctx.put_lazy("b", lambda c: calls.append(1) or torch.ones(2))
    assert ctx.get("a") == 1 and not calls
    assert torch.equal(ctx.get("b"), torch.ones(2)) and ctx.get("b") is ctx.get("b") and calls == [1]
    with pytest.raises(ValueError, match="already set"):
        ctx.put("a", 2)
    with pytest.raises(KeyError, match="pe.context"):
        ctx.get("missing")


def test_rows_slice_every_tensor_along_its_query_and_key_dims() -> None:
    pos = torch.arange(8.0)
    ctx = PositionContext.build(pos)
    ctx.put("qk", pos[:, None] * 10 + pos[None, :], q_dim=-2, k_dim=-1)
    ctx.put("q", pos[:, None].expand(8, 3), q_dim=0)
    ctx.put("k", pos, k_dim=0)
    ctx.put("const", 5.0)
    child = ctx.child_for()
    child.put("bias", pos[None, :, None] - pos[None, None, :], q_dim=-2, k_dim=-1)
    sub = ctx.rows(2, 5, 5)
    assert sub.order == "any" and sub.length == 8  # the forward's length, not the chunk's
    assert torch.equal(sub.q_pos, pos[2:5]) and torch.equal(sub.k_pos, pos[:5])
    assert torch.equal(sub.get("qk"), ctx.get("qk")[2:5, :5])
    assert torch.equal(sub.get("q"), ctx.get("q")[2:5]) and torch.equal(sub.get("k"), pos[:5])
    assert sub.get("const") == 5.0
    assert sub.child is not None and torch.equal(sub.child.get("bias"), child.get("bias")[:, 2:5, :5])
    assert torch.equal(sub.causal_mask(), ctx.causal_mask()[2:5, :5])


def test_rows_build_lazy_maps_for_the_chunk_only() -> None:
    pos = torch.arange(8.0)
    ctx = PositionContext.build(pos)
    built: list[int] = []

    def rel(c: PositionContext) -> torch.Tensor:
        built.append(c.q_pos.numel())
        return c.q_pos[:, None] - c.k_pos[None, :]

    ctx.put_lazy("rel", rel, q_dim=-2, k_dim=-1)
    sub = ctx.rows(4, 6, 6)
    assert torch.equal(sub.get("rel"), (pos[:, None] - pos[None, :])[4:6, :6]) and built == [2]
    assert torch.equal(ctx.get("rel"), pos[:, None] - pos[None, :]) and built == [2, 8]
    assert torch.equal(ctx.rows(0, 3, 3).get("rel"), ctx.get("rel")[:3, :3]) and built == [2, 8]  # built: sliced


def test_standalone_use_outside_the_model() -> None:
    pe = posenc.build("yarn", head_dim=8, num_heads=2, train_len=16, scale=4)
    q = k = torch.randn(1, 2, 5, 8)
    ctx = pe.context(torch.arange(5.0))
    assert {"cos_q", "sin_q", "cos_k", "sin_k"} <= set(ctx._tensors)
    assert pe.logits(q, k, ctx).shape == (1, 2, 5, 5)
    with pytest.raises(KeyError, match="pe.context"):
        pe.rotate(q, k, PositionContext.build(torch.arange(5.0)))  # a bare context has no cos/sin
