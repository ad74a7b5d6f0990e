"""CoCA and local/global RoPE (posenc.pe.rotary_hybrids): formulas by hand, the naive CoCA construction, and
the released code's contraction."""

from __future__ import annotations

import math

import pytest
import torch

import posenc
from posenc.pe.rope import default_inv_freq
from posenc.pe.rotary_hybrids import coca_key_coefficients

D, H = 8, 2


def build(pe_id: str, **hp: object) -> posenc.PositionalEncoding:
    return posenc.build(pe_id, head_dim=D, num_heads=H, train_len=16, **hp)


def rot2(v: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive pairs of v (..., D) by angle (..., D/2)."""
    x, y = v[..., 0::2], v[..., 1::2]
    out = torch.stack((x * angle.cos() - y * angle.sin(), x * angle.sin() + y * angle.cos()), dim=-1)
    return out.flatten(-2)


def test_coca_key_coefficients_hand_case() -> None:
    k = torch.tensor([1.0, 3.0, -4.0, 2.0])
    assert coca_key_coefficients(k).tolist() == [2.0, 2.0, 0.0, 0.0]  # ReLU of each pair's mean, duplicated


def test_coca_strict_formula_by_hand_and_naive_collinear_keys() -> None:
    """Eq. 9: a(m, n) = Σ_j t_{n,j}|q_{m,j}|² cos((m − n)θ_j), also computed from Eq. 7's explicit (N, N, d) keys
    k_{m,n} = q_m ∘ t_n rotated at n."""
    torch.manual_seed(0)
    pe = build("coca", variant="strict")
    T = 5
    q, k = torch.randn(1, 1, T, D), torch.randn(1, 1, T, D)
    pos = torch.arange(float(T))
    out = pe.logits(q, k, pe.context(pos))[0, 0]
    theta = default_inv_freq(D, 10000.0)
    t = coca_key_coefficients(k)[0, 0]  # (T, D)
    q0 = q[0, 0]
    for m in range(T):
        for n in range(T):
            hand = sum(float(t[n, 2 * j]) * float(q0[m, 2 * j] ** 2 + q0[m, 2 * j + 1] ** 2)
                       * math.cos((m - n) * float(theta[j])) for j in range(D // 2))
            key_mn = q0[m] * t[n]  # Eq. 7, one row of the N×N×d key tensor
            naive = rot2(q0[m], m * theta) @ rot2(key_mn, n * theta)
            assert out[m, n].item() == pytest.approx(hand / math.sqrt(D), rel=1e-4, abs=1e-5)
            assert out[m, n].item() == pytest.approx(naive.item() / math.sqrt(D), rel=1e-4, abs=1e-5)


def test_coca_slack_matches_the_released_contraction() -> None:
    """The released code: T = ReLU(mean of the rotate-half halves of W_T x), duplicated; logits =
    contract('bpnd,bpsd,bpnd->bpns', q, rot_half(T), rot_half(q)) / √d. With the rotate-half layout mapped onto
    consecutive pairs by the fixed permutation (i, i + d/2) → (2i, 2i + 1), the logits are equal."""
    torch.manual_seed(1)
    pe = build("coca")
    T = 6
    q_h, k_h = torch.randn(1, H, T, D), torch.randn(1, H, T, D)  # the code's layout (rotate-half)
    pos = torch.arange(float(T))
    theta = default_inv_freq(D, 10000.0)
    ang = pos[:, None] * theta[None, :]  # (T, D/2)
    cos, sin = torch.cat((ang.cos(), ang.cos()), -1), torch.cat((ang.sin(), ang.sin()), -1)

    def rotate_half(x: torch.Tensor) -> torch.Tensor:
        return torch.cat((-x[..., D // 2:], x[..., :D // 2]), dim=-1)

    t_half = torch.relu((k_h[..., :D // 2] + k_h[..., D // 2:]) / 2)
    t_full = torch.cat((t_half, t_half), dim=-1)
    q_rot, t_rot = q_h * cos + rotate_half(q_h) * sin, t_full * cos + rotate_half(t_full) * sin
    ref = torch.einsum("bpnd,bpsd,bpnd->bpns", q_h, t_rot, q_rot) / math.sqrt(D)
    perm = torch.stack((torch.arange(D // 2), torch.arange(D // 2) + D // 2), dim=-1).flatten()
    ours = pe.logits(q_h[..., perm], k_h[..., perm], pe.context(pos))
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_coca_strict_is_relative_slack_is_not() -> None:
    torch.manual_seed(2)
    q, k = torch.randn(1, H, 6, D), torch.randn(1, H, 6, D)
    pos = torch.arange(6.0)
    strict, slack = build("coca", variant="strict"), build("coca")
    torch.testing.assert_close(strict.logits(q, k, strict.context(pos + 7)), strict.logits(q, k, strict.context(pos)),
                               rtol=1e-4, atol=1e-4)
    assert not torch.allclose(slack.logits(q, k, slack.context(pos + 7)), slack.logits(q, k, slack.context(pos)),
                              atol=1e-3)
    with pytest.raises(ValueError, match="variant"):
        build("coca", variant="loose")


def test_local_global_layers_bases_and_window() -> None:
    pe = build("local_global_rope", global_every=3, window=2, global_scale=4.0)
    assert [pe.is_global(layer) for layer in range(6)] == [False, False, True, False, False, True]
    T = 5
    pos = torch.arange(float(T))
    ctx = pe.context(pos)
    # Local layers: the window bias (key j visible iff i − j < W) and RoPE with base 10k.
    bias = pe.bias(ctx, 0)
    expected = torch.tensor([[0.0 if 0 <= i - j < 2 or j > i else float("-inf") for j in range(T)]
                             for i in range(T)])
    assert torch.equal(bias[0], expected) and bias.shape == (H, T, T)
    assert pe.bias(ctx, 2) is None
    torch.manual_seed(3)
    q, k = torch.randn(1, H, T, D), torch.randn(1, H, T, D)
    local = build("rope")
    ql, kl = pe.rotate(q, k, ctx, 0)
    qr, kr = local.rotate(q, k, local.context(pos))
    torch.testing.assert_close(ql, qr)
    # Global layers: RoPE with base 1M at positions / global_scale.
    glob = build("rope", base=1000000.0)
    qg, kg = pe.rotate(q, k, ctx, 2)
    qr, kr = glob.rotate(q, k, glob.context(pos / 4.0))
    torch.testing.assert_close(qg, qr)
    torch.testing.assert_close(kg, kr)


def test_local_global_validation_names_parameters() -> None:
    for name, bad in (("global_every", 0), ("window", 0), ("global_base", 1.0), ("global_scale", 0.5)):
        with pytest.raises(ValueError, match=name):
            build("local_global_rope", **{name: bad})
