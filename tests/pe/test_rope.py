"""RoPE and the scaling registry (posenc.pe.rope): dispatch, registry traits, formulas, HF parity.

Every scaling in ``ROPE_SCALINGS`` must have an HF parity case (:data:`HF_ROPE_TYPE`) or a formula test
(decorated with :func:`formula_test`): ``test_every_scaling_is_tested`` fails otherwise, so a new scaling
cannot escape its tests.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch

from posenc.model import ModelConfig, Transformer
from posenc.pe.base import available, build, hyperparameters, spec
from posenc.pe.rope import (
    ROPE_SCALINGS,
    LongRoPE,
    RoPE,
    ScaledRoPE,
    critical_dimension,
    default_inv_freq,
    ntk_by_parts_scaling,
    rope_scaling,
    yarn_correction_range,
)

D, H, L = 16, 2, 32
FORMULA_TESTED: set[str] = set()


def formula_test(*scaling_ids: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Mark a test as the formula test of ``scaling_ids`` (see the module docstring)."""

    def mark(fn: Callable[..., None]) -> Callable[..., None]:
        FORMULA_TESTED.update(scaling_ids)
        return fn

    return mark


def _qk(t: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, H, t, D, generator=g), torch.randn(1, H, t, D, generator=g)


def _logits(pe_id: str, t: int, offset: float = 0.0, **kw: Any) -> torch.Tensor:
    pe = build(pe_id, head_dim=D, num_heads=H, train_len=L, **kw)
    pe.eval()
    q, k = _qk(t)
    pos = torch.arange(t, dtype=torch.float32) + offset
    return pe.logits(q, k, pe.context(pos))


# ---------------------------------------------------------------------------------------------- registry
@pytest.mark.parametrize("scaling_id", sorted(ROPE_SCALINGS))
def test_scaling_ids_are_scaled_rope_with_the_function_hyperparameters(scaling_id: str) -> None:
    sc, s = ROPE_SCALINGS[scaling_id], spec(scaling_id)
    assert issubclass(s.cls, ScaledRoPE) and s.applies_to == "rope" and s.cls is sc.rotation
    assert (s.relative, s.scale_policy) == (sc.relative, sc.scale_policy)
    own = {k: v for k, v in hyperparameters(scaling_id).items() if k != "base" and k in sc.params}
    assert own == dict(sc.params) and hyperparameters(scaling_id)["base"] == 10000.0
    pe = build(scaling_id, head_dim=D, num_heads=H, train_len=L)
    assert type(pe) is sc.rotation and pe.id == scaling_id and pe.scaling is sc
    assert pe.relative == sc.relative and pe.scale == sc.params["scale"]


def test_scale_defaults_live_in_the_function_signatures() -> None:
    assert ROPE_SCALINGS["llama3_scaling"].params["scale"] == 8.0
    assert ROPE_SCALINGS["truncated_basis"].params["scale"] == 1.0
    assert {ROPE_SCALINGS[i].params["scale"] for i in ROPE_SCALINGS} == {1.0, 4.0, 8.0}


def test_build_dispatches_through_the_scaling_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """build("yarn", scale=8) → ScaledRoPE → ROPE_SCALINGS["yarn"].fn, once per forward, into the rotation."""
    calls: list[dict[str, Any]] = []
    sc = ROPE_SCALINGS["yarn"]

    def spy(**kw: Any) -> tuple[torch.Tensor, float]:
        calls.append(kw)
        return sc.fn(**kw)

    pe = build("yarn", head_dim=D, num_heads=H, train_len=L, scale=8)
    monkeypatch.setitem(ROPE_SCALINGS, "yarn", dataclasses.replace(sc, fn=spy))
    pe.scaling = ROPE_SCALINGS["yarn"]
    Transformer(ModelConfig(n_layer=3, n_head=H, d_model=D * H), pe)(torch.randint(0, 256, (1, 20)))
    assert len(calls) == 1 and calls[0]["scale"] == 8.0 and calls[0]["seq_len"] == 20


def test_rope_scaling_decorator_needs_a_scale() -> None:
    with pytest.raises(TypeError, match="scale"):
        rope_scaling("no_scale_test_only")(lambda *, head_dim, base, train_len, seq_len=None, device=None: None)
    assert "no_scale_test_only" not in ROPE_SCALINGS


def test_longrope_is_the_only_rotation_subclass_here() -> None:
    assert {sc.rotation for sc in ROPE_SCALINGS.values()} == {ScaledRoPE, LongRoPE}
    assert hyperparameters("longrope")["n_hat"] == 0


# ---------------------------------------------------------------------------------------------- coverage
# Scalings whose frequencies and attention factor are compared with transformers' ROPE_INIT_FUNCTIONS.
HF_ROPE_TYPE: dict[str, tuple[str, dict[str, Any]]] = {
    "pi": ("linear", {}),
    "dynamic_ntk": ("dynamic", {}),
    "yarn": ("yarn", {}),
    "ntk_by_parts": ("yarn", {"attention_factor": 1.0}),  # YaRN without its temperature
    "llama3_scaling": ("llama3", {"low_freq_factor": 1.0, "high_freq_factor": 4.0}),
    "longrope": ("longrope", {}),
}


@pytest.mark.parametrize("scaling_id", sorted(ROPE_SCALINGS))
def test_every_scaling_is_tested(scaling_id: str) -> None:
    assert scaling_id in HF_ROPE_TYPE or scaling_id in FORMULA_TESTED, (
        f"RoPE scaling {scaling_id!r} has neither an HF parity case (HF_ROPE_TYPE) nor a @formula_test")


def _hf_case(scaling_id: str, d: int, ctx: int, s: float, base: float) -> tuple[Any, dict[str, Any]]:
    from transformers import LlamaConfig

    rope_type, extra = HF_ROPE_TYPE[scaling_id]
    params: dict[str, Any] = {"rope_type": rope_type, "rope_theta": base, "factor": s, **extra}
    ours: dict[str, Any] = {"scale": s, "base": base}
    max_pos = ctx if rope_type == "dynamic" else int(ctx * s)  # HF's dynamic NTK reads L from max_pos
    if rope_type in ("yarn", "llama3", "longrope"):
        params["original_max_position_embeddings"] = ctx
    if rope_type == "longrope":
        g = torch.Generator().manual_seed(d)
        long = sorted((1 + (s - 1) * torch.rand(d // 2, generator=g)).tolist())
        short = (1 + 0.1 * torch.rand(d // 2, generator=g)).tolist()
        params |= {"long_factor": long, "short_factor": short}
        ours |= {"long_factors": long, "short_factors": short}
    cfg = LlamaConfig(hidden_size=d * H, num_attention_heads=H, head_dim=d, max_position_embeddings=max_pos,
                      rope_parameters=params)
    return cfg, ours


@pytest.mark.parametrize(("d", "ctx", "s", "base"), [(32, 64, 4.0, 10000.0), (128, 4096, 16.0, 10000.0),
                                                    (64, 2048, 8.0, 500000.0)])
@pytest.mark.parametrize("scaling_id", sorted(HF_ROPE_TYPE))
def test_matches_transformers(scaling_id: str, d: int, ctx: int, s: float, base: float) -> None:
    pytest.importorskip("transformers")
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    cfg, ours = _hf_case(scaling_id, d, ctx, s, base)
    pe = build(scaling_id, head_dim=d, num_heads=H, train_len=ctx, **ours)
    for seq_len in (ctx // 2, ctx, ctx + 1, 3 * ctx):
        inv, attn = ROPE_INIT_FUNCTIONS[HF_ROPE_TYPE[scaling_id][0]](cfg, "cpu", seq_len=seq_len)
        torch.testing.assert_close(pe.inv_freq(seq_len), inv.float(), rtol=1e-5, atol=0)
        assert pe.attention_scaling(seq_len) == pytest.approx(float(attn), rel=1e-12)


def test_default_matches_transformers() -> None:
    pytest.importorskip("transformers")
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    for base, d in ((10000.0, 32), (500000.0, 128)):
        cfg = LlamaConfig(hidden_size=d * H, num_attention_heads=H, head_dim=d,
                          rope_parameters={"rope_type": "default", "rope_theta": base})
        inv, attn = LlamaRotaryEmbedding.compute_default_rope_parameters(cfg)
        pe = build("rope", head_dim=d, num_heads=H, train_len=64, base=base)
        torch.testing.assert_close(pe.inv_freq(64), inv.float(), rtol=1e-6, atol=0)
        assert pe.attention_scaling(64) == attn == 1.0


# ---------------------------------------------------------------------------------------------- formulas
@pytest.mark.parametrize("pe_id", ["pi", "ntk_aware", "ntk_by_parts", "yarn", "llama3_scaling", "longrope",
                                   "longrope2"])
def test_scale_one_is_rope(pe_id: str) -> None:
    kw: dict = {"scale": 1.0}
    if pe_id == "longrope":
        kw |= {"long_factors": [1.0] * (D // 2), "short_factors": [1.0] * (D // 2)}
    t = 2 * L  # beyond the training length, so the long list and dynamic parts are exercised
    torch.testing.assert_close(_logits(pe_id, t, **kw), _logits("rope", t))


@formula_test("dynamic_ntk")
def test_dynamic_ntk_is_rope_up_to_train_len_only() -> None:
    torch.testing.assert_close(_logits("dynamic_ntk", L), _logits("rope", L))
    assert not torch.allclose(_logits("dynamic_ntk", L + 8)[..., :8, :8], _logits("rope", L + 8)[..., :8, :8])
    pe = build("dynamic_ntk", head_dim=D, num_heads=H, train_len=L, scale=4.0)
    assert not pe.relative and spec("dynamic_ntk").scale_policy == "fixed"
    torch.testing.assert_close(pe.inv_freq(L), default_inv_freq(D, 10000.0))
    l = 3 * L  # b' = b·((s·l/L) − (s − 1))^(d/(d−2))
    torch.testing.assert_close(pe.inv_freq(l), default_inv_freq(D, 10000.0 * (4.0 * 3 - 3) ** (D / (D - 2))))


@formula_test("ntk_aware")
def test_ntk_aware_first_unchanged_last_divided_by_s() -> None:
    for s in (2.0, 8.0):
        inv = build("ntk_aware", head_dim=D, num_heads=H, train_len=L, scale=s).inv_freq(L)
        base = default_inv_freq(D, 10000.0)
        assert inv[0].item() == pytest.approx(base[0].item(), rel=1e-6)
        assert inv[-1].item() == pytest.approx(base[-1].item() / s, rel=1e-5)


@formula_test("ntk_by_parts")
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


@formula_test("yarn")
@pytest.mark.parametrize("s", [2.0, 16.0])
def test_yarn_attention_factor_applied_once(s: float) -> None:
    pe = build("yarn", head_dim=D, num_heads=H, train_len=L, scale=s)
    rope = build("rope", head_dim=D, num_heads=H, train_len=L)
    q = torch.randn(1, H, 5, D)
    pos = torch.arange(5, dtype=torch.float32) * 7
    a = 0.1 * math.log(s) + 1
    # q = k at the same position: the rotation cancels, only the factor on cos/sin remains
    diag = torch.diagonal(pe.logits(q, q, pe.context(pos)), dim1=-2, dim2=-1)
    ref = torch.diagonal(rope.logits(q, q, rope.context(pos)), dim1=-2, dim2=-1)
    torch.testing.assert_close(diag / ref, torch.full_like(diag, a * a))
    # the model's fast path (rotate, then SDPA's own 1/√d) sees the same factor
    qr, kr = pe.rotate(q, q, pe.context(pos))
    torch.testing.assert_close(torch.diagonal(qr @ kr.transpose(-2, -1), dim1=-2, dim2=-1) / math.sqrt(D), diag)


@pytest.mark.parametrize("pe_id", sorted(i for i in ROPE_SCALINGS if spec(i).relative))
def test_relative_scalings_are_shift_invariant(pe_id: str) -> None:
    torch.testing.assert_close(_logits(pe_id, 12), _logits(pe_id, 12, offset=29.0), atol=2e-4, rtol=2e-4)


@formula_test("truncated_basis")
def test_truncated_basis_bands() -> None:
    pe = build("truncated_basis", head_dim=D, num_heads=H, train_len=L)
    base, inv = default_inv_freq(D, 10000.0), pe.inv_freq(L)
    b, a, rho = 2 * math.pi / L, 2 * math.pi / L / 8, 2 * math.pi / L / 16
    assert torch.all(inv[base >= b] == base[base >= b])
    mid = (base > a) & (base < b)
    assert mid.any() and torch.allclose(inv[mid], torch.full_like(inv[mid], rho))
    assert (base <= a).any() and torch.all(inv[base <= a] == 0)
    scaled = build("truncated_basis", head_dim=D, num_heads=H, train_len=L, scale=2.0).inv_freq(L)
    assert torch.all(scaled[base / 2 >= b] == base[base / 2 >= b] / 2)  # linear scaling comes first


@formula_test("llama3_scaling")
def test_llama3_bands() -> None:
    pe = build("llama3_scaling", head_dim=D, num_heads=H, train_len=L, scale=8.0)
    base, inv = default_inv_freq(D, 10000.0), pe.inv_freq(L)
    wl = 2 * math.pi / base
    hi, lo = wl < L / 4, wl > L
    assert hi.any() and lo.any()
    torch.testing.assert_close(inv[hi], base[hi])
    torch.testing.assert_close(inv[lo], base[lo] / 8)


@formula_test("longrope")
def test_longrope_short_long_and_n_hat() -> None:
    long = [1.0 + i for i in range(D // 2)]
    short = [1.0] * (D // 2)
    pe = build("longrope", head_dim=D, num_heads=H, train_len=L, scale=4.0, long_factors=long, short_factors=short)
    base = default_inv_freq(D, 10000.0)
    torch.testing.assert_close(pe.inv_freq(L), base)
    torch.testing.assert_close(pe.inv_freq(L + 1), base / torch.tensor(long))
    assert pe.attention_scaling(L) == pytest.approx(math.sqrt(1 + math.log(4) / math.log(L)))
    nh = build("longrope", head_dim=D, num_heads=H, train_len=L, scale=4.0, long_factors=long, n_hat=4)
    assert isinstance(nh, LongRoPE) and nh.n_hat == 4
    pos = torch.arange(2 * L, dtype=torch.float32)
    ctx = nh.context(pos)
    cos, sin = ctx.get("cos_q"), ctx.get("sin_q")
    a = nh.attention_scaling(2 * L)
    ang_plain = pos[:4, None] * base
    ang_scaled = pos[4:, None] * base / torch.tensor(long)
    torch.testing.assert_close(cos[:4], ang_plain.cos() * a)
    torch.testing.assert_close(sin[4:], ang_scaled.sin() * a)
    torch.testing.assert_close(nh.cos_sin(pos, 2 * L)[0], cos)


@formula_test("longrope2")
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


@pytest.mark.parametrize(("pe_id", "kw", "name"), [
    ("pi", {"scale": 0.5}, "scale"),
    ("pi", {"scale": "8"}, "scale"),
    ("yarn", {"base": -1.0}, "base"),
    ("yarn", {"beta_slow": 40.0}, "beta_slow"),
    ("ntk_by_parts", {"beta_fast": "x"}, "beta_fast"),
    ("llama3_scaling", {"high_freq_factor": 0.5}, "high_freq_factor"),
    ("longrope", {"long_factors": [1.0, 2.0]}, "long_factors"),
    ("longrope", {"long_factors": 3}, "long_factors"),
    ("longrope", {"n_hat": -1}, "n_hat"),
    ("longrope2", {"critical_pair": 99}, "critical_pair"),
    ("truncated_basis", {"a_cut": 1.0, "b_cut": 0.5}, "a_cut"),
])
def test_invalid_hyperparameters_name_the_parameter(pe_id: str, kw: dict, name: str) -> None:
    with pytest.raises(ValueError, match=f"{pe_id}: hyperparameter '{name}'"):
        build(pe_id, head_dim=D, num_heads=H, train_len=L, **kw)


# ---------------------------------------------------------------------------------------------- in the model
@pytest.mark.parametrize("pe_id", [i for i in available() if issubclass(spec(i).cls, RoPE)])
def test_end_to_end_in_the_model(pe_id: str) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=3, n_head=2, d_model=32)
    pe = build(pe_id, head_dim=cfg.head_dim, num_heads=cfg.n_head, train_len=64)
    assert isinstance(pe, RoPE)
    model = Transformer(cfg, pe)
    for shape in ((2, 64), (1, 2048)):
        model.train(shape[1] == 64)
        tokens = torch.randint(0, 256, shape)
        logits, loss = model(tokens, targets=tokens)
        assert logits.shape == (*shape, 256) and torch.isfinite(logits).all()
        assert loss is not None
        loss.backward()
        assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
        model.zero_grad()
