"""Parity of the RoPE family with independent implementations.

* HF transformers ``modeling_rope_utils.ROPE_INIT_FUNCTIONS`` (5.x API: a config with ``rope_parameters``):
  default, linear (pi), dynamic (dynamic_ntk), yarn, yarn with attention_factor = 1 (ntk_by_parts), llama3,
  longrope; compared on inv_freq and attention factor, and on full logits through HF's rotate-half
  ``LlamaRotaryEmbedding`` + ``apply_rotary_pos_emb`` after the fixed permutation of head dims.
* rotary-embedding-torch's ``RotaryEmbedding`` (consecutive pairs, like posenc): RoPE, xPos, its NTK
  ``theta_rescale_factor`` (ntk_aware) and ``interpolate_factor`` (pi), compared on the rotated q and k.
"""

from __future__ import annotations

import math

import pytest
import torch

from posenc.pe.base import build
from posenc.pe.rotary import default_inv_freq

transformers = pytest.importorskip("transformers")
ret = pytest.importorskip("rotary_embedding_torch")

from transformers import LlamaConfig  # noqa: E402
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS  # noqa: E402
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb  # noqa: E402

D, H = 32, 2


def hf_config(rope_parameters: dict, *, head_dim: int = D, max_pos: int = 256) -> LlamaConfig:
    return LlamaConfig(hidden_size=head_dim * H, num_attention_heads=H, head_dim=head_dim,
                       max_position_embeddings=max_pos, rope_parameters=rope_parameters)


def hf_inv(rope_type: str, cfg: LlamaConfig, seq_len: int | None = None) -> tuple[torch.Tensor, float]:
    inv, attn = ROPE_INIT_FUNCTIONS[rope_type](cfg, "cpu", seq_len=seq_len)
    return inv.float(), float(attn)


def test_default_matches_hf() -> None:
    for base, d in ((10000.0, 32), (500000.0, 128)):
        inv, attn = LlamaRotaryEmbedding.compute_default_rope_parameters(
            hf_config({"rope_type": "default", "rope_theta": base}, head_dim=d))
        pe = build("rope", head_dim=d, num_heads=H, train_len=64, base=base)
        torch.testing.assert_close(pe.inv_freq(64), inv.float(), rtol=1e-6, atol=0)
        assert pe.attention_scaling(64) == attn == 1.0


@pytest.mark.parametrize("s", [2.0, 8.0])
def test_linear_matches_pi(s: float) -> None:
    inv, attn = hf_inv("linear", hf_config({"rope_type": "linear", "rope_theta": 10000.0, "factor": s}))
    pe = build("pi", head_dim=D, num_heads=H, train_len=64, scale=s)
    torch.testing.assert_close(pe.inv_freq(64), inv, rtol=1e-6, atol=0)
    assert pe.attention_scaling(64) == attn


@pytest.mark.parametrize("seq_len", [10, 64, 65, 200, 1000])
def test_dynamic_matches_dynamic_ntk(seq_len: int) -> None:
    cfg = hf_config({"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 4.0}, max_pos=64)
    inv, attn = hf_inv("dynamic", cfg, seq_len=seq_len)
    pe = build("dynamic_ntk", head_dim=D, num_heads=H, train_len=64, scale=4.0)
    torch.testing.assert_close(pe.inv_freq(seq_len), inv, rtol=1e-5, atol=0)
    assert pe.attention_scaling(seq_len) == attn


@pytest.mark.parametrize(("d", "ctx", "s", "base"), [(32, 64, 4.0, 10000.0), (128, 4096, 16.0, 10000.0),
                                                    (64, 2048, 32.0, 500000.0)])
def test_yarn_matches_hf(d: int, ctx: int, s: float, base: float) -> None:
    cfg = hf_config({"rope_type": "yarn", "rope_theta": base, "factor": s,
                     "original_max_position_embeddings": ctx}, head_dim=d, max_pos=int(ctx * s))
    inv, attn = hf_inv("yarn", cfg)
    pe = build("yarn", head_dim=d, num_heads=H, train_len=ctx, scale=s, base=base)
    torch.testing.assert_close(pe.inv_freq(ctx), inv, rtol=1e-5, atol=0)
    assert pe.attention_scaling(ctx) == pytest.approx(attn, rel=1e-12)
    assert attn == pytest.approx(0.1 * math.log(s) + 1)


def test_yarn_without_attention_factor_matches_ntk_by_parts() -> None:
    cfg = hf_config({"rope_type": "yarn", "rope_theta": 10000.0, "factor": 8.0, "attention_factor": 1.0,
                     "original_max_position_embeddings": 512}, head_dim=64, max_pos=4096)
    inv, attn = hf_inv("yarn", cfg)
    pe = build("ntk_by_parts", head_dim=64, num_heads=H, train_len=512, scale=8.0)
    torch.testing.assert_close(pe.inv_freq(512), inv, rtol=1e-5, atol=0)
    assert pe.attention_scaling(512) == attn == 1.0


@pytest.mark.parametrize(("d", "ctx", "s", "base"), [(32, 64, 8.0, 10000.0), (128, 8192, 8.0, 500000.0)])
def test_llama3_matches_hf(d: int, ctx: int, s: float, base: float) -> None:
    params = {"rope_type": "llama3", "rope_theta": base, "factor": s, "low_freq_factor": 1.0,
              "high_freq_factor": 4.0, "original_max_position_embeddings": ctx}
    cfg = hf_config(params, head_dim=d, max_pos=int(ctx * s))
    inv, attn = hf_inv("llama3", cfg)
    pe = build("llama3_scaling", head_dim=d, num_heads=H, train_len=ctx, scale=s, base=base)
    torch.testing.assert_close(pe.inv_freq(ctx), inv, rtol=1e-5, atol=0)
    assert pe.attention_scaling(ctx) == attn


@pytest.mark.parametrize("seq_len", [32, 64, 65, 300])
def test_longrope_matches_hf(seq_len: int) -> None:
    g = torch.Generator().manual_seed(0)
    long = sorted((1 + 4 * torch.rand(D // 2, generator=g)).tolist())
    short = (1 + 0.1 * torch.rand(D // 2, generator=g)).tolist()
    cfg = hf_config({"rope_type": "longrope", "rope_theta": 10000.0, "factor": 4.0, "long_factor": long,
                     "short_factor": short, "original_max_position_embeddings": 64}, max_pos=256)
    inv, attn = hf_inv("longrope", cfg, seq_len=seq_len)
    pe = build("longrope", head_dim=D, num_heads=H, train_len=64, scale=4.0, long_factors=long, short_factors=short)
    torch.testing.assert_close(pe.inv_freq(seq_len), inv, rtol=1e-5, atol=0)
    assert pe.attention_scaling(seq_len) == pytest.approx(attn, rel=1e-12)


def _permutation(d: int) -> torch.Tensor:
    """posenc's consecutive index 2i <- rotate-half index i, 2i + 1 <- i + d/2."""
    return torch.stack([torch.arange(d // 2), torch.arange(d // 2) + d // 2], -1).flatten()


@pytest.mark.parametrize(("rope_type", "pe_id", "params"), [
    ("default", "rope", {}),
    ("linear", "pi", {"factor": 4.0}),
    ("yarn", "yarn", {"factor": 4.0, "original_max_position_embeddings": 32}),
    ("llama3", "llama3_scaling", {"factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                  "original_max_position_embeddings": 32}),
])
def test_full_logits_match_hf_rotate_half(rope_type: str, pe_id: str, params: dict) -> None:
    cfg = hf_config({"rope_type": rope_type, "rope_theta": 10000.0, **params}, max_pos=128)
    rot = LlamaRotaryEmbedding(cfg)
    t = 48
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(1, H, t, D, generator=g), torch.randn(1, H, t, D, generator=g)
    pos_ids = torch.arange(t)[None]
    cos, sin = rot(q, pos_ids)
    qh, kh = apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1)
    ref = qh @ kh.transpose(-2, -1) / math.sqrt(D)
    kw = {"scale": params["factor"]} if "factor" in params else {}
    pe = build(pe_id, head_dim=D, num_heads=H, train_len=32, **kw)
    perm = _permutation(D)
    pos = torch.arange(t, dtype=torch.float32)
    torch.testing.assert_close(pe.logits(q[..., perm], k[..., perm], pos, pos), ref, atol=1e-4, rtol=1e-4)


def test_rotary_embedding_torch_rope() -> None:
    ref = ret.RotaryEmbedding(dim=D)
    q = torch.randn(2, H, 40, D)
    pe = build("rope", head_dim=D, num_heads=H, train_len=64)
    pos = torch.arange(40, dtype=torch.float32)
    ours, _ = pe.rotate(q, q, pos, pos)
    torch.testing.assert_close(ours, ref.rotate_queries_or_keys(q), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("t", [33, 64])
def test_rotary_embedding_torch_xpos(t: int) -> None:
    ref = ret.RotaryEmbedding(dim=D, use_xpos=True, xpos_scale_base=64)
    g = torch.Generator().manual_seed(2)
    q, k = torch.randn(2, H, t, D, generator=g), torch.randn(2, H, t, D, generator=g)
    rq, rk = ref.rotate_queries_and_keys(q, k)
    pe = build("xpos", head_dim=D, num_heads=H, train_len=64, scale_base=64)
    pos = torch.arange(t, dtype=torch.float32)
    oq, ok = pe.rotate(q, k, pos, pos)
    torch.testing.assert_close(oq, rq, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ok, rk, atol=1e-5, rtol=1e-5)


def test_rotary_embedding_torch_ntk_and_interpolation() -> None:
    q = torch.randn(1, H, 40, D)
    pos = torch.arange(40, dtype=torch.float32)
    ntk = build("ntk_aware", head_dim=D, num_heads=H, train_len=64, scale=4.0)
    ref = ret.RotaryEmbedding(dim=D, theta_rescale_factor=4.0)
    torch.testing.assert_close(ntk.inv_freq(64), ref.freqs.detach().float(), rtol=1e-5, atol=0)
    torch.testing.assert_close(ntk.rotate(q, q, pos, pos)[0], ref.rotate_queries_or_keys(q), atol=1e-5, rtol=1e-5)
    pi = build("pi", head_dim=D, num_heads=H, train_len=64, scale=4.0)
    ref_pi = ret.RotaryEmbedding(dim=D, interpolate_factor=4.0)
    torch.testing.assert_close(pi.rotate(q, q, pos, pos)[0], ref_pi.rotate_queries_or_keys(q), atol=1e-5, rtol=1e-5)


def test_hf_default_frequencies_equal_posenc_formula() -> None:
    # guards the one formula every parity above relies on
    torch.testing.assert_close(default_inv_freq(8, 10000.0), torch.tensor([1.0, 0.1, 0.01, 0.001]))
