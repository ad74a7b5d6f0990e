"""Index remapping, windows/sinks, temperatures and NoPE hybrids against brute-force references."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor

import posenc
from posenc.model import ModelConfig, Transformer
from posenc.pe.base import get_class
from posenc.pe.other import DualChunkAttention, IRoPE, LMInfinite, ReRoPE, SelfExtend, SSMax, StreamingLLM
from posenc.pe.rope import apply_rotary, default_inv_freq

HEAD_DIM, HEADS, L = 16, 2, 16


def build(pe_id: str, **hp: object) -> posenc.PositionalEncoding:
    return posenc.build(pe_id, head_dim=HEAD_DIM, num_heads=HEADS, train_len=L, **hp)


def qk(T: int, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, HEADS, T, HEAD_DIM, generator=g)
    k = torch.randn(1, HEADS, T, HEAD_DIM, generator=g)
    return q, k, torch.arange(T, dtype=torch.float32)


def rope_logits(q: Tensor, k: Tensor, pos: Tensor) -> Tensor:
    rope = build("rope")
    return rope.logits(q, k, rope.context(pos))


def rope_free_logits(q: Tensor, k: Tensor) -> Tensor:
    return q @ k.transpose(-2, -1) / math.sqrt(HEAD_DIM)


def reference(q: Tensor, k: Tensor, rel: Callable[[int, int], float | None]) -> Tensor:
    """Scores from the definition: RoPE at relative position rel(i, j) (R_rel q)·k/√d; −inf for None."""
    T = q.size(-2)
    inv = default_inv_freq(HEAD_DIM, 10000.0)
    out = torch.full((1, HEADS, T, T), float("-inf"))
    for i in range(T):
        for j in range(i + 1):
            r = rel(i, j)
            if r is not None:
                qi = apply_rotary(q[..., i : i + 1, :], torch.tensor([float(r)]), inv)
                out[..., i, j] = (qi[..., 0, :] * k[..., j, :]).sum(-1) / math.sqrt(HEAD_DIM)
    return out


def assert_causal_close(actual: Tensor, expected: Tensor) -> None:
    T = actual.size(-1)
    tril = torch.tril(torch.ones(T, T, dtype=torch.bool))
    torch.testing.assert_close(actual[..., tril], expected[..., tril], rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------- ReRoPE
def test_rerope_equals_rope_inside_window_and_freezes_outside() -> None:
    pe = build("rerope", window=4, log_scale=False)
    assert isinstance(pe, ReRoPE)
    q, k, pos = qk(12)
    assert_causal_close(pe.logits(q, k, pe.context(pos)), reference(q, k, lambda i, j: i - j if i - j < 4 else 4))
    small_q, small_k, small_pos = qk(4)
    torch.testing.assert_close(pe.logits(small_q, small_k, pe.context(small_pos)),
                               rope_logits(small_q, small_k, small_pos))


def test_leaky_rerope_steps_one_over_k_beyond_window() -> None:
    pe = build("rerope", window=4, leaky_k=8.0, log_scale=False)
    q, k, pos = qk(12)
    expected = reference(q, k, lambda i, j: i - j if i - j < 4 else 4 + (i - j - 4) / 8)
    assert_causal_close(pe.logits(q, k, pe.context(pos)), expected)


def test_rerope_log_scale_of_queries() -> None:
    pe = build("rerope")
    assert pe.window == L // 8
    scale = pe.query_scale(torch.tensor([0.0, L - 1, 4 * L - 1]))
    torch.testing.assert_close(scale, torch.tensor([1.0, 1.0, math.log(4 * L) / math.log(L)]))
    q, k, pos = qk(L)  # T <= L: the log scale is 1, so only the window acts
    no_log = build("rerope", log_scale=False)
    torch.testing.assert_close(pe.logits(q, k, pe.context(pos)), no_log.logits(q, k, no_log.context(pos)))


# ---------------------------------------------------------------------- Self-Extend
def test_self_extend_neighbour_and_grouped_positions() -> None:
    G, w = 3, 4
    pe = build("self_extend", group_size=G, neighbor_window=w)
    assert isinstance(pe, SelfExtend)
    q, k, pos = qk(14)
    expected = reference(q, k, lambda i, j: i - j if i - j < w else i // G - j // G + w - w / G)
    assert_causal_close(pe.logits(q, k, pe.context(pos)), expected)


def test_self_extend_equals_rope_when_sequence_fits_the_neighbour_window() -> None:
    pe = build("self_extend")
    assert pe.neighbor_window == L // 4 and pe.group_size == 8
    q, k, pos = qk(L // 4)
    torch.testing.assert_close(pe.logits(q, k, pe.context(pos)), rope_logits(q, k, pos))


# ---------------------------------------------------------------------- DCA
def _dca_rel(i: int, j: int, s: int, c: int) -> int:
    ci, cj, r, kp = i // s, j // s, i % s, j % s
    if ci == cj:
        return r - kp
    if ci - cj == 1:
        return min(r + s, c) - kp
    return min(2 * s - 1, c) - kp


def test_dca_three_branches_match_definition() -> None:
    pe = build("dca")
    assert isinstance(pe, DualChunkAttention)
    c, w = pe.chunk_size, pe.local_window
    assert (c, w) == (3 * L // 4, L // 16)  # released-code defaults
    s = c - w
    # Hand-checked cases (L = 16: c = 12, w = 1, s = 11).
    assert (_dca_rel(22, 5, s, c), _dca_rel(12, 10, s, c), _dca_rel(15, 10, s, c)) == (7, 2, 2)
    q, k, pos = qk(40)
    assert_causal_close(pe.logits(q, k, pe.context(pos)), reference(q, k, lambda i, j: _dca_rel(i, j, s, c)))
    rels = [_dca_rel(i, j, s, c) for i in range(200) for j in range(i + 1)]
    assert 0 <= min(rels) and max(rels) <= c < L  # no relative position is unseen


def test_dca_equals_rope_up_to_chunk_size() -> None:
    pe = build("dca")
    q, k, pos = qk(pe.chunk_size)  # future keys (masked by the model) may differ: compare j <= i
    assert_causal_close(pe.logits(q, k, pe.context(pos)), rope_logits(q, k, pos))
    q, k, pos = qk(pe.chunk_size + 3)
    tril = torch.tril(torch.ones(pe.chunk_size + 3, pe.chunk_size + 3, dtype=torch.bool))
    assert not torch.allclose(pe.logits(q, k, pe.context(pos))[..., tril], rope_logits(q, k, pos)[..., tril])


# ---------------------------------------------------------------------- windows and sinks
def test_streaming_llm_mask_and_cache_slot_positions() -> None:
    sinks, window = 2, 3
    pe = build("streaming_llm", num_sinks=sinks, window=window)
    assert isinstance(pe, StreamingLLM)
    q, k, pos = qk(10)
    expected_vis = torch.tensor(
        [[j < sinks or 0 <= i - j < window for j in range(10)] for i in range(10)], dtype=torch.bool
    )
    assert torch.equal(pe.visible(pos, pos) & torch.tril(torch.ones(10, 10, dtype=torch.bool)),
                       expected_vis & torch.tril(torch.ones(10, 10, dtype=torch.bool)))
    cache = sinks + window

    def rel(i: int, j: int) -> float | None:
        if j < sinks:
            return min(i, cache - 1) - j  # the sink keeps its slot, the query sits at the last slot
        return i - j if i - j < window else None

    logits = pe.logits(q, k, pe.context(pos))
    assert_causal_close(logits, reference(q, k, rel))
    assert torch.isfinite(torch.diagonal(logits, dim1=-2, dim2=-1)).all()
    assert build("streaming_llm").window == L - 4


def test_streaming_llm_equals_rope_while_cache_not_full() -> None:
    pe = build("streaming_llm")
    q, k, pos = qk(L)
    torch.testing.assert_close(pe.logits(q, k, pe.context(pos)), rope_logits(q, k, pos))


def test_lm_infinite_lambda_mask_and_distance_cap() -> None:
    pe = build("lm_infinite", n_global=2, n_local=3)
    assert isinstance(pe, LMInfinite) and pe.limit_distance == 3
    q, k, pos = qk(10)

    def rel(i: int, j: int) -> float | None:
        if i - j < 3:
            return i - j
        return 3 if j < 2 else None

    logits = pe.logits(q, k, pe.context(pos))
    assert_causal_close(logits, reference(q, k, rel))
    assert torch.isfinite(torch.diagonal(logits, dim1=-2, dim2=-1)).all()
    default = build("lm_infinite")
    assert (default.n_global, default.n_local, default.limit_distance) == (10, L, L)
    q, k, pos = qk(L)
    torch.testing.assert_close(default.logits(q, k, default.context(pos)), rope_logits(q, k, pos))


# ---------------------------------------------------------------------- SSMax, DroPE, iRoPE
def test_ssmax_scales_logits_by_s_log_n() -> None:
    pe = build("ssmax")
    assert isinstance(pe, SSMax)
    torch.testing.assert_close(pe.s.detach(), torch.full((1, HEADS), 1 / math.log(L)))
    with torch.no_grad():
        pe.s.copy_(torch.tensor([[0.5, 2.0]]))
    q, k, pos = qk(9)
    n = torch.arange(1, 10, dtype=torch.float32)
    factor = torch.tensor([0.5, 2.0])[:, None] * n.log()[None, :]  # (H, T)
    expected = rope_logits(q, k, pos) * factor[None, :, :, None]
    torch.testing.assert_close(pe.logits(q, k, pe.context(pos)), expected)


def test_ssmax_scales_inner_bias_and_trains_s() -> None:
    pe = build("ssmax", inner="alibi")
    _, _, pos = qk(5)
    ctx = pe.context(pos)
    b, inner = pe.bias(ctx), pe.inner.bias(ctx.child)  # the inner PE's bias lives in the child context
    assert b is not None and inner is not None
    torch.testing.assert_close(b, inner * pe.factor(ctx)[:, :, None])
    q, k, _ = qk(5)
    pe.logits(q, k, pe.context(pos)).sum().backward()
    assert pe.s.grad is not None and torch.isfinite(pe.s.grad).all() and pe.s.grad.abs().sum() > 0


def test_ssmax_per_layer_scalars() -> None:
    pe = build("ssmax", num_layers=2)
    assert pe.s.shape == (2, HEADS) and pe.bias_per_layer
    with torch.no_grad():
        pe.s[1] *= 3
    _, _, pos = qk(6)
    torch.testing.assert_close(pe.factor(pe.context(pos), 1), 3 * pe.factor(pe.context(pos), 0))
    with pytest.raises(ValueError, match="num_layers"):
        pe.factor(pe.context(pos), 2)


def test_drope_is_nope_with_optional_temperature() -> None:
    q, k, pos = qk(4 * L)
    nope = rope_free_logits(q, k)
    drope = build("drope")
    torch.testing.assert_close(drope.logits(q, k, drope.context(pos)), nope)
    pe = build("drope", temperature_c=0.1)
    torch.testing.assert_close(pe.logits(q, k, pe.context(pos)), nope * (1 + 0.1 * math.log(4)))
    q, k, pos = qk(L)
    torch.testing.assert_close(pe.logits(q, k, pe.context(pos)), rope_free_logits(q, k))


def test_irope_interleaves_rope_and_nope_layers() -> None:
    pe = build("irope", nope_every=2)
    assert isinstance(pe, IRoPE) and pe.bias_per_layer
    q, k, pos = qk(L - 1)  # below floor_scale - 1: the temperature is exactly 1
    rq, rk = pe.rotate(q, k, pe.context(pos), 0)
    rope = build("rope")
    eq, ek = rope.rotate(q, k, rope.context(pos))
    torch.testing.assert_close((rq, rk), (eq, ek))
    nq, nk = pe.rotate(q, k, pe.context(pos), 1)
    assert torch.equal(nq, q) and torch.equal(nk, k)  # NoPE layer: no rotation
    assert [pe.is_nope(i) for i in range(8)] == [False, True] * 4
    assert [build("irope").is_nope(i) for i in range(8)] == [False, False, False, True] * 2


def test_irope_temperature_formula_and_chunked_attention() -> None:
    pe = build("irope", floor_scale=4, attn_scale=0.1)
    t = pe.query_temperature(torch.tensor([0.0, 2, 3, 7, 11]))
    torch.testing.assert_close(t, torch.tensor([1.0, 1.0, 1 + 0.1 * math.log(2), 1 + 0.1 * math.log(3),
                                                1 + 0.1 * math.log(4)]))
    q, k, pos = qk(8)
    nq, _ = pe.rotate(q, k, pe.context(pos), 3)
    torch.testing.assert_close(nq, q * pe.query_temperature(pos)[:, None])
    off = build("irope", nope_every=2, temperature_tuning=False)
    assert torch.equal(off.rotate(q, k, off.context(pos), 1)[0], q)
    chunked = build("irope", nope_every=2, attention_chunk=3)
    b = chunked.bias(chunked.context(pos), 0)
    assert b is not None and b.shape == (HEADS, 8, 8)
    same = (pos[:, None] // 3) == (pos[None, :] // 3)
    assert torch.equal(torch.isfinite(b[0]), same) and chunked.bias(chunked.context(pos), 1) is None


# ---------------------------------------------------------------------- errors and end to end
@pytest.mark.parametrize(
    ("pe_id", "hp", "name"),
    [
        ("rerope", {"window": 0}, "window"),
        ("rerope", {"window": L + 1}, "window"),
        ("rerope", {"leaky_k": 1.0}, "leaky_k"),
        ("rerope", {"base": 1.0}, "base"),
        ("self_extend", {"group_size": 0}, "group_size"),
        ("self_extend", {"neighbor_window": L}, "neighbor_window"),
        ("dca", {"chunk_size": L + 1}, "chunk_size"),
        ("dca", {"local_window": 12}, "local_window"),
        ("streaming_llm", {"num_sinks": -1}, "num_sinks"),
        ("streaming_llm", {"window": 0}, "window"),
        ("lm_infinite", {"n_global": -1}, "n_global"),
        ("lm_infinite", {"n_local": 0}, "n_local"),
        ("lm_infinite", {"limit_distance": 0}, "limit_distance"),
        ("ssmax", {"s_init": float("nan")}, "s_init"),
        ("ssmax", {"num_layers": 0}, "num_layers"),
        ("ssmax", {"inner": "dca"}, "inner"),
        ("drope", {"temperature_c": -1.0}, "temperature_c"),
        ("irope", {"nope_every": 0}, "nope_every"),
        ("irope", {"floor_scale": 0}, "floor_scale"),
        ("irope", {"attention_chunk": 0}, "attention_chunk"),
    ],
)
def test_invalid_hyperparameters_name_the_parameter(pe_id: str, hp: dict[str, object], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        build(pe_id, **hp)


IDS = ["rerope", "self_extend", "dca", "streaming_llm", "lm_infinite", "ssmax", "drope", "irope"]


def test_zero_shot_methods_declare_rope() -> None:
    for pe_id in IDS:
        expected = None if pe_id in ("ssmax", "irope") else "rope"
        assert get_class(pe_id).applies_to == expected, pe_id


@pytest.mark.parametrize("pe_id", [*IDS, "randomized", "pose"])
def test_end_to_end_train_step_and_long_eval(pe_id: str) -> None:
    cfg = ModelConfig()
    torch.manual_seed(0)
    hp = {"nope_every": 2} if pe_id == "irope" else {}
    pe = posenc.build(pe_id, head_dim=cfg.head_dim, num_heads=cfg.n_head, train_len=64, **hp)
    m = Transformer(cfg, pe).train()
    tokens = torch.randint(0, 256, (2, 64))
    _, loss = m(tokens, targets=tokens)
    assert loss is not None and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in m.parameters())
    m.eval()
    with torch.no_grad():
        logits, _ = m(torch.randint(0, 256, (1, 2048)))
    assert torch.isfinite(logits).all()
