"""`posenc.hf.apply` on tiny random models of every supported architecture.

* Native parity: for every method transformers implements (:data:`posenc.hf.NATIVE`), the logits of
  ``apply(model, id)`` equal those of the same weights configured with transformers' own rope type
  (``rope_parameters`` from :func:`posenc.hf.to_rope_parameters`), to 1e-5 in float32, on every architecture.
* The posenc attention path (used by attention-changing methods) gives the rotary path's logits.
* Every supported method runs, leaves the weights untouched, and takes the model's base where it should.
* KV-cache decoding equals a full forward where the method allows it; padding; errors name what is supported.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from posenc.hf import ARCHITECTURES, NATIVE, UnsupportedError, apply, supported_methods, to_rope_parameters
from posenc.hf.attention import ATTN_IMPLEMENTATION
from posenc.hf.rotary import PosencRotaryEmbedding, rotary_owner
from posenc.hf.support import inherits_base
from posenc.pe import spec
from posenc.pe.rope import RoPE

from ._tiny import L, logits, same_weights, tiny

ARCHS = list(ARCHITECTURES)

#: Non-default hyperparameters for each native method, so that every field of the mapping is exercised.
NATIVE_HP: dict[str, dict[str, Any]] = {
    "rope": {},
    "pi": {"scale": 4.0},
    "dynamic_ntk": {"scale": 3.0},
    "yarn": {"scale": 4.0, "beta_fast": 16.0, "beta_slow": 2.0},
    "llama3_scaling": {"scale": 4.0, "low_freq_factor": 1.5, "high_freq_factor": 3.0},
    "longrope": {"scale": 4.0, "long_factors": [1.0, 1.3, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5],
                 "short_factors": [1.0, 1.0, 1.1, 1.2, 1.2, 1.3, 1.4, 1.5], "attention_factor": 1.2},
    "p_rope": {"p": 0.5},
}


def rotary(model: torch.nn.Module) -> PosencRotaryEmbedding:
    r = rotary_owner(model).rotary_emb
    assert isinstance(r, PosencRotaryEmbedding)
    return r


def test_every_native_method_has_parity_hyperparameters() -> None:
    assert set(NATIVE_HP) == set(NATIVE)


@pytest.mark.parametrize("arch", ARCHS)
def test_rope_with_the_model_base_is_the_model_itself(arch: str, tokens: torch.Tensor) -> None:
    model = tiny(arch)
    before = copy.deepcopy(model.state_dict())
    ref = logits(model, tokens)
    apply(model, "rope")
    assert rotary(model).pe.base == model.config.rope_parameters["rope_theta"]
    torch.testing.assert_close(logits(model, tokens), ref, rtol=1e-5, atol=1e-5)
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())  # weights untouched
    assert model.config._attn_implementation == "sdpa"  # a rotary method keeps the model's attention


@pytest.mark.parametrize("method", sorted(NATIVE))
@pytest.mark.parametrize("arch", ARCHS)
def test_native_parity(arch: str, method: str, tokens: torch.Tensor) -> None:
    """Same weights, once with transformers' rope type in the config, once with posenc's method applied."""
    hp = NATIVE_HP[method]
    theta = tiny(arch).config.rope_parameters["rope_theta"]
    rp = to_rope_parameters(method, train_len=L, head_dim=16, base=theta, **hp)
    # transformers reads dynamic NTK's original length from max_position_embeddings; llama3 wants it above L.
    hf = tiny(arch, rope_parameters=rp, max_position_embeddings=L if method == "dynamic_ntk" else 4 * L)
    ours = apply(tiny(arch), method, **hp)
    assert same_weights(hf, tiny(arch))
    plain = logits(tiny(arch), tokens)
    lengths = (tokens.size(1), L // 2) if method == "longrope" else (tokens.size(1),)  # long and short factors
    for t in lengths:
        x = tokens[:, :t]
        ref = logits(hf, x)
        torch.testing.assert_close(logits(ours, x), ref, rtol=1e-5, atol=1e-5)
        if method != "rope":
            assert (ref - plain[:, :t]).abs().max() > 1e-2  # the method is active: the test can fail


@pytest.mark.parametrize("arch", ARCHS)
def test_attention_path_gives_the_rotary_path(arch: str, tokens: torch.Tensor) -> None:
    """YaRN through the model's own attention and through the posenc attention function (whole and in query
    chunks): the permutation of head dims, GQA and the masks are right end to end."""
    ref = logits(apply(tiny(arch), "yarn", scale=4.0), tokens)
    whole = apply(tiny(arch), "yarn", scale=4.0, path="attention")
    chunked = apply(tiny(arch), "yarn", scale=4.0, path="attention", chunk_mb=0.002)
    assert whole.config._attn_implementation == ATTN_IMPLEMENTATION
    # Another order of float32 reductions (explicit softmax vs SDPA): equal to rounding, about 1e-5.
    torch.testing.assert_close(logits(whole, tokens), ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(logits(chunked, tokens), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", supported_methods())
def test_every_supported_method_applies(method: str, tokens: torch.Tensor) -> None:
    theta = 50_000.0  # not posenc's default base, so inheriting it is visible
    model = tiny("llama", rope_parameters={"rope_type": "default", "rope_theta": theta})
    ref = logits(model, tokens)
    before = copy.deepcopy(model.state_dict())
    apply(model, method)
    r = rotary(model)
    expected = "sdpa" if r.kind == "rotary" else ATTN_IMPLEMENTATION
    assert model.config._attn_implementation == expected
    out = logits(model, tokens)
    assert torch.isfinite(out).all()
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert set(after) - set(before) <= {k for k in after if k.startswith("model.rotary_emb.pe.")}
    rope = r.pe if isinstance(r.pe, RoPE) else getattr(r.pe, "inner", None)
    if isinstance(rope, RoPE):
        inherits = inherits_base(spec(method)) or (r.pe is not rope and inherits_base(spec(rope.id)))
        assert (rope.base == theta) == inherits, (rope.base, inherits)
    if method != "rope":
        assert not torch.allclose(out, ref)  # past L every method changes something


def test_reapplying_replaces_the_method_and_restores_attention(tokens: torch.Tensor) -> None:
    model = apply(tiny(), "self_extend", group_size=4, neighbor_window=8)
    assert model.config._attn_implementation == ATTN_IMPLEMENTATION
    apply(model, "yarn", scale=4.0)
    assert model.config._attn_implementation == "sdpa"
    assert rotary(model).original_attn_implementation == "sdpa"
    torch.testing.assert_close(logits(model, tokens), logits(apply(tiny(), "yarn", scale=4.0), tokens))


def _greedy(model: torch.nn.Module, x: torch.Tensor, use_cache: bool) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(x, max_new_tokens=4, do_sample=False, use_cache=use_cache, pad_token_id=0)


@pytest.mark.parametrize("method", supported_methods())
def test_cached_decoding_equals_full_forwards(method: str, tokens: torch.Tensor) -> None:
    """Attention methods see unrotated cached keys, so a KV cache is exact; so are rotary methods whose cos/sin
    depend on the position alone (relative). Length-dependent frequencies (dynamic NTK, LongRoPE's switch)
    rotate cached keys with the frequencies of their step, as in transformers."""
    model = apply(tiny(), method)
    if rotary(model).kind == "rotary" and not spec(method).relative:
        pytest.skip(f"{method}: frequencies depend on the current length (cached keys keep their step's)")
    x = tokens[:1, :60]
    assert torch.equal(_greedy(model, x, True), _greedy(model, x, False))


def test_left_padding_on_the_rotary_path(tokens: torch.Tensor) -> None:
    model = apply(tiny(), "yarn", scale=4.0)
    x = tokens[:, :40].clone()
    x[1, :8] = 0
    mask = torch.ones_like(x)
    mask[1, :8] = 0
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    out = logits(model, x, attention_mask=mask, position_ids=pos)
    alone = logits(model, x[1:, 8:])
    torch.testing.assert_close(out[1:, 8:], alone, rtol=1e-5, atol=1e-5)


def test_attention_methods_refuse_rows_with_different_positions(tokens: torch.Tensor) -> None:
    model = apply(tiny(), "rerope")
    pos = torch.stack([torch.arange(40), torch.arange(40) + 3])
    with pytest.raises(ValueError, match="same position_ids in every batch row"):
        logits(model, tokens[:, :40], position_ids=pos)


def test_unsupported_architecture_names_the_supported_ones() -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=64, n_positions=32))
    with pytest.raises(UnsupportedError, match="'gpt2'.*supported: llama, mistral"):
        apply(model, "yarn")


def test_unsupported_method_names_the_supported_ones() -> None:
    with pytest.raises(UnsupportedError, match="'alibi'.*not a RoPE-family.*yarn"):
        apply(tiny(), "alibi")
    with pytest.raises(UnsupportedError, match="'pose'.*position sampler"):
        apply(tiny(), "pose")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"scael": 4.0}, "unknown hyperparameter.*scael"),
    ({"scale": 0.5}, "'scale' must be a number ≥ 1"),
    ({"path": "eager"}, "'path' must be"),
    ({"chunk_mb": 0}, "'chunk_mb' must be"),
])
def test_bad_arguments_are_named(kwargs: dict[str, Any], message: str) -> None:
    model = tiny()
    with pytest.raises(ValueError, match=message):
        apply(model, "yarn", **kwargs)
    assert not isinstance(rotary_owner(model).rotary_emb, PosencRotaryEmbedding)  # nothing was changed


def test_unknown_method_suggests_close_ids() -> None:
    with pytest.raises(ValueError, match="did you mean yarn"):
        apply(tiny(), "yarm")


def test_train_len_defaults_to_the_original_context() -> None:
    rp = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 4.0, "low_freq_factor": 1.0,
          "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
    assert rotary(apply(tiny(rope_parameters=rp, max_position_embeddings=64), "yarn")).pe.train_len == 16
    assert rotary(apply(tiny(), "yarn")).pe.train_len == L
    assert rotary(apply(tiny(), "yarn", train_len=24)).pe.train_len == 24
