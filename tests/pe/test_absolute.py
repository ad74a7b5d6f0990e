"""Formula tests for the absolute and token-dependent PEs in posenc.pe.absolute."""

from __future__ import annotations

import math

import pytest
import torch

import posenc
from posenc.model import ModelConfig, Transformer
from posenc.pe.absolute import segment_positions, sinusoidal_table
from posenc.pe.bias import alibi_slopes

ABSOLUTE_IDS = ["sinusoidal", "learned", "shape", "cape_likhomanenko", "complex_order", "floater", "bipe", "cope"]


def build(pid: str, **kw):
    return posenc.build(pid, head_dim=4, num_heads=2, train_len=16, **kw)


def test_sinusoidal_hand_values() -> None:
    # dim 4: ω_0 = 1, ω_1 = 10000^(−2/4) = 0.01; layout sin, cos, sin, cos (Vaswani §3.5).
    t = sinusoidal_table(torch.tensor([0.0, 1.0, 3.0]), 4)
    expected = torch.tensor([[0, 1, 0, 1],
                             [math.sin(1), math.cos(1), math.sin(0.01), math.cos(0.01)],
                             [math.sin(3), math.cos(3), math.sin(0.03), math.cos(0.03)]])
    torch.testing.assert_close(t, expected)


def test_sinusoidal_embed_adds_table() -> None:
    pe = build("sinusoidal")
    x = torch.randn(2, 5, 8)
    pos = torch.arange(5.0)
    torch.testing.assert_close(pe.embed(x, pe.context(pos)) - x, sinusoidal_table(pos, 8).expand(2, -1, -1))


def test_learned_raises_past_max_len() -> None:
    pe = build("learned")
    x = torch.zeros(1, 16, 8)
    assert torch.equal(pe.embed(x, pe.context(torch.arange(16.0)))[0], pe.weight.detach())
    with pytest.raises(ValueError, match="max_len=16"):
        pe.embed(torch.zeros(1, 17, 8), pe.context(torch.arange(17.0)))
    with pytest.raises(ValueError, match="max_len"):
        build("learned", max_len=0)
    assert build("learned", max_len=40).weight.shape == (40, 8)


def test_shape_shifts_only_in_training() -> None:
    pe = build("shape", max_shift=7)
    torch.testing.assert_close(pe.positions(6, training=False), torch.arange(6.0))
    shifts = set()
    for _ in range(60):
        p = pe.positions(6, training=True)
        k = p[0].item()
        assert k == int(k) and 0 <= k <= 7
        torch.testing.assert_close(p, torch.arange(6.0) + k)  # one shift for the whole sequence
        shifts.add(k)
    assert len(shifts) > 3
    torch.testing.assert_close(build("shape", eval_shift=3).positions(4), torch.arange(4.0) + 3)
    with pytest.raises(ValueError, match="max_shift"):
        build("shape", max_shift=-1)


def test_cape_identity_at_eval_and_augments_in_training() -> None:
    pe = build("cape_likhomanenko")
    sin = build("sinusoidal")
    x = torch.randn(3, 10, 8)
    pos = torch.arange(10.0)
    pe.eval()
    torch.testing.assert_close(pe.embed(x, pe.context(pos)), sin.embed(x, sin.context(pos)))
    pe.train()
    out = pe.embed(x, pe.context(pos)) - x
    assert not torch.allclose(out, sin.embed(x, sin.context(pos)) - x)
    assert not torch.allclose(out[0], out[1])  # augmentation is drawn per sequence
    # Without local shifts, pos′ = λ(p + Δ): spacing λ ∈ [1/1.03, 1.03], first position λΔ with |Δ| ≤ 5.
    glob = build("cape_likhomanenko", max_local_shift=0.0).train()
    aug = glob.augment(pos, 500)
    lam = aug[:, 1] - aug[:, 0]
    torch.testing.assert_close(aug[:, 1:] - aug[:, :-1], lam[:, None].expand(-1, 9))
    assert lam.min() >= 1 / 1.03 - 1e-5 and lam.max() <= 1.03 + 1e-5 and lam.std() > 0.005
    assert (aug[:, 0] / lam).abs().max() <= 5 + 1e-4
    with pytest.raises(ValueError, match="max_global_scaling"):
        build("cape_likhomanenko", max_global_scaling=0.5)


def test_complex_order_formula_uses_token_tables() -> None:
    pe = build("complex_order", vocab_size=10)
    x = torch.randn(1, 3, 8)
    tokens = torch.tensor([[1, 2, 1]])
    pos = torch.arange(3.0)
    with torch.no_grad():
        pe.freq[1] = torch.tensor([0.5, 2.0, 0.0, 1.0])
        pe.phase[1] = torch.tensor([0.1, 0.0, 0.3, 0.0])
    out = pe.embed(x, pe.context(pos, tokens=tokens))
    phi = pe.freq[1] * 2 + pe.phase[1]  # token 1 at position 2
    expected = torch.cat((x[0, 2, :4] * phi.cos(), x[0, 2, 4:] * phi.sin()))
    torch.testing.assert_close(out[0, 2], expected.detach())
    # Token 2 keeps the initial frequencies base^(−k/n) and zero phase.
    phi2 = 1.0 * 10000.0 ** (-torch.arange(4.0) / 4)
    torch.testing.assert_close(out[0, 1], torch.cat((x[0, 1, :4] * phi2.cos(), x[0, 1, 4:] * phi2.sin())))


def test_floater_hermite_grid_matches_fine_integration() -> None:
    torch.manual_seed(0)
    coarse = build("floater", grid=8)
    fine = build("floater", grid=1)
    fine.load_state_dict(coarse.state_dict())
    with torch.no_grad():
        coarse.fc2.weight.mul_(5)
        fine.fc2.weight.mul_(5)
    pos = torch.arange(40.0)
    a, b = coarse.table(pos), fine.table(pos)
    torch.testing.assert_close(a[0], coarse.p0.detach())
    assert (a - b).abs().max() < 1e-2 * b.abs().max()
    assert (b[1:] - b[:-1]).abs().sum(-1).min() > 0  # positions are distinct
    assert torch.isfinite(coarse.table(torch.arange(2048.0))).all()  # no maximum length
    with pytest.raises(ValueError, match="delta_t"):
        build("floater", delta_t=0)


def test_segment_positions_hand_case() -> None:
    tokens = torch.tensor([list(b"ab.cd\ne?!f")])
    seg, intra = segment_positions(tokens)
    assert seg.tolist() == [[0, 0, 0, 1, 1, 1, 2, 2, 3, 4]]
    assert intra.tolist() == [[0, 1, 2, 0, 1, 2, 0, 1, 0, 0]]


def test_bipe_intra_embedding_and_segment_alibi_bias() -> None:
    pe = posenc.build("bipe", head_dim=4, num_heads=4, train_len=16)
    tokens = torch.tensor([list(b"ab.cd\ne")])
    x = torch.zeros(1, 7, 16)
    pos = torch.arange(7.0)
    ctx = pe.context(pos, tokens=tokens)
    emb, b = pe.embed(x, ctx), pe.bias(ctx)
    torch.testing.assert_close(emb[0], sinusoidal_table(torch.tensor([0., 1, 2, 0, 1, 2, 0]), 16))
    seg = torch.tensor([0., 0, 0, 1, 1, 1, 2])
    expected = -alibi_slopes(4)[:, None, None] * (seg[:, None] - seg[None, :])
    assert b.shape == (1, 4, 7, 7)
    torch.testing.assert_close(b[0], expected)
    with pytest.raises(ValueError, match="token ids"):  # no token ids: an error, no fallback
        pe.context(pos)
    co = build("complex_order")
    with pytest.raises(ValueError, match="token ids"):
        co.embed(torch.zeros(1, 7, 8), co.context(pos))


def test_cope_positions_match_a_loop() -> None:
    torch.manual_seed(0)
    pe = posenc.build("cope", head_dim=4, num_heads=1, train_len=8, npos_max=4)
    with torch.no_grad():
        pe.pos_emb.normal_()
    q, k = torch.randn(1, 1, 5, 4), torch.randn(1, 1, 5, 4)
    pos = torch.arange(5.0)
    out = pe.logits(q, k, pe.context(pos))[0, 0]
    att = (q @ k.transpose(-2, -1))[0, 0] / 2.0
    g = torch.sigmoid(att)
    for i in range(5):
        for j in range(i + 1):
            p = min(sum(g[i, t].item() for t in range(j, i + 1)), 3.0)
            lo, hi = math.floor(p), math.ceil(p)
            e = pe.pos_emb[lo] * (1 - (p - lo)) + pe.pos_emb[hi] * (p - lo)
            # The released code's default path: (q·k + q·e[p]) / √d, the position logit divided by √d too.
            torch.testing.assert_close(out[i, j], att[i, j] + (q[0, 0, i] @ e) / 2.0, rtol=1e-5, atol=1e-5)
    # Zero position embeddings: plain scaled dot-product logits.
    pe2 = posenc.build("cope", head_dim=4, num_heads=1, train_len=8)
    torch.testing.assert_close(pe2.logits(q, k, pe2.context(pos))[0, 0], att)


def test_cope_divides_the_position_logit_by_sqrt_d() -> None:
    """Pins the released code's default (``--cope-nodiv`` unset in its run script): with one key, the gate is
    σ(q·k/√d), the position p = gate, and the logit is (q·k + q·e[p])/√d, not q·k/√d + q·e[p]."""
    pe = posenc.build("cope", head_dim=4, num_heads=1, train_len=8, npos_max=2)
    q = torch.tensor([[[[1.0, 0.0, 2.0, 0.0]]]])
    k = torch.tensor([[[[0.5, 0.0, 0.0, 0.0]]]])
    with torch.no_grad():
        pe.pos_emb.copy_(torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 3.0, 0.0]]))
    gate = 1.0 / (1.0 + math.exp(-0.25))  # σ(q·k/√4) with q·k = 0.5
    pos_logit = gate * 6.0  # q·e[p] interpolated between e[0] (q·e = 0) and e[1] (q·e = 6) at p = gate
    out = pe.logits(q, k, pe.context(torch.zeros(1)))
    assert out.item() == pytest.approx((0.5 + pos_logit) / 2.0, rel=1e-6)
    assert out.item() != pytest.approx(0.5 / 2.0 + pos_logit, rel=1e-3)  # the --cope-nodiv variant


@pytest.mark.parametrize("pid", ABSOLUTE_IDS)
def test_model_forward_backward_finite(pid: str) -> None:
    torch.manual_seed(0)
    pe = posenc.build(pid, head_dim=8, num_heads=2, train_len=16)
    m = Transformer(ModelConfig(n_layer=1, n_head=2, d_model=16), pe)
    tokens = torch.randint(0, 256, (2, 16))
    tokens[:, ::5] = ord(".")
    _, loss = m(tokens, targets=tokens)
    loss.backward()
    assert torch.isfinite(loss)
    m.eval()
    long = torch.randint(0, 256, (1, 64))
    if pid == "learned":
        with pytest.raises(ValueError, match="max_len"):
            m(long)
    else:
        with torch.no_grad():
            assert torch.isfinite(m(long)[0]).all()


@pytest.mark.parametrize("pid", ["sinusoidal", "bipe"])
def test_fast_and_explicit_attention_paths_agree_across_segments(pid: str) -> None:
    """As the property test, with sentence breaks in the input, so BiPE's segment bias is not trivial."""
    torch.manual_seed(0)
    pe = posenc.build(pid, head_dim=8, num_heads=2, train_len=16)
    a = Transformer(ModelConfig(n_layer=1, n_head=2, d_model=16, attn="sdpa"), pe).eval()
    b = Transformer(ModelConfig(n_layer=1, n_head=2, d_model=16, attn="explicit"), pe).eval()
    b.load_state_dict(a.state_dict())
    tokens = torch.tensor([list(b"ab.cd\nef.gh")])
    with torch.no_grad():
        torch.testing.assert_close(a(tokens)[0], b(tokens)[0], rtol=1e-4, atol=1e-4)


def test_unknown_or_invalid_hyperparameters_raise() -> None:
    with pytest.raises(ValueError, match="bogus"):
        build("sinusoidal", bogus=1)
    with pytest.raises(ValueError, match="npos_max"):
        build("cope", npos_max=0)
    with pytest.raises(ValueError, match="vocab_size"):
        build("complex_order", vocab_size=0)
