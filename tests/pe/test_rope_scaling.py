"""Properties of the RoPE scalings (frequency functions over RoPE), the LongRoPE search, and every rotary id
end-to-end in the reference model."""

from __future__ import annotations

import math

import pytest
import torch

from posenc.model import ModelConfig, Transformer
from posenc.pe.base import build, get_class
from posenc.pe.rope_scaling import (
    ROPE_SCALING_FUNCTIONS,
    critical_dimension,
    critical_small_base,
    extrapolation_limit,
    ntk_by_parts_scaling,
    search_longrope_factors,
    yarn_correction_range,
)
from posenc.pe.rotary import default_inv_freq

D, H, L = 16, 2, 32

ROTARY_IDS = [
    "rope", "xpos", "p_rope", "hope", "fope", "resonance_rope", "pi", "ntk_aware", "dynamic_ntk",
    "ntk_by_parts", "yarn", "truncated_basis", "abf", "code_llama_base", "rope_base_scaling_laws", "clex",
    "entropy_abf", "longrope", "longrope2", "llama3_scaling",
]
SCALINGS = ["pi", "ntk_aware", "dynamic_ntk", "ntk_by_parts", "yarn", "truncated_basis", "abf", "code_llama_base",
            "rope_base_scaling_laws", "clex", "entropy_abf", "longrope", "longrope2", "llama3_scaling"]


def _qk(t: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, H, t, D, generator=g), torch.randn(1, H, t, D, generator=g)


def _logits(pe_id: str, t: int, offset: float = 0.0, **kw) -> torch.Tensor:
    pe = build(pe_id, head_dim=D, num_heads=H, train_len=L, **kw)
    pe.eval()
    q, k = _qk(t)
    pos = torch.arange(t, dtype=torch.float32) + offset
    return pe.logits(q, k, pos, pos)


def test_every_scaling_applies_to_rope() -> None:
    for pe_id in SCALINGS:
        assert get_class(pe_id).applies_to == "rope", pe_id


@pytest.mark.parametrize("pe_id", ["pi", "ntk_aware", "yarn", "llama3_scaling", "longrope"])
def test_scale_one_is_rope(pe_id: str) -> None:
    kw: dict = {"scale": 1.0}
    if pe_id == "longrope":
        kw |= {"long_factors": [1.0] * (D // 2), "short_factors": [1.0] * (D // 2)}
    t = 2 * L  # beyond the training length, so the long list and dynamic parts are exercised
    torch.testing.assert_close(_logits(pe_id, t, **kw), _logits("rope", t))


def test_dynamic_ntk_is_rope_up_to_train_len_only() -> None:
    torch.testing.assert_close(_logits("dynamic_ntk", L), _logits("rope", L))
    assert not torch.allclose(_logits("dynamic_ntk", L + 8)[..., :8, :8], _logits("rope", L + 8)[..., :8, :8])
    pe = build("dynamic_ntk", head_dim=D, num_heads=H, train_len=L, scale=4.0)
    assert not pe.relative
    torch.testing.assert_close(pe.inv_freq(L), default_inv_freq(D, 10000.0))


def test_ntk_aware_first_unchanged_last_divided_by_s() -> None:
    for s in (2.0, 8.0):
        inv = build("ntk_aware", head_dim=D, num_heads=H, train_len=L, scale=s).inv_freq(L)
        base = default_inv_freq(D, 10000.0)
        assert inv[0].item() == pytest.approx(base[0].item(), rel=1e-6)
        assert inv[-1].item() == pytest.approx(base[-1].item() / s, rel=1e-5)


def test_ntk_by_parts_bands() -> None:
    d, b, ctx, s = 128, 10000.0, 4096, 8.0
    inv, attn = ntk_by_parts_scaling(head_dim=d, base=b, train_len=ctx, scale=s)
    base = default_inv_freq(d, b)
    r = ctx / (2 * math.pi / base)  # rotations within L
    fast, slow = r > 32, r < 1
    assert fast.any() and slow.any() and (~fast & ~slow).any()
    torch.testing.assert_close(inv[fast], base[fast])
    torch.testing.assert_close(inv[slow], base[slow] / s)
    mid = ~fast & ~slow
    assert torch.all(inv[mid] <= base[mid]) and torch.all(inv[mid] >= base[mid] / s)
    assert attn == 1.0
    low, high = yarn_correction_range(d, b, ctx, 32, 1)
    assert (low, high) == (math.floor(d * math.log(ctx / (64 * math.pi)) / (2 * math.log(b))),
                           math.ceil(d * math.log(ctx / (2 * math.pi)) / (2 * math.log(b))))


@pytest.mark.parametrize("s", [2.0, 16.0])
def test_yarn_attention_factor_applied_once(s: float) -> None:
    pe = build("yarn", head_dim=D, num_heads=H, train_len=L, scale=s)
    rope = build("rope", head_dim=D, num_heads=H, train_len=L)
    q = torch.randn(1, H, 5, D)
    pos = torch.arange(5, dtype=torch.float32) * 7
    a = 0.1 * math.log(s) + 1
    # q = k at the same position: the rotation cancels, only the factor on cos/sin remains
    diag = torch.diagonal(pe.logits(q, q, pos, pos), dim1=-2, dim2=-1)
    ref = torch.diagonal(rope.logits(q, q, pos, pos), dim1=-2, dim2=-1)
    torch.testing.assert_close(diag / ref, torch.full_like(diag, a * a))
    # the model's fast path (rotate, then SDPA's own 1/√d) sees the same factor
    qr, kr = pe.rotate(q, q, pos, pos)
    torch.testing.assert_close(torch.diagonal(qr @ kr.transpose(-2, -1), dim1=-2, dim2=-1) / math.sqrt(D), diag)


@pytest.mark.parametrize("pe_id", [i for i in SCALINGS + ["rope"] if get_class(i).relative])
def test_static_scalings_are_shift_invariant(pe_id: str) -> None:
    torch.testing.assert_close(_logits(pe_id, 12), _logits(pe_id, 12, offset=29.0), atol=2e-4, rtol=2e-4)


def test_truncated_basis_bands() -> None:
    pe = build("truncated_basis", head_dim=D, num_heads=H, train_len=L)
    base, inv = default_inv_freq(D, 10000.0), pe.inv_freq(L)
    b, a, rho = 2 * math.pi / L, 2 * math.pi / L / 8, 2 * math.pi / L / 16
    assert torch.all(inv[base >= b] == base[base >= b])
    mid = (base > a) & (base < b)
    assert mid.any() and torch.allclose(inv[mid], torch.full_like(inv[mid], rho))
    assert (base <= a).any() and torch.all(inv[base <= a] == 0)


def test_llama3_bands() -> None:
    pe = build("llama3_scaling", head_dim=D, num_heads=H, train_len=L, scale=8.0)
    base, inv = default_inv_freq(D, 10000.0), pe.inv_freq(L)
    wl = 2 * math.pi / base
    hi, lo = wl < L / 4, wl > L
    assert hi.any() and lo.any()
    torch.testing.assert_close(inv[hi], base[hi])
    torch.testing.assert_close(inv[lo], base[lo] / 8)


def test_longrope_short_long_and_n_hat() -> None:
    long = [1.0 + i for i in range(D // 2)]
    short = [1.0] * (D // 2)
    pe = build("longrope", head_dim=D, num_heads=H, train_len=L, scale=4.0, long_factors=long, short_factors=short)
    base = default_inv_freq(D, 10000.0)
    torch.testing.assert_close(pe.inv_freq(L), base)
    torch.testing.assert_close(pe.inv_freq(L + 1), base / torch.tensor(long))
    assert pe.attention_scaling(L) == pytest.approx(math.sqrt(1 + math.log(4) / math.log(L)))
    nh = build("longrope", head_dim=D, num_heads=H, train_len=L, scale=4.0, long_factors=long, n_hat=4)
    pos = torch.arange(2 * L, dtype=torch.float32)
    cos, sin = nh.cos_sin(pos, 2 * L)
    a = nh.attention_scaling(2 * L)
    ang_plain = pos[:4, None] * base
    ang_scaled = pos[4:, None] * base / torch.tensor(long)
    torch.testing.assert_close(cos[:4], ang_plain.cos() * a)
    torch.testing.assert_close(sin[4:], ang_scaled.sin() * a)


def test_longrope2_rule() -> None:
    pe = build("longrope2", head_dim=D, num_heads=H, train_len=L, scale=4.0, critical_factor=5.0)
    base = default_inv_freq(D, 10000.0)
    torch.testing.assert_close(pe.inv_freq(L), base)
    assert pe.attention_scaling(L) == 1.0
    c = critical_dimension(D, 10000.0, L) // 2
    assert 0 < c < D // 2
    inv = pe.inv_freq(2 * L)
    torch.testing.assert_close(inv[c:], base[c:] / 5.0)
    assert inv[0] == base[0] and torch.all(base[1:c] / inv[1:c] < 5.0)
    assert pe.attention_scaling(2 * L) == pytest.approx(math.sqrt(1 + math.log(4) / math.log(L)))


def test_entropy_abf_query_scaling_skips_first_layers() -> None:
    pe = build("entropy_abf", head_dim=D, num_heads=H, train_len=L, unscaled_layers=1)
    abf = build("abf", head_dim=D, num_heads=H, train_len=L)
    assert pe.bias_per_layer and not pe.relative
    t = 3 * L
    q, k = _qk(t)
    pos = torch.arange(t, dtype=torch.float32)
    torch.testing.assert_close(pe.logits(q, k, pos, pos, layer=0), abf.logits(q, k, pos, pos))
    ratio = pe.logits(q, k, pos, pos, layer=1) / abf.logits(q, k, pos, pos)
    expected = torch.clamp(torch.log(pos + 1) / math.log(L), min=1.0)
    torch.testing.assert_close(ratio[0, 0, :, 0], expected, atol=1e-4, rtol=1e-4)
    assert expected[-1] > 1.0 and expected[L - 2] == 1.0


def test_clex_untrained_is_ntk_and_learns() -> None:
    pe = build("clex", head_dim=D, num_heads=H, train_len=L, scale=4.0)
    pe.eval()
    torch.testing.assert_close(pe.inv_freq(L), default_inv_freq(D, 10000.0))
    ntk = ROPE_SCALING_FUNCTIONS["ntk_aware"](head_dim=D, base=10000.0, train_len=L, scale=3.0)[0]
    torch.testing.assert_close(pe.inv_freq(3 * L), ntk, rtol=1e-4, atol=0)
    pe.train()
    ts = [pe.current_t(L) for _ in range(50)]
    assert min(ts) >= 1.0 and max(ts) <= 4.0 and max(ts) - min(ts) > 1.0
    with torch.no_grad():
        pe.net[2].weight.normal_(std=0.1)
    q, k = _qk(8)
    pos = torch.arange(8, dtype=torch.float32)
    torch.manual_seed(0)
    pe.logits(q, k, pos, pos).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in pe.net.parameters())


def test_scaling_law_helpers() -> None:
    assert critical_dimension(128, 10000.0, 4096) == 92  # LLaMA 2, the paper's example
    assert extrapolation_limit(128, 10000.0, 4096) == pytest.approx(2 * math.pi * 10000 ** (92 / 128))
    assert critical_small_base(128, 4096) > 500  # the paper's small base 500 lies in the no-limit regime
    assert extrapolation_limit(128, 500.0, 4096) == math.inf
    pe = build("rope_base_scaling_laws", head_dim=D, num_heads=H, train_len=L)
    assert pe.base == pytest.approx(critical_small_base(D, L))
    wl_max = 2 * math.pi / pe.inv_freq(L)[-1].item()
    assert wl_max == pytest.approx(L, rel=1e-4)


def test_search_finds_known_optimum() -> None:
    target = torch.tensor([1.0, 1.5, 2.5, 4.5])
    n_star = 4

    def loss(lam: torch.Tensor, n_hat: int) -> float:
        return float(((lam - target) ** 2).sum()) + (0.5 if n_hat != n_star else 0.0)

    res = search_longrope_factors(loss, head_dim=8, scale=4.0, population=24, generations=40, seed=0)
    assert res.n_hat == n_star
    assert res.loss < 1e-3
    assert all(a <= b for a, b in zip(res.factors, res.factors[1:], strict=False))
    assert all(1.0 <= f <= 5.0 for f in res.factors)
    again = search_longrope_factors(loss, head_dim=8, scale=4.0, population=24, generations=40, seed=0)
    assert again == res  # seeded


def test_search_respects_constraints_on_non_monotone_optimum() -> None:
    target = torch.tensor([3.0, 1.0, 6.0, 2.0])  # not monotone and partly outside [1, 1.25 s]

    def loss(lam: torch.Tensor, n_hat: int) -> float:
        return float(((lam - target) ** 2).sum())

    res = search_longrope_factors(loss, head_dim=8, scale=2.0, population=8, generations=5, seed=1)
    assert all(a <= b for a, b in zip(res.factors, res.factors[1:], strict=False))
    assert all(1.0 <= f <= 2.5 for f in res.factors)


@pytest.mark.parametrize(("pe_id", "kw", "name"), [
    ("pi", {"scale": 0.5}, "scale"),
    ("yarn", {"base": -1.0}, "base"),
    ("yarn", {"beta_slow": 40.0}, "beta_slow"),
    ("llama3_scaling", {"high_freq_factor": 0.5}, "high_freq_factor"),
    ("longrope", {"long_factors": [1.0, 2.0]}, "long_factors"),
    ("longrope", {"n_hat": -1}, "n_hat"),
    ("longrope2", {"critical_pair": 99}, "critical_pair"),
    ("truncated_basis", {"a_cut": 1.0, "b_cut": 0.5}, "a_cut"),
    ("entropy_abf", {"unscaled_layers": -1}, "unscaled_layers"),
    ("clex", {"ode_steps": 0}, "ode_steps"),
])
def test_invalid_hyperparameters_name_the_parameter(pe_id: str, kw: dict, name: str) -> None:
    with pytest.raises(ValueError, match=f"'{name}'"):
        build(pe_id, head_dim=D, num_heads=H, train_len=L, **kw)


def test_search_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="'scale'"):
        search_longrope_factors(lambda lam, n: 0.0, head_dim=8, scale=0.5)
    with pytest.raises(ValueError, match="'head_dim'"):
        search_longrope_factors(lambda lam, n: 0.0, head_dim=7, scale=2.0)


@pytest.mark.parametrize("pe_id", ROTARY_IDS)
def test_end_to_end_in_the_model(pe_id: str) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=3, n_head=2, d_model=32)
    pe = build(pe_id, head_dim=cfg.head_dim, num_heads=cfg.n_head, train_len=64)
    model = Transformer(cfg, pe)
    for shape in ((2, 64), (1, 2048)):
        model.train(shape[1] == 64)
        tokens = torch.randint(0, 256, shape)
        logits, loss = model(tokens, targets=tokens)
        assert logits.shape == (*shape, 256) and torch.isfinite(logits).all()
        loss.backward()
        assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
        model.zero_grad()
