"""Properties of the rotation (RoPE) and the PEs that change it (xPos, p-RoPE, HoPE, FoPE, Resonance RoPE)."""

from __future__ import annotations

import math

import pytest
import torch

from posenc.pe.base import build
from posenc.pe.rope import default_inv_freq, rotate_pairs
from posenc.pe.rotary import resonance_inv_freq

D, H, L = 16, 2, 32


def _qk(t: int = 12, s: int | None = None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, H, t, D, generator=g), torch.randn(2, H, s or t, D, generator=g)


def _rotate_half_reference(x: torch.Tensor, pos: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """Independent half-split ("rotate-half", GPT-NeoX/Llama) RoPE: pairs (i, i + d/2)."""
    ang = pos[:, None].double() * inv_freq[None, :].double()
    cos, sin = torch.cat([ang.cos(), ang.cos()], -1), torch.cat([ang.sin(), ang.sin()], -1)
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return (x.double() * cos + torch.cat([-x2, x1], -1).double() * sin).float()


def test_interleaved_equals_half_split_after_permutation() -> None:
    pe = build("rope", head_dim=D, num_heads=H, train_len=L)
    q, k = _qk()
    pos = torch.arange(12, dtype=torch.float32) * 3.0
    # consecutive layout index 2i <- half-split index i, 2i+1 <- i + d/2
    perm = torch.stack([torch.arange(D // 2), torch.arange(D // 2) + D // 2], -1).flatten()
    ours = pe.logits(q[..., perm], k[..., perm], pe.context(pos))
    inv = default_inv_freq(D, 10000.0)
    qh, kh = _rotate_half_reference(q, pos, inv), _rotate_half_reference(k, pos, inv)
    ref = qh @ kh.transpose(-2, -1) / math.sqrt(D)
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)
    # and the rotated vectors themselves agree up to the same permutation
    qr, _ = pe.rotate(q[..., perm], k[..., perm], pe.context(pos))
    torch.testing.assert_close(qr, qh[..., perm], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("pe_id", ["rope", "xpos", "p_rope", "hope", "resonance_rope"])
def test_relative_ids_are_shift_invariant(pe_id: str) -> None:
    pe = build(pe_id, head_dim=D, num_heads=H, train_len=L)
    assert pe.relative
    q, k = _qk(10)
    pos = torch.arange(10, dtype=torch.float32)
    a = pe.logits(q, k, pe.context(pos))
    b = pe.logits(q, k, pe.context(pos + 37.0))
    torch.testing.assert_close(a, b, atol=2e-4, rtol=2e-4)


def test_rope_changes_with_offset_between_q_and_k() -> None:
    pe = build("rope", head_dim=D, num_heads=H, train_len=L)
    q, k = _qk(6)
    pos = torch.arange(6, dtype=torch.float32)
    assert not torch.allclose(pe.logits(q, k, pe.context(pos)), pe.logits(q, k, pe.context(pos + 5.0, pos)))


def test_xpos_decay_per_pair() -> None:
    pe = build("xpos", head_dim=D, num_heads=1, train_len=L, scale_base=8.0)
    zeta = (torch.arange(0, D, 2, dtype=torch.float64) + 0.4 * D) / (1.4 * D)
    q_pos, k_pos = torch.tensor([9.0]), torch.tensor([2.0])
    for pair in (0, D // 2 - 1):
        q = torch.zeros(1, 1, 1, D)
        k = torch.zeros(1, 1, 1, D)
        q[..., 2 * pair], k[..., 2 * pair] = 1.0, 1.0
        rope = build("rope", head_dim=D, num_heads=1, train_len=L)
        ratio = pe.logits(q, k, pe.context(q_pos, k_pos)) / rope.logits(q, k, rope.context(q_pos, k_pos))
        expected = float(zeta[pair] ** ((9.0 - 2.0) / 8.0))
        assert ratio.item() == pytest.approx(expected, rel=1e-4)
        assert ratio.item() < 1.0  # a decay for n > m


def test_p_rope_limits_and_zeroed_pairs() -> None:
    pos = torch.arange(8, dtype=torch.float32)
    q, k = _qk(8)
    rope = build("rope", head_dim=D, num_heads=H, train_len=L)
    full = build("p_rope", head_dim=D, num_heads=H, train_len=L, p=1.0)
    torch.testing.assert_close(full.logits(q, k, full.context(pos)), rope.logits(q, k, rope.context(pos)))
    none = build("p_rope", head_dim=D, num_heads=H, train_len=L, p=0.0)
    torch.testing.assert_close(none.logits(q, k, none.context(pos)), q @ k.transpose(-2, -1) / math.sqrt(D))
    part = build("p_rope", head_dim=D, num_heads=H, train_len=L, p=0.75)
    inv = part.inv_freq(8)
    n_keep = int(0.75 * D // 2)
    torch.testing.assert_close(inv[:n_keep], default_inv_freq(D, 10000.0)[:n_keep])
    assert torch.all(inv[n_keep:] == 0)  # lowest frequencies removed: no rotation


def test_hope_keeps_only_full_period_pairs() -> None:
    pe = build("hope", head_dim=D, num_heads=H, train_len=L)
    base = default_inv_freq(D, 10000.0)
    inv = pe.inv_freq(L)
    keep = base * L / (2 * math.pi) >= 1.0
    assert 0 < int(keep.sum()) < D // 2  # the test shape exercises both kinds of pairs
    torch.testing.assert_close(inv[keep], base[keep])
    assert torch.all(inv[~keep] == 0)


def test_fope_without_noise_is_clipped_rope_and_learns() -> None:
    pos = torch.arange(10, dtype=torch.float32)
    q, k = _qk(10)
    fope = build("fope", head_dim=D, num_heads=H, train_len=L, sigma=0.0)
    hope = build("hope", head_dim=D, num_heads=H, train_len=L)  # same floor: one full period within L
    expected = hope.logits(q, k, hope.context(pos))
    torch.testing.assert_close(fope.logits(q, k, fope.context(pos)), expected, atol=1e-5, rtol=1e-5)
    noisy = build("fope", head_dim=D, num_heads=H, train_len=L)
    assert not noisy.relative
    noisy.logits(q, k, noisy.context(pos)).square().sum().backward()
    assert noisy.cos_coef.grad is not None and noisy.cos_coef.grad.abs().sum() > 0
    assert noisy.sin_coef.grad is not None and noisy.sin_coef.grad.abs().sum() > 0


def test_resonance_wavelengths_are_integers_and_periodic() -> None:
    pe = build("resonance_rope", head_dim=D, num_heads=H, train_len=L)
    inv = pe.inv_freq(L)
    wl = 2 * math.pi / inv.double()
    torch.testing.assert_close(wl, torch.round(wl), atol=1e-3, rtol=0)
    torch.testing.assert_close(resonance_inv_freq(torch.tensor([0.0, 1.0])), torch.tensor([0.0, 2 * math.pi / 6]))
    # a pair's rotation repeats exactly after its (integer) wavelength
    lam0 = int(round(float(wl[0])))
    c1, s1 = pe.cos_sin(torch.tensor([3.0]), L)
    c2, s2 = pe.cos_sin(torch.tensor([3.0 + lam0]), L)
    torch.testing.assert_close(c1[0, 0], c2[0, 0], atol=1e-5, rtol=0)
    torch.testing.assert_close(s1[0, 0], s2[0, 0], atol=1e-5, rtol=0)


def test_angles_in_float32_under_bf16() -> None:
    pe = build("rope", head_dim=D, num_heads=H, train_len=L)
    q, k = _qk(16)
    pos = torch.arange(16, dtype=torch.float32) * 1000.0
    qb, _ = pe.rotate(q.bfloat16(), k.bfloat16(), pe.context(pos))
    qf, _ = pe.rotate(q, k, pe.context(pos))
    assert qb.dtype == torch.bfloat16
    torch.testing.assert_close(qb.float(), qf, atol=3e-2, rtol=3e-2)


def test_rotate_pairs_is_a_rotation() -> None:
    x = torch.randn(3, 5, D)
    ang = torch.rand(5, D // 2) * 10
    y = rotate_pairs(x, ang.cos(), ang.sin())
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))


@pytest.mark.parametrize(("pe_id", "kw", "name"), [
    ("rope", {"base": -3.0}, "base"),
    ("p_rope", {"p": 1.5}, "p"),
    ("hope", {"min_rotations": -1.0}, "min_rotations"),
    ("xpos", {"scale_base": 0.0}, "scale_base"),
    ("fope", {"sigma": -0.1}, "sigma"),
    ("resonance_rope", {"scale": 0.5}, "scale"),
])
def test_invalid_hyperparameters_name_the_parameter(pe_id: str, kw: dict, name: str) -> None:
    with pytest.raises(ValueError, match=f"'{name}'"):
        build(pe_id, head_dim=D, num_heads=H, train_len=L, **kw)


def test_odd_head_dim_rejected() -> None:
    with pytest.raises(ValueError, match="'head_dim'"):
        build("xpos", head_dim=15, num_heads=H, train_len=L)
