"""Parity of the RoPE family with independent implementations.

* HF transformers (5.x API: a config with ``rope_parameters``): full logits through HF's rotate-half
  ``LlamaRotaryEmbedding`` + ``apply_rotary_pos_emb`` after the fixed permutation of head dims. (The
  frequencies and attention factors of every scaling are compared with ``ROPE_INIT_FUNCTIONS`` in
  ``test_rope.py``, which also requires each scaling to have such a case or a formula test.)
* rotary-embedding-torch's ``RotaryEmbedding`` (consecutive pairs, like posenc): RoPE, xPos, its NTK
  ``theta_rescale_factor`` (ntk_aware) and ``interpolate_factor`` (pi), compared on the rotated q and k.
"""

from __future__ import annotations

import math

import pytest
import torch

from posenc.pe.base import build
from posenc.pe.rope import default_inv_freq

transformers = pytest.importorskip("transformers")
ret = pytest.importorskip("rotary_embedding_torch")

from transformers import LlamaConfig  # noqa: E402
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb  # noqa: E402

D, H = 32, 2


def hf_config(rope_parameters: dict, *, head_dim: int = D, max_pos: int = 256) -> LlamaConfig:
    return LlamaConfig(hidden_size=head_dim * H, num_attention_heads=H, head_dim=head_dim,
                       max_position_embeddings=max_pos, rope_parameters=rope_parameters)


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
    torch.testing.assert_close(pe.logits(q[..., perm], k[..., perm], pe.context(pos)), ref, atol=1e-4, rtol=1e-4)


def test_rotary_embedding_torch_rope() -> None:
    ref = ret.RotaryEmbedding(dim=D)
    q = torch.randn(2, H, 40, D)
    pe = build("rope", head_dim=D, num_heads=H, train_len=64)
    pos = torch.arange(40, dtype=torch.float32)
    ours, _ = pe.rotate(q, q, pe.context(pos))
    torch.testing.assert_close(ours, ref.rotate_queries_or_keys(q), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("t", [33, 64])
def test_rotary_embedding_torch_xpos(t: int) -> None:
    ref = ret.RotaryEmbedding(dim=D, use_xpos=True, xpos_scale_base=64)
    g = torch.Generator().manual_seed(2)
    q, k = torch.randn(2, H, t, D, generator=g), torch.randn(2, H, t, D, generator=g)
    rq, rk = ref.rotate_queries_and_keys(q, k)
    pe = build("xpos", head_dim=D, num_heads=H, train_len=64, scale_base=64)
    pos = torch.arange(t, dtype=torch.float32)
    oq, ok = pe.rotate(q, k, pe.context(pos))
    torch.testing.assert_close(oq, rq, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ok, rk, atol=1e-5, rtol=1e-5)


def test_rotary_embedding_torch_ntk_and_interpolation() -> None:
    q = torch.randn(1, H, 40, D)
    pos = torch.arange(40, dtype=torch.float32)
    ntk = build("ntk_aware", head_dim=D, num_heads=H, train_len=64, scale=4.0)
    ref = ret.RotaryEmbedding(dim=D, theta_rescale_factor=4.0)
    torch.testing.assert_close(ntk.inv_freq(64), ref.freqs.detach().float(), rtol=1e-5, atol=0)
    ours = ntk.rotate(q, q, ntk.context(pos))[0]
    torch.testing.assert_close(ours, ref.rotate_queries_or_keys(q), atol=1e-5, rtol=1e-5)
    pi = build("pi", head_dim=D, num_heads=H, train_len=64, scale=4.0)
    ref_pi = ret.RotaryEmbedding(dim=D, interpolate_factor=4.0)
    ours = pi.rotate(q, q, pi.context(pos))[0]
    torch.testing.assert_close(ours, ref_pi.rotate_queries_or_keys(q), atol=1e-5, rtol=1e-5)


def test_hf_default_frequencies_equal_posenc_formula() -> None:
    # guards the one formula every parity above relies on
    torch.testing.assert_close(default_inv_freq(8, 10000.0), torch.tensor([1.0, 0.1, 0.01, 0.001]))
