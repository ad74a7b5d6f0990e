"""STRING and Mesa-Extrapolation (posenc.pe.remapping): remapped relative positions by hand, the released
STRING two-pass merge, DynamicSplit and the Stair PE."""

from __future__ import annotations

import math

import pytest
import torch

import posenc
from posenc.pe.remapping import mesa_split, stair_positions
from posenc.pe.rope import default_inv_freq

D, H = 8, 2


def rope_score(q: torch.Tensor, k: torch.Tensor, rel: float, factor: float = 1.0) -> float:
    """q·R(rel)·k/√d for one query and key (D,), consecutive pairs, cos/sin scaled by ``factor`` on both sides."""
    theta = default_inv_freq(q.numel(), 10000.0)
    ang = rel * theta
    x1, x2, y1, y2 = q[0::2], q[1::2], k[0::2], k[1::2]
    val = ((x1 * y1 + x2 * y2) * ang.cos() + (x1 * y2 - x2 * y1) * ang.sin()).sum()
    return float(val) * factor**2 / math.sqrt(q.numel())


def test_string_remapped_distances_by_hand() -> None:
    """rel' = rel if rel < S, rel − S + W if rel > S; at rel = S the released code counts the key in both passes:
    log(e^a + e^b). Cos and sin carry the factor 0.1·ln 2 + 1."""
    torch.manual_seed(0)
    S, W, T = 4, 1, 9
    pe = posenc.build("string", head_dim=D, num_heads=1, train_len=12, shift=S, local_window=W)
    f = 0.1 * math.log(2) + 1
    q, k = torch.randn(1, 1, T, D), torch.randn(1, 1, T, D)
    out = pe.logits(q, k, pe.context(torch.arange(float(T))))[0, 0]
    for i in range(T):
        for j in range(i + 1):
            rel = i - j
            near, far = rope_score(q[0, 0, i], k[0, 0, j], rel, f), rope_score(q[0, 0, i], k[0, 0, j], rel - S + W, f)
            hand = near if rel < S else far if rel > S else math.log(math.exp(near) + math.exp(far))
            assert out[i, j].item() == pytest.approx(hand, rel=1e-4, abs=1e-5)


def test_string_matches_the_released_two_pass_merge() -> None:
    """Released code: a sliding-window pass (keys i − S ≤ j ≤ i, plain RoPE) and a shifted pass (queries at i − S + W,
    keys j ≤ i − S), each softmax-normalised, merged with weights from their log-sum-exps. Softmax over the
    implementation's logits gives the same attention output."""
    torch.manual_seed(1)
    S, W, T = 5, 2, 12
    pe = posenc.build("string", head_dim=D, num_heads=H, train_len=16, shift=S, local_window=W)
    q, k, v = torch.randn(1, H, T, D), torch.randn(1, H, T, D), torch.randn(1, H, T, D)
    ctx = pe.context(torch.arange(float(T)))
    att = pe.logits(q, k, ctx).masked_fill(~ctx.causal_mask(), float("-inf"))
    ours = att.softmax(-1) @ v
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    rope = posenc.build("rope", head_dim=D, num_heads=H, train_len=16)
    f = 0.1 * math.log(2) + 1
    qr, kr = rope.rotate(q, k, rope.context(torch.arange(float(T))))
    qs, _ = rope.rotate(q, k, rope.context(torch.arange(float(T)) - (S - W)))
    diag = (qr * f * f) @ kr.transpose(-2, -1) / math.sqrt(D)
    diag = diag.masked_fill(~((j <= i) & (j >= i - S)), float("-inf"))
    shifted = (qs * f * f) @ kr.transpose(-2, -1) / math.sqrt(D)
    shifted = shifted.masked_fill(~(j <= i - S), float("-inf"))
    lse_d, lse_s = diag.logsumexp(-1, keepdim=True), shifted.logsumexp(-1, keepdim=True)
    out_d = diag.softmax(-1) @ v
    out_s = torch.nan_to_num(shifted.softmax(-1)) @ v  # rows with no shifted key: empty pass
    w_s = torch.sigmoid(lse_s - lse_d)  # 1 / (1 + exp(lse_d − lse_s)), the code's lse_gap
    ref = out_d * (1 - w_s) + out_s * w_s
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_string_validation() -> None:
    with pytest.raises(ValueError, match="local_window"):
        posenc.build("string", head_dim=D, num_heads=1, train_len=12, shift=3, local_window=3)
    with pytest.raises(ValueError, match="shift"):
        posenc.build("string", head_dim=D, num_heads=1, train_len=12, shift=13)
    pe = posenc.build("string", head_dim=D, num_heads=1, train_len=12)
    assert (pe.shift, pe.local_window) == (4, 1)


def test_dynamic_split_follows_algorithm_2() -> None:
    """The paper's 4K setting (T = 4096, F = 100, L = 512, M_max = 200): R = I − L − F, N = ⌊R/(T − F)⌋,
    M = R mod (T − F); C = T − F (N chunks) when M < M_max, else ⌊R/(N + 1)⌋ (N + 1 chunks)."""
    assert mesa_split(8192, 4096, 100, 512, 200) == (100, 3790, 2)  # R = 7580, N = 1, M = 3584: two chunks of 3790
    assert mesa_split(4700, 4096, 100, 512, 200) == (100, 3996, 1)  # R = 4088, N = 1, M = 92: last chunk 604
    assert mesa_split(4600, 4096, 100, 512, 200) == (100, 3988, 1)  # R = 3988, N = 0, M = 3988


def test_stair_positions_give_the_last_query_eq_3() -> None:
    """W(d) = d for d ≤ N, N + ⌈(d − N)/E⌉ beyond: the anchor (last query) minus the key's stair position."""
    N, E, a = 4, 3, 20.0
    k = torch.arange(21.0)
    d = a - k
    got = a - stair_positions(k, a, N, E)
    expected = torch.tensor([float(x) if x <= N else N + math.ceil((x - N) / E) for x in d.tolist()])
    torch.testing.assert_close(got, expected)


def test_mesa_is_rope_within_the_training_length() -> None:
    torch.manual_seed(2)
    q, k = torch.randn(1, H, 16, D), torch.randn(1, H, 16, D)
    pos = torch.arange(16.0)
    pe = posenc.build("mesa_extrapolation", head_dim=D, num_heads=H, train_len=16)
    rope = posenc.build("rope", head_dim=D, num_heads=H, train_len=16)
    torch.testing.assert_close(pe.logits(q, k, pe.context(pos)), rope.logits(q, k, rope.context(pos)))


def test_mesa_chunks_and_stair_by_hand() -> None:
    """T = 8, F = 2, L = 2, M_max = 1, N = 2, E = 3, no log scaling, I = 13: R = 9, N = 1, M = 3 ≥ 1 → two middle
    chunks of 4 ([2, 6), [6, 10)), last chunk [10, 13). Middle chunks see the first chunk and themselves, re-positioned
    to start at F; the last chunk sees everything with keys on the stair anchored at 12."""
    torch.manual_seed(3)
    pe = posenc.build("mesa_extrapolation", head_dim=D, num_heads=1, train_len=8, first_chunk=2, last_chunk=2,
                      split_slack=1, stair_position=2, stair_width=3, log_scale=False)
    T = 13
    q, k = torch.randn(1, 1, T, D), torch.randn(1, 1, T, D)
    out = pe.logits(q, k, pe.context(torch.arange(float(T))))[0, 0]
    chunk = [0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3]
    local = [0, 1, 2, 3, 4, 5, 2, 3, 4, 5, 10, 11, 12]
    for i in range(T):
        for j in range(i + 1):
            if chunk[i] == 3:  # last chunk: query at i, key on the stair
                d = 12 - j
                key = j if d <= 2 else 12 - (2 + math.ceil((d - 2) / 3))
                hand = rope_score(q[0, 0, i], k[0, 0, j], i - key)
            elif chunk[j] == 0 or chunk[j] == chunk[i]:
                hand = rope_score(q[0, 0, i], k[0, 0, j], local[i] - local[j])
            else:
                assert out[i, j].item() == float("-inf")
                continue
            assert out[i, j].item() == pytest.approx(hand, rel=1e-4, abs=1e-5)


def test_mesa_log_scale_on_the_last_chunk() -> None:
    torch.manual_seed(4)
    kw = dict(head_dim=D, num_heads=1, train_len=8, first_chunk=2, last_chunk=2, split_slack=1)
    with_log = posenc.build("mesa_extrapolation", **kw)
    without = posenc.build("mesa_extrapolation", log_scale=False, **kw)
    q, k = torch.randn(1, 1, 13, D), torch.randn(1, 1, 13, D)
    pos = torch.arange(13.0)
    a, b = with_log.logits(q, k, with_log.context(pos))[0, 0], without.logits(q, k, without.context(pos))[0, 0]
    torch.testing.assert_close(a[:10], b[:10])  # first and middle chunks: never beyond T, factor 1
    for i in (10, 11, 12):
        factor = math.log(i + 1) / math.log(8)
        torch.testing.assert_close(a[i, : i + 1], b[i, : i + 1] * factor, rtol=1e-5, atol=1e-5)


def test_mesa_validation() -> None:
    with pytest.raises(ValueError, match="last_chunk"):
        posenc.build("mesa_extrapolation", head_dim=D, num_heads=1, train_len=8, first_chunk=4, last_chunk=5)
    with pytest.raises(ValueError, match="stair_width"):
        posenc.build("mesa_extrapolation", head_dim=D, num_heads=1, train_len=8, stair_width=0)
