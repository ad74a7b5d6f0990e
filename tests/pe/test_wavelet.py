"""Wavelet-based relative positional representation (posenc.pe.wavelet): Eq. 10–14 by hand."""

from __future__ import annotations

import math

import pytest
import torch

import posenc
from posenc.pe.wavelet import ricker, wavelet_grid


def test_ricker_values() -> None:
    t = torch.tensor([0.0, 1.0, 2.0, -2.0])
    expected = [1.0, 0.0, -3.0 * math.exp(-2.0), -3.0 * math.exp(-2.0)]
    torch.testing.assert_close(ricker(t), torch.tensor(expected))


def test_grid_is_the_papers_rule() -> None:
    """d = 128, s = 8: scales 2^0..2^7 and 16 shifts 0..15, every (a, b) once (Eq. 13)."""
    a, b = wavelet_grid(128, 8)
    pairs = {(float(x), float(y)) for x, y in zip(a, b, strict=True)}
    assert pairs == {(2.0**j, float(s)) for j in range(8) for s in range(16)}
    a, b = wavelet_grid(8, 4, min_scale_exp=2)
    assert a.tolist() == [4.0, 8.0, 16.0, 32.0] * 2 and b.tolist() == [0.0] * 4 + [1.0] * 4


def test_logits_by_hand() -> None:
    torch.manual_seed(0)
    d = 8
    pe = posenc.build("wavelet_pe", head_dim=d, num_heads=1, train_len=16, num_scales=4)
    T = 6
    q, k = torch.randn(1, 1, T, d), torch.randn(1, 1, T, d)
    out = pe.logits(q, k, pe.context(torch.arange(float(T))))[0, 0]
    for m in range(T):
        for n in range(m + 1):
            p = [(1 - ((m - n - c // 4) / 2 ** (c % 4)) ** 2) * math.exp(-0.5 * ((m - n - c // 4) / 2 ** (c % 4)) ** 2)
                 for c in range(d)]
            hand = (q[0, 0, m] @ k[0, 0, n] + q[0, 0, m] @ torch.tensor(p)) / math.sqrt(d)
            assert out[m, n].item() == pytest.approx(hand.item(), rel=1e-5, abs=1e-6)


def test_distance_gather_equals_the_dense_tensor_at_any_positions() -> None:
    """Appendix A.6: q·p gathered from the distinct distances equals q·p over the dense (T, S, d) tensor, also at
    fractional or shifted positions; and the logits depend on m − n only."""
    torch.manual_seed(1)
    pe = posenc.build("wavelet_pe", head_dim=16, num_heads=2, train_len=16)
    q, k = torch.randn(2, 2, 7, 16), torch.randn(2, 2, 7, 16)
    pos = torch.tensor([0.0, 1.5, 2.0, 4.0, 4.5, 9.0, 10.0])
    dense_p = pe.table((pos[:, None] - pos[None, :]).flatten()).view(7, 7, 16)
    dense = (q @ k.transpose(-2, -1) + torch.einsum("bhmc,mnc->bhmn", q, dense_p)) / 4.0
    torch.testing.assert_close(pe.logits(q, k, pe.context(pos)), dense, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pe.logits(q, k, pe.context(pos + 33.0)), dense, rtol=1e-5, atol=1e-5)


def test_num_scales_must_divide_head_dim() -> None:
    with pytest.raises(ValueError, match="num_scales"):
        posenc.build("wavelet_pe", head_dim=12, num_heads=1, train_len=16)
    with pytest.raises(ValueError, match="min_scale_exp"):
        posenc.build("wavelet_pe", head_dim=16, num_heads=1, train_len=16, min_scale_exp=-1)
