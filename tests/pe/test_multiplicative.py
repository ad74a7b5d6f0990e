"""PoPE and PaTH: hand-computed cases, PaTH against the explicit product of Householder matrices and against the
chunked UT-transform reference of the authors' test suite (``flash-linear-attention``, ``naive_path_attn``,
re-derived here), PoPE against the PoPE-pytorch port's construction (re-derived)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import posenc
from posenc.pe.base import spec
from posenc.pe.multiplicative import path_key_ends, path_logits, pope_frequencies

H, D, L = 2, 4, 16


def build(pe_id: str, **hp: object) -> posenc.PositionalEncoding:
    torch.manual_seed(0)
    return posenc.build(pe_id, head_dim=D, num_heads=H, train_len=L, **hp)


# ---------------------------------------------------------------------- PoPE
def test_pope_hand_computed() -> None:
    """d = 2, one head: a_ij = Σ_c softplus(q_c) softplus(k_c) cos((i − j)θ_c − δ_c)/√2, θ = (1, 100^(−1/2))."""
    pe = posenc.build("pope", head_dim=2, num_heads=1, train_len=8, base=100.0)
    torch.testing.assert_close(pe.theta, torch.tensor([1.0, 0.1]))
    with torch.no_grad():
        pe.delta.copy_(torch.tensor([[-0.5, 0.0]]))
    q = torch.tensor([0.3, -1.0]).view(1, 1, 1, 2)
    k = torch.tensor([2.0, 0.5]).view(1, 1, 1, 2)
    out = pe.logits(q, k, pe.context(torch.tensor([5.0]), torch.tensor([2.0])))
    sp = F.softplus
    expect = (sp(torch.tensor(0.3)) * sp(torch.tensor(2.0)) * math.cos(3 * 1.0 + 0.5)
              + sp(torch.tensor(-1.0)) * sp(torch.tensor(0.5)) * math.cos(3 * 0.1)) / math.sqrt(2)
    torch.testing.assert_close(out.flatten(), expect.view(1))


def test_pope_bias_clamp_and_traits() -> None:
    s = spec("pope")
    assert s.relative and s.learnable and s.explicit
    pe = build("pope")
    pos = torch.arange(6.0)
    q, k = torch.randn(1, H, 6, D), torch.randn(1, H, 6, D)
    with torch.no_grad():
        pe.delta.fill_(1.0)  # clamped to 0
        at_zero = pe.logits(q, k, pe.context(pos))
        pe.delta.fill_(-10.0)  # clamped to −2π, a full turn: the same logits
        at_turn = pe.logits(q, k, pe.context(pos))
    torch.testing.assert_close(at_turn, at_zero, rtol=1e-4, atol=1e-4)
    assert build("pope", phase_bias=False).delta is None
    assert not list(build("pope", phase_bias=False).parameters())


def test_pope_matches_the_port_construction() -> None:
    """The PoPE-pytorch construction: magnitudes softplus(x), q as interleaved (μ cos φ, μ sin φ) at phase pθ,
    k the same at pθ + δ, then a plain dot product of width 2d scaled by 1/√d."""
    torch.manual_seed(3)
    pe = build("pope")
    with torch.no_grad():
        pe.delta.uniform_(-2 * math.pi, 0)
    T = 7
    q, k = torch.randn(2, H, T, D), torch.randn(2, H, T, D)
    pos = torch.arange(float(T))
    freqs = pos[:, None] * pope_frequencies(D, 10000.0)  # (T, d)
    fk = freqs[None] + pe.delta.detach()[:, None, :]  # (H, T, d)
    qq = torch.stack([F.softplus(q) * freqs.cos(), F.softplus(q) * freqs.sin()], -1).flatten(-2)
    kk = torch.stack([F.softplus(k) * fk.cos(), F.softplus(k) * fk.sin()], -1).flatten(-2)
    ref = qq @ kk.transpose(-1, -2) / math.sqrt(D)
    torch.testing.assert_close(pe.logits(q, k, pe.context(pos)), ref, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------- PaTH
def _explicit_path(q: torch.Tensor, k: torch.Tensor, w: torch.Tensor, beta: torch.Tensor,
                   ends: list[int]) -> torch.Tensor:
    """q_iᵀ H_{e_i} ⋯ H_{j+1} k_j with the d×d matrices written out, float64 (B, H, T, S); 0 for j > e_i."""
    B, Hh, T, d = q.shape
    S = k.size(-2)
    out = torch.zeros(B, Hh, T, S, dtype=torch.float64)
    for b in range(B):
        for h in range(Hh):
            ww = w[b, h].double()
            hs = [torch.eye(d, dtype=torch.float64) - beta[b, h, t].double() * torch.outer(ww[t], ww[t])
                  for t in range(S)]
            for i in range(T):
                prod = torch.eye(d, dtype=torch.float64)
                for j in range(ends[i], -1, -1):
                    out[b, h, i, j] = q[b, h, i].double() @ prod @ k[b, h, j].double()
                    prod = prod @ hs[j]
    return out


def _inputs(B: int, T: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    torch.manual_seed(seed)
    q, k = torch.randn(B, H, T, D), torch.randn(B, H, T, D)
    w = F.normalize(torch.randn(B, H, T, D), dim=-1)
    beta = 2 * torch.rand(B, H, T)
    return q, k, w, beta


@pytest.mark.parametrize("block", [1, 3, 4, 64])
def test_path_matches_the_explicit_householder_product(block: int) -> None:
    q, k, w, beta = _inputs(2, 11)
    pos = torch.arange(11.0)
    ends = path_key_ends(pos, pos)
    assert ends.tolist() == list(range(11))
    ref = _explicit_path(q, k, w, beta, ends.tolist())
    out = path_logits(q, k, w, beta, ends, block=block)
    causal = torch.tril(torch.ones(11, 11, dtype=torch.bool))
    torch.testing.assert_close(out[..., causal].double(), ref[..., causal], rtol=1e-5, atol=1e-5)


def test_path_hand_computed() -> None:
    """d = 2, w_1 = e_1, β_1 = 2 (a reflection of the first axis) between key 0 and query 1:
    q_1ᵀ H_1 k_0 = q_1ᵀ diag(−1, 1) k_0; the diagonal is the plain dot product."""
    q = torch.tensor([[0.0, 0.0], [1.0, 2.0]]).view(1, 1, 2, 2)
    k = torch.tensor([[3.0, 5.0], [7.0, 11.0]]).view(1, 1, 2, 2)
    w = torch.tensor([[0.0, 1.0], [1.0, 0.0]]).view(1, 1, 2, 2)
    beta = torch.tensor([0.7, 2.0]).view(1, 1, 2)
    out = path_logits(q, k, w, beta, torch.tensor([0, 1]))
    assert out[0, 0, 1, 0] == -1.0 * 3.0 + 2.0 * 5.0 and out[0, 0, 1, 1] == 7.0 + 22.0


def test_path_query_rows_and_shifted_keys() -> None:
    """Queries against a longer key range (as in the model's query chunks): the same rows as the full matrix."""
    q, k, w, beta = _inputs(1, 9, seed=2)
    pos = torch.arange(9.0)
    full = path_logits(q, k, w, beta, path_key_ends(pos, pos), block=4)
    rows = path_logits(q[..., 3:6, :], k[..., :6, :], w[..., :6, :], beta[..., :6], path_key_ends(pos[3:6], pos[:6]),
                       block=4)
    torch.testing.assert_close(rows, full[..., 3:6, :6], rtol=1e-5, atol=1e-5)


def _fla_naive_logits(q: torch.Tensor, k: torch.Tensor, w: torch.Tensor, beta: torch.Tensor, bt: int) -> torch.Tensor:
    """The unscaled logits of ``naive_path_attn`` in flash-linear-attention's ``tests/ops/test_path_attn.py``,
    re-derived: per chunk of ``bt`` tokens, T = (I + strictly_lower(βw wᵀ))⁻¹ by forward substitution, the
    intra-chunk logits q kᵀ − (q wᵀ)_lower T (βw kᵀ)_strict, chunk-boundary-adjusted q and k, and a right-to-left
    sweep applying each earlier chunk's I − wᵀ T βw to the queries."""
    B, Hh, n_tok, d = q.shape
    q, k, w, beta = (x.double() for x in (q, k, w, beta))
    wb = w * beta[..., None]
    n = n_tok // bt
    qc, kc, wc, wbc = (x.view(B, Hh, n, bt, d) for x in (q, k, w, wb))
    strict_upper_or_diag = torch.triu(torch.ones(bt, bt, dtype=torch.bool))
    tm = -(wbc @ wc.transpose(-1, -2)).masked_fill(strict_upper_or_diag, 0)
    for i in range(1, bt):  # forward substitution for the inverse of the unit lower-triangular matrix
        tm[..., i, :i] = tm[..., i, :i].clone() + (tm[..., i, :, None].clone() * tm[..., :, :i].clone()).sum(-2)
    tm = tm + torch.eye(bt, dtype=torch.float64)
    twbk = tm @ (wbc @ kc.transpose(-1, -2)).masked_fill(strict_upper_or_diag, 0)
    qw = (qc @ wc.transpose(-1, -2)).tril()
    twb = tm @ wbc
    local = (qc @ kc.transpose(-1, -2)).tril() - qw @ twbk
    q_adj = (qc - qw @ twb).reshape(B, Hh, n_tok, d)
    k_adj = (kc - twbk.transpose(-1, -2) @ wc).reshape(B, Hh, n_tok, d)
    hmat = wc.transpose(-1, -2) @ twb  # (B, H, n, d, d)
    out = torch.zeros(B, Hh, n_tok, n_tok, dtype=torch.float64)
    for i in range(0, n_tok, bt):
        qi = q_adj[:, :, i:i + bt].clone()
        for j in range(i - bt, -bt, -bt):
            out[:, :, i:i + bt, j:j + bt] = qi @ k_adj[:, :, j:j + bt].transpose(-1, -2)
            qi = qi - qi @ hmat[:, :, j // bt]
    for c in range(n):
        out[:, :, c * bt:(c + 1) * bt, c * bt:(c + 1) * bt] = local[:, :, c]
    return out


def test_path_matches_the_authors_chunked_reference() -> None:
    q, k, w, beta = _inputs(2, 12, seed=5)
    pos = torch.arange(12.0)
    ref = _fla_naive_logits(q, k, w, beta, bt=4)
    out = path_logits(q, k, w, beta, path_key_ends(pos, pos), block=5)
    causal = torch.tril(torch.ones(12, 12, dtype=torch.bool))
    torch.testing.assert_close(out[..., causal].double(), ref[..., causal], rtol=1e-5, atol=1e-5)


def test_path_transforms() -> None:
    """w_t unit, β_t ∈ (0, 2) (1 at initialisation's zero bias), and the width-3 convolution is causal:
    changing key t changes w only at t, t + 1, t + 2."""
    pe = build("path", num_layers=2)
    s = spec("path")
    assert s.learnable and s.explicit and not s.relative
    torch.manual_seed(4)
    k = torch.randn(1, H, 10, D)
    w, beta = pe.transforms(k, layer=1)
    torch.testing.assert_close(w.norm(dim=-1), torch.ones(1, H, 10))
    assert ((beta > 0) & (beta < 2)).all()
    k2 = k.clone()
    k2[..., 4, :] += 1.0
    w2, _ = pe.transforms(k2, layer=1)
    changed = (w2 - w).abs().amax(dim=(0, 1, 3)) > 1e-7
    assert changed.tolist() == [False] * 4 + [True] * 3 + [False] * 3
    with pytest.raises(ValueError, match="num_layers"):
        pe.transforms(k, layer=2)


def test_path_pe_logits_are_the_scaled_path_logits() -> None:
    pe = build("path")
    torch.manual_seed(6)
    q, k = torch.randn(1, H, 8, D), torch.randn(1, H, 8, D)
    pos = torch.arange(8.0)
    w, beta = pe.transforms(k)
    expect = path_logits(q, k, w, beta, path_key_ends(pos, pos)) / math.sqrt(D)
    torch.testing.assert_close(pe.logits(q, k, pe.context(pos)), expect)
