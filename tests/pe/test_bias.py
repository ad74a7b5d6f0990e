"""Formula tests for the bias-family and content-dependent PEs in posenc.pe.bias."""

from __future__ import annotations

import math

import pytest
import torch

import posenc
from posenc.model import ModelConfig, Transformer
from posenc.pe.bias import alibi_slopes, t5_bucket

BIAS_IDS = ["t5_bias", "tisa", "alibi", "kerple_log", "kerple_power", "sandwich", "fire"]
LOGIT_IDS = ["shaw", "dape", "dape_v2", "cable", "fox"]
RELATIVE_IDS = ["shaw", "t5_bias", "tisa", "alibi", "kerple_log", "kerple_power", "sandwich"]


def build(pid: str, heads: int = 4, **kw):
    return posenc.build(pid, head_dim=8, num_heads=heads, train_len=16, **kw)


def test_alibi_slopes_paper_rule() -> None:
    torch.testing.assert_close(alibi_slopes(8), torch.tensor([2.0 ** -h for h in range(1, 9)]))
    # H = 6: slopes of 4 heads (2^-2, 2^-4, 2^-6, 2^-8), then every other slope of 8 heads (2^-1, 2^-3).
    torch.testing.assert_close(alibi_slopes(6), torch.tensor([2.0 ** -e for e in (2, 4, 6, 8, 1, 3)]))
    with pytest.raises(ValueError, match="num_heads"):
        alibi_slopes(0)


def test_alibi_bias_values() -> None:
    pe = build("alibi", heads=8)
    pos = torch.arange(5.0)
    b = pe.bias(pe.context(pos))
    assert b.shape == (8, 5, 5) and b.dtype == torch.float32
    assert torch.all(b.diagonal(dim1=1, dim2=2) == 0)
    assert b[0, 4, 1].item() == pytest.approx(-0.5 * 3)
    assert b[7, 3, 0].item() == pytest.approx(-(2.0**-8) * 3)


def test_t5_buckets_monotone_saturating() -> None:
    rel = torch.arange(0, 5000)
    b = t5_bucket(rel, 32, 128)
    assert torch.equal(b[:16], torch.arange(16))  # exact region: num_buckets/2 buckets
    assert torch.all(b[1:] >= b[:-1])
    assert b[100].item() < 31 and b[127].item() == 31 and torch.all(b[128:] == 31)
    assert t5_bucket(torch.tensor([-3.0]), 32, 128).item() == 0
    # Log region by hand: 16 + floor(ln(n/16)/ln(8)·16).
    for n in (16, 20, 40, 100):
        assert b[n].item() == 16 + int(math.log(n / 16) / math.log(8) * 16)


def test_t5_bias_reads_table() -> None:
    pe = build("t5_bias")
    pos = torch.arange(40.0)
    b = pe.bias(pe.context(pos))
    assert b[2, 39, 0].item() == pytest.approx(pe.table[t5_bucket(torch.tensor(39.0)).item(), 2].item())
    assert b[1, 5, 5].item() == pytest.approx(pe.table[0, 1].item())


def test_tisa_formula() -> None:
    pe = build("tisa", heads=1, num_kernels=2)
    with torch.no_grad():
        pe.amplitude.copy_(torch.tensor([[1.0, -2.0]]))
        pe.sharpness.copy_(torch.tensor([[0.5, -0.1]]))
        pe.centre.copy_(torch.tensor([[0.0, 3.0]]))
    b = pe.bias(pe.context(torch.arange(6.0)))
    d = 4.0
    expected = 1.0 * math.exp(-0.5 * d**2) - 2.0 * math.exp(-0.1 * (d - 3) ** 2)
    assert b[0, 5, 1].item() == pytest.approx(expected, rel=1e-5)
    tisa = build("tisa")
    assert torch.all(tisa.bias(tisa.context(torch.arange(4.0))) == 0)  # a = 0 at init


def test_kerple_formulas_and_constraints() -> None:
    pos = torch.arange(6.0)
    pe = build("kerple_log", heads=2)
    with torch.no_grad():
        pe.r1.copy_(torch.tensor([1.0, -5.0]))  # −5 is clamped to 0.01 as in the released code
        pe.r2.copy_(torch.tensor([1.0, 2.0]))
    b = pe.bias(pe.context(pos))
    assert b[0, 3, 2].item() == pytest.approx(-math.log(2))
    assert b[1, 5, 0].item() == pytest.approx(-0.01 * math.log(11))
    pp = build("kerple_power", heads=2)
    with torch.no_grad():
        pp.r1.copy_(torch.tensor([1.0, 2.0]))
        pp.r2.copy_(torch.tensor([1.0, 5.0]))  # clamped to 2
    b = pp.bias(pp.context(pos))
    assert b[0, 4, 1].item() == pytest.approx(-3.0)
    assert b[1, 4, 1].item() == pytest.approx(-2.0 * 9.0, rel=1e-5)
    b.sum().backward()
    assert torch.isfinite(pp.r1.grad).all() and torch.isfinite(pp.r2.grad).all()  # |0|^r2 has a finite grad


def test_sandwich_formula() -> None:
    pe = build("sandwich", heads=2, sandwich_dim=4)
    b = pe.bias(pe.context(torch.arange(5.0)))
    w = [10000.0 ** (-2 * k / 4) for k in (1, 2)]
    raw = sum(math.cos(3 * wk) for wk in w) - 2
    assert b[0, 3, 0].item() == pytest.approx(raw / 4, rel=1e-5)  # head 1: ratio 1·8/2
    assert b[1, 3, 0].item() == pytest.approx(raw / 8, rel=1e-5)  # head 2: ratio 2·8/2
    assert torch.all(b.diagonal(dim1=1, dim2=2).abs() < 1e-6)


def test_fire_normalised_distance_in_unit_interval_and_depends_on_i() -> None:
    pe = build("fire")
    pos = torch.arange(512.0)
    u = pe.normalised(pos, pos)
    low = torch.tril(torch.ones(512, 512, dtype=torch.bool))
    assert u[low].min() >= 0 and u[low].max() <= 1 + 1e-6
    c, thr = 0.1, 512.0
    assert u[300, 40].item() == pytest.approx(math.log(c * 260 + 1) / math.log(c * thr + 1), rel=1e-5)
    v = build("fire", l_thr=16.0).normalised(pos, pos)
    assert v[100, 40].item() == pytest.approx(math.log(c * 60 + 1) / math.log(c * 100 + 1), rel=1e-5)
    assert not torch.allclose(v[100, 90], v[200, 190])  # not a function of i − j alone
    assert not pe.relative


def test_fire_follows_the_reference_parameterisation() -> None:
    """The reference (the paper's appendix code, as in mcleish7/arithmetic): c used as |c|, L_thr = |m·L₀| with a
    fixed L₀ and a learned multiplier m, ε = 1e-6 added to the normaliser. Checked at perturbed values, and the
    gradient reaching m is L₀ times the gradient a directly learned L_thr would receive."""
    pe = build("fire", l_thr=16.0)
    with torch.no_grad():
        pe.c.fill_(-0.3)
        pe.l_multiplier.fill_(1.5)
    pos = torch.arange(40.0)
    u = pe.normalised(pos, pos)
    for i, j in ((5, 2), (30, 10), (39, 0)):
        thr = abs(1.5 * 16.0)
        ref = math.log(abs(-0.3 * (i - j)) + 1) / (math.log(abs(-0.3 * max(i, thr)) + 1) + 1e-6)
        assert u[i, j].item() == pytest.approx(ref, rel=1e-6)
    assert "l_thr" in dict(pe.named_buffers()) and "l_thr" not in dict(pe.named_parameters())
    u[5, 2].backward()  # query 5 < L_thr: normalised by the threshold
    grad_m = pe.l_multiplier.grad.item()
    thr = torch.tensor(24.0, requires_grad=True)
    direct = math.log(0.3 * 3 + 1) / (torch.log(0.3 * thr + 1) + 1e-6)
    direct.backward()
    assert grad_m == pytest.approx(16.0 * thr.grad.item(), rel=1e-5)


@pytest.mark.parametrize("pid", RELATIVE_IDS)
def test_relative_methods_are_shift_invariant(pid: str) -> None:
    torch.manual_seed(0)
    pe = build(pid)
    assert pe.relative
    q, k = torch.randn(1, 4, 6, 8), torch.randn(1, 4, 6, 8)
    pos = torch.arange(6.0)
    shifted = pe.logits(q, k, pe.context(pos + 37))
    torch.testing.assert_close(pe.logits(q, k, pe.context(pos)), shifted, rtol=1e-5, atol=1e-5)


def test_shaw_matches_loop() -> None:
    torch.manual_seed(0)
    pe = build("shaw", heads=1, max_relative_position=2)
    q, k = torch.randn(1, 1, 5, 8), torch.randn(1, 1, 5, 8)
    pos = torch.arange(5.0)
    out = pe.logits(q, k, pe.context(pos))[0, 0]
    for i in range(5):
        for j in range(5):
            a = pe.rel_keys[max(-2, min(2, i - j)) + 2]
            expected = q[0, 0, i] @ (k[0, 0, j] + a) / math.sqrt(8)
            torch.testing.assert_close(out[i, j], expected, rtol=1e-5, atol=1e-5)


def _decay_loop(logf: torch.Tensor) -> torch.Tensor:
    s = logf.size(-1)
    d = torch.zeros(s, s)
    for i in range(s):
        for j in range(i + 1):
            d[i, j] = logf[j + 1 : i + 1].sum()
    return d


@pytest.mark.parametrize("pid", ["fox", "cable"])
def test_data_dependent_decay_matches_loop(pid: str) -> None:
    torch.manual_seed(0)
    pe = build(pid, heads=2)
    with torch.no_grad():
        pe.weight.normal_()
    q, k = torch.randn(1, 2, 6, 8), torch.randn(1, 2, 6, 8)
    pos = torch.arange(6.0)
    out = pe.logits(q, k, pe.context(pos))
    att = q @ k.transpose(-2, -1) / math.sqrt(8)
    z = torch.einsum("bhsd,hd->bhs", k, pe.weight) + pe.bias_[:, None]
    logf = torch.nn.functional.logsigmoid(z) if pid == "fox" else -torch.nn.functional.softplus(z)
    low = torch.tril(torch.ones(6, 6, dtype=torch.bool))
    for h in range(2):
        torch.testing.assert_close((out - att)[0, h][low], _decay_loop(logf[0, h])[low], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pid", ["dape", "dape_v2", "cable", "fox", "shaw"])
def test_logit_methods_are_causal(pid: str) -> None:
    """Logits at (i, j ≤ i) must not depend on keys or queries after i."""
    torch.manual_seed(0)
    pe = build(pid)
    if pid == "dape_v2":
        with torch.no_grad():
            pe.conv.weight.normal_()
    q, k = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    pos = torch.arange(8.0)
    a = pe.logits(q, k, pe.context(pos))
    q2, k2 = q.clone(), k.clone()
    q2[..., 5:, :] += 3.0
    k2[..., 5:, :] -= 2.0
    b = pe.logits(q2, k2, pe.context(pos))
    torch.testing.assert_close(a[..., :5, :5], b[..., :5, :5])


def test_dape_reduces_to_base_bias_when_mlp_is_zero() -> None:
    torch.manual_seed(0)
    pe = build("dape")
    with torch.no_grad():
        pe.fc2.weight.zero_()
    q, k = torch.randn(2, 4, 5, 8), torch.randn(2, 4, 5, 8)
    pos = torch.arange(5.0)
    expected = q @ k.transpose(-2, -1) / math.sqrt(8) + pe.base_pe.bias(pe.base_pe.context(pos))
    torch.testing.assert_close(pe.logits(q, k, pe.context(pos)), expected)
    v2 = build("dape_v2")  # zero-initialised convolution
    torch.testing.assert_close(v2.logits(q, k, v2.context(pos)),
                               q @ k.transpose(-2, -1) / math.sqrt(8) + v2.base_pe.bias(v2.base_pe.context(pos)))


@pytest.mark.parametrize("pid", BIAS_IDS)
def test_bias_finite_at_32x_train_len(pid: str) -> None:
    pe = posenc.build(pid, head_dim=8, num_heads=4, train_len=16)
    pos = torch.arange(16.0 * 32)
    with torch.no_grad():
        b = pe.bias(pe.context(pos))
    assert b.shape == (4, 512, 512) and b.dtype == torch.float32
    assert torch.isfinite(b).all() and torch.isfinite(b.to(torch.bfloat16)).all()


@pytest.mark.parametrize("pid", BIAS_IDS + LOGIT_IDS)
def test_model_forward_backward_finite(pid: str) -> None:
    torch.manual_seed(0)
    pe = posenc.build(pid, head_dim=8, num_heads=2, train_len=16)
    m = Transformer(ModelConfig(n_layer=1, n_head=2, d_model=16), pe)
    tokens = torch.randint(0, 256, (2, 16))
    _, loss = m(tokens, targets=tokens)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in pe.parameters() if p.grad is not None)
    with torch.no_grad():
        assert torch.isfinite(m.eval()(torch.randint(0, 256, (1, 300)))[0]).all()


def test_invalid_hyperparameters_raise() -> None:
    for pid, kw, name in [("t5_bias", {"num_buckets": 1}, "num_buckets"), ("tisa", {"num_kernels": 0}, "num_kernels"),
                          ("sandwich", {"sandwich_dim": 3}, "sandwich_dim"), ("fire", {"c": -1.0}, "c"),
                          ("dape_v2", {"kernel_size": 2}, "kernel_size"), ("shaw", {"max_relative_position": -1},
                                                                            "max_relative_position")]:
        with pytest.raises(ValueError, match=name):
            build(pid, **kw)


def test_offset_bias_gathers_the_same_values_as_the_full_grid() -> None:
    from posenc.pe.bias import offset_bias

    slopes = torch.tensor([0.5, 0.25])

    def fn(rel: torch.Tensor) -> torch.Tensor:
        return -slopes[:, None] * torch.log1p(rel.abs())[None]

    pos = torch.arange(7, dtype=torch.float32) + 3
    full = fn((pos[:, None] - pos[None, :]).flatten()).view(2, 7, 7)
    torch.testing.assert_close(offset_bias(fn, pos, pos), full)
    frac = pos * 0.5  # fractional positions take the full-grid path and give the same function
    torch.testing.assert_close(offset_bias(fn, frac, frac),
                               fn((frac[:, None] - frac[None, :]).flatten()).view(2, 7, 7))
