"""New bases (ABF, Code Llama, the RoPE scaling laws), Entropy-ABF and CLEX (posenc.pe.rope_extensions)."""

from __future__ import annotations

import math

import pytest
import torch

from posenc.pe.base import build, spec
from posenc.pe.rope import ROPE_SCALINGS, critical_dimension, default_inv_freq
from posenc.pe.rope_extensions import critical_small_base, extrapolation_limit

D, H, L = 16, 2, 32


def _qk(t: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, H, t, D, generator=g), torch.randn(1, H, t, D, generator=g)


@pytest.mark.parametrize(("pe_id", "base"), [("abf", 500000.0), ("code_llama_base", 1e6)])
def test_base_change_is_rope_with_another_base(pe_id: str, base: float) -> None:
    pe = build(pe_id, head_dim=D, num_heads=H, train_len=L)
    assert spec(pe_id).applies_to == "rope" and spec(pe_id).relative
    torch.testing.assert_close(pe.inv_freq(L), default_inv_freq(D, base))


def test_entropy_abf_query_scaling_skips_first_layers() -> None:
    pe = build("entropy_abf", head_dim=D, num_heads=H, train_len=L, unscaled_layers=1)
    abf = build("abf", head_dim=D, num_heads=H, train_len=L)
    assert pe.bias_per_layer and not pe.relative
    t = 3 * L
    q, k = _qk(t)
    pos = torch.arange(t, dtype=torch.float32)
    ctx, ref = pe.context(pos), abf.logits(q, k, abf.context(pos))
    torch.testing.assert_close(pe.logits(q, k, ctx, 0), ref)
    ratio = pe.logits(q, k, ctx, 1) / ref
    expected = torch.clamp(torch.log(pos + 1) / math.log(L), min=1.0)
    torch.testing.assert_close(ratio[0, 0, :, 0], expected, atol=1e-4, rtol=1e-4)
    assert expected[-1] > 1.0 and expected[L - 2] == 1.0


def test_clex_untrained_is_ntk_and_learns() -> None:
    pe = build("clex", head_dim=D, num_heads=H, train_len=L, scale=4.0)
    assert spec("clex").scale_policy == "fixed" and spec("clex").learnable
    pe.eval()
    torch.testing.assert_close(pe.inv_freq(L), default_inv_freq(D, 10000.0))
    ntk = ROPE_SCALINGS["ntk_aware"].fn(head_dim=D, base=10000.0, train_len=L, scale=3.0)[0]
    torch.testing.assert_close(pe.inv_freq(3 * L), ntk, rtol=1e-4, atol=0)
    pe.train()
    ts = [pe.current_t(L) for _ in range(50)]
    assert min(ts) >= 1.0 and max(ts) <= 4.0 and max(ts) - min(ts) > 1.0
    with torch.no_grad():
        pe.net[2].weight.normal_(std=0.1)
    q, k = _qk(8)
    pos = torch.arange(8, dtype=torch.float32)
    torch.manual_seed(0)
    pe.logits(q, k, pe.context(pos)).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in pe.net.parameters())


def test_clex_draws_one_t_per_forward() -> None:
    pe = build("clex", head_dim=D, num_heads=H, train_len=L, scale=4.0).train()
    with torch.no_grad():
        pe.net[2].weight.normal_(std=0.1)
    torch.manual_seed(0)
    ctx = pe.context(torch.arange(8.0))
    q, k = _qk(8)
    torch.testing.assert_close(pe.logits(q, k, ctx, 0), pe.logits(q, k, ctx, 1))  # all layers share it


def test_scaling_law_helpers() -> None:
    assert critical_dimension(128, 10000.0, 4096) == 92  # LLaMA 2, the paper's example
    assert extrapolation_limit(128, 10000.0, 4096) == pytest.approx(2 * math.pi * 10000 ** (92 / 128))
    assert critical_small_base(128, 4096) > 500  # the paper's small base 500 lies in the no-limit regime
    assert extrapolation_limit(128, 500.0, 4096) == math.inf
    pe = build("rope_base_scaling_laws", head_dim=D, num_heads=H, train_len=L)
    assert pe.base == pytest.approx(critical_small_base(D, L))
    wl_max = 2 * math.pi / pe.inv_freq(L)[-1].item()
    assert wl_max == pytest.approx(L, rel=1e-4)


@pytest.mark.parametrize(("pe_id", "kw", "name"), [
    ("entropy_abf", {"unscaled_layers": -1}, "unscaled_layers"),
    ("clex", {"ode_steps": 0}, "ode_steps"),
    ("clex", {"scale": 0.5}, "scale"),
    ("rope_base_scaling_laws", {"base": 0.5}, "base"),
])
def test_invalid_hyperparameters_name_the_parameter(pe_id: str, kw: dict, name: str) -> None:
    with pytest.raises(ValueError, match=f"'{name}'"):
        build(pe_id, head_dim=D, num_heads=H, train_len=L, **kw)
