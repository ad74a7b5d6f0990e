"""Stick-breaking attention, scale-invariant attention and NoPE head scales: hand-computed cases and parity with the
authors' reference logic (re-derived here, not imported)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import posenc
from posenc.model import ModelConfig, Transformer
from posenc.pe.base import spec
from posenc.pe.beyond_softmax import scale_invariant_transform, stick_breaking_weights

H, D, L = 2, 8, 16


def build(pe_id: str, **hp: object) -> posenc.PositionalEncoding:
    torch.manual_seed(0)
    return posenc.build(pe_id, head_dim=D, num_heads=H, train_len=L, **hp)


# ---------------------------------------------------------------------- stick-breaking
def test_stick_breaking_hand_computed() -> None:
    """Query 3 over keys 0..2 with β = σ(z) = 0.5, 0.75, 0.25: the most recent key breaks first.

    A_2 = 0.25, A_1 = 0.75·(1 − 0.25) = 0.5625, A_0 = 0.5·(1 − 0.75)·(1 − 0.25) = 0.09375; the query's own key
    and later keys get 0.
    """
    z = torch.full((4, 4), 7.0)
    z[3, :3] = torch.tensor([0.0, math.log(3.0), -math.log(3.0)])
    pos = torch.arange(4.0)
    earlier = pos[None, :] < pos[:, None]
    w = stick_breaking_weights(z, earlier)
    torch.testing.assert_close(w[3], torch.tensor([0.09375, 0.5625, 0.25, 0.0]))
    assert w[0].abs().sum() == 0  # the first token has nothing before it


def test_stick_breaking_remainder_modes() -> None:
    pe_drop, pe_cur = build("stick_breaking"), build("stick_breaking", remainder="current")
    pos = torch.arange(6.0)
    ctx = pe_drop.context(pos)
    att = torch.randn(1, H, 6, 6)
    allowed = ctx.causal_mask()
    w_drop = pe_drop.weights(att, allowed, ctx)
    w_cur = pe_cur.weights(att, allowed, pe_cur.context(pos))
    assert (w_drop.sum(-1) <= 1 + 1e-6).all() and w_drop[..., 0, :].abs().sum() == 0
    torch.testing.assert_close(w_cur.sum(-1), torch.ones(1, H, 6))  # the rest of the stick goes to the token
    off_diag = ~torch.eye(6, dtype=torch.bool)
    torch.testing.assert_close(w_cur[..., off_diag], w_drop[..., off_diag])
    with pytest.raises(ValueError, match="remainder"):
        build("stick_breaking", remainder="softmax")


def _reference_stick_breaking(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The released reference (``stickbreaking_attention/sb_ref.py`` with the kernel tests' masks, attend_current
    False), re-derived: the cumulative log(1 − β) is a matrix product with the strictly lower-triangular ones
    matrix instead of a cumulative sum. Returns (Σ A v, 1 − Σ A)."""
    T = q.size(-2)
    logits = q @ k.transpose(-1, -2) / math.sqrt(q.size(-1))
    future_or_self = torch.ones(T, T).triu(0).bool()
    log_z = F.logsigmoid(logits).masked_fill(future_or_self, -1e5)
    log_beta = F.logsigmoid(-logits).masked_fill(future_or_self, 0)
    cum = torch.ones(T, T).tril(-1)  # cum[j, k] = 1 for k < j
    att = (log_z + torch.einsum("bhij,jk->bhik", log_beta, cum)).exp()
    return att @ v, 1 - att.sum(-1)


@pytest.mark.parametrize("remainder", ["drop", "current"])
def test_stick_breaking_matches_the_released_reference(remainder: str) -> None:
    """Attention output of the model's explicit path (logits + ``weights``) against the authors' reference:
    ``o`` for the remainder dropped (fla layer), ``o + rem·v`` for the kernel test's current-token variant."""
    torch.manual_seed(1)
    pe = build("stick_breaking", remainder=remainder)
    B, T = 2, 12
    q, k, v = (torch.randn(B, H, T, D) for _ in range(3))
    ctx = pe.context(torch.arange(float(T)))
    out = pe.weights(pe.logits(q, k, ctx), ctx.causal_mask(), ctx) @ v
    ref_o, rem = _reference_stick_breaking(q, k, v)
    if remainder == "current":
        ref_o = ref_o + rem[..., None] * v
    torch.testing.assert_close(out, ref_o, rtol=1e-5, atol=1e-5)


def test_stick_breaking_takes_the_explicit_path_and_chunks_are_exact() -> None:
    assert spec("stick_breaking").explicit and not spec("stick_breaking").relative
    pe = build("stick_breaking")
    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=1, n_head=H, d_model=H * D, attn="sdpa")
    m = Transformer(cfg, pe).eval()
    assert m.plan(m.context(torch.zeros(1, 8, dtype=torch.long)), 1)[0].kind == "explicit"
    tokens = torch.randint(0, 256, (2, 40))
    with torch.no_grad():
        whole = m(tokens)[0]
        m.cfg = ModelConfig(n_layer=1, n_head=H, d_model=H * D, explicit_chunk_mb=2 * H * 40 * 4 / 2**20)
        chunked = m(tokens)[0]
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------- scale-invariant attention
def test_scale_invariant_transform_hand_computed() -> None:
    """a_0 = 1, m_0 = 0 (the paper's boundary condition); at t = τ(e − 1), log(t/τ + 1) = 1: a = √3, m = −2."""
    tau = 10.0
    a, m = scale_invariant_transform(torch.tensor([0.0, tau * (math.e - 1)]), tau)
    torch.testing.assert_close(a, torch.tensor([1.0, math.sqrt(3.0)]))
    torch.testing.assert_close(m, torch.tensor([0.0, -2.0]))


def test_scale_invariant_solves_eq_15() -> None:
    """For standard Gaussian scores, E[exp(a_t S + m_t)] = α/(t/τ + 1) and E[L e^L] = β/(t/τ + 1) with
    α = β = e^0.5 (Eq. 15a/15b), checked with the log-normal moments of N(m, a²)."""
    t = torch.tensor([0.0, 1.0, 7.0, 100.0, 5000.0], dtype=torch.float64)
    tau = 10.0
    a, m = (x.double() for x in scale_invariant_transform(t, tau))
    alpha = beta = math.exp(0.5)
    mean_exp = torch.exp(m + a**2 / 2)
    torch.testing.assert_close(mean_exp, alpha / (t / tau + 1), rtol=1e-5, atol=0)  # a, m are float32
    torch.testing.assert_close((m + a**2) * mean_exp, beta / (t / tau + 1), rtol=1e-5, atol=0)


def test_scale_invariant_logits_transform_the_inner_score() -> None:
    torch.manual_seed(0)
    T = 9
    q, k = torch.randn(1, H, T, D), torch.randn(1, H, T, D)
    pos = torch.arange(float(T))
    for inner in ("nope", "p_rope"):
        pe = build("scale_invariant_attn", inner=inner, tau=3.0)
        base = posenc.build(inner, head_dim=D, num_heads=H, train_len=L)
        s = base.logits(q, k, base.context(pos))
        a, m = scale_invariant_transform(pos[:, None] - pos[None, :], 3.0)
        torch.testing.assert_close(pe.logits(q, k, pe.context(pos)), a * s + m)
    assert build("scale_invariant_attn").inner.id == "p_rope"
    with pytest.raises(ValueError, match="tau"):
        build("scale_invariant_attn", tau=0.0)


# ---------------------------------------------------------------------- NoPE head scale
def test_nope_headscale_hand_computed() -> None:
    """λ = (2, 0.5) per head with scale_min 1: head 0 logits ×2, head 1 clamped to ×1."""
    pe = build("nope_headscale")
    assert spec("nope_headscale").applies_to == "nope" and spec("nope_headscale").learnable
    torch.testing.assert_close(pe.head_scale(), torch.full((H,), 1.6))
    with torch.no_grad():
        pe.scale.copy_(torch.tensor([[2.0, 0.5]]))
    q, k = torch.ones(1, H, 1, D), torch.ones(1, H, 1, D)
    out = pe.logits(q, k, pe.context(torch.zeros(1)))
    torch.testing.assert_close(out.flatten(), torch.tensor([2.0 * D / math.sqrt(D), 1.0 * D / math.sqrt(D)]))
    free = build("nope_headscale", scale_min=None)
    with torch.no_grad():
        free.scale.copy_(torch.tensor([[2.0, 0.5]]))
    torch.testing.assert_close(free.head_scale(), torch.tensor([2.0, 0.5]))


def test_nope_headscale_per_layer() -> None:
    pe = build("nope_headscale", num_layers=3)
    with torch.no_grad():
        pe.scale.copy_(torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]))
    torch.testing.assert_close(pe.head_scale(2), torch.tensor([3.0, 3.0]))
    with pytest.raises(ValueError, match="num_layers"):
        pe.head_scale(3)
