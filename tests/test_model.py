"""The reference model: configuration errors, the mask from positions, the attention plan (one place that picks
the path), PE tensors computed once per forward, float masks kept across forwards without going stale."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

import posenc
from posenc.model import ModelConfig, Transformer, auto_flex
from posenc.pe.base import PositionalEncoding, PositionContext, causal_mask, registered
from posenc.pe.bias import ALiBi, BiasPE


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"n_layer": 0}, "n_layer"), ({"d_model": 100, "n_head": 3}, "d_model"), ({"dropout": 1.5}, "dropout"),
     ({"attn": "flash"}, "attn"), ({"explicit_chunk_mb": 0}, "explicit_chunk_mb"),
     ({"attn": "flex", "dropout": 0.1}, "dropout"), ({"n_head": True}, "n_head")],
)
def test_bad_config_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        ModelConfig(**kwargs)


def test_pe_geometry_must_match_model() -> None:
    pe = posenc.build("nope", head_dim=16, num_heads=2, train_len=8)
    with pytest.raises(ValueError, match="head_dim"):
        Transformer(ModelConfig(d_model=64, n_head=4), pe)


def test_positions_shape_checked() -> None:
    m = Transformer(ModelConfig(d_model=32, n_head=2, n_layer=1), posenc.build("nope", head_dim=16, num_heads=2,
                                                                                 train_len=8))
    with pytest.raises(ValueError, match="positions"):
        m(torch.zeros(1, 5, dtype=torch.long), pos=torch.arange(4.0))


def test_causal_mask_comes_from_positions() -> None:
    pos = torch.tensor([0.0, 0.5, 3.0])
    assert causal_mask(pos, pos).tolist() == [[True, False, False], [True, True, False], [True, True, True]]


class CountingBias(BiasPE):
    id = "counting_bias_test_only"

    def __init__(self, **kw: int) -> None:
        super().__init__(**kw)
        self.calls = 0

    def compute_bias(self, ctx: PositionContext) -> Tensor:
        self.calls += 1
        return -(ctx.q_pos[:, None] - ctx.k_pos[None, :]).abs().expand(self.num_heads, -1, -1)


def _model(pe_id: str, **cfg: object) -> Transformer:
    torch.manual_seed(0)
    pe = posenc.build(pe_id, head_dim=16, num_heads=2, train_len=8)
    torch.manual_seed(0)
    return Transformer(ModelConfig(d_model=32, n_head=2, n_layer=3, **cfg), pe)  # type: ignore[arg-type]


@pytest.mark.parametrize("attn", ["auto", "explicit"])
def test_pe_tensors_are_computed_once_per_forward(attn: str) -> None:
    pe = CountingBias(head_dim=16, num_heads=2, train_len=8)
    m = Transformer(ModelConfig(d_model=32, n_head=2, n_layer=4, attn=attn), pe)
    m(torch.randint(0, 256, (2, 10)))
    assert pe.calls == 1
    m(torch.randint(0, 256, (2, 10)))
    assert pe.calls == 2  # a new forward recomputes (parameters may have changed)


def test_rope_cos_sin_computed_once_per_forward(monkeypatch: pytest.MonkeyPatch) -> None:
    from posenc.pe import rope

    calls = []
    real = rope.rope_angles
    monkeypatch.setattr(rope, "rope_angles", lambda *a: calls.append(1) or real(*a))
    pe = posenc.build("rope", head_dim=16, num_heads=2, train_len=8)
    Transformer(ModelConfig(d_model=32, n_head=2, n_layer=3), pe)(torch.randint(0, 256, (1, 12)))
    assert len(calls) == 1


def test_explicit_and_sdpa_paths_agree_with_a_bias() -> None:
    tokens = torch.randint(0, 256, (2, 12))
    outs = []
    with registered(CountingBias):
        for attn in ("sdpa", "explicit"):
            torch.manual_seed(0)
            pe = posenc.build(CountingBias.id, head_dim=16, num_heads=2, train_len=8)
            torch.manual_seed(0)
            outs.append(Transformer(ModelConfig(d_model=32, n_head=2, n_layer=2, attn=attn), pe)(tokens)[0])
    assert CountingBias.id not in posenc.available()
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------- the plan
def _plan_kinds(m: Transformer, tokens: Tensor, pos: Tensor | None = None) -> list[str]:
    ctx = m.context(tokens, pos)
    return [p.kind for p in m.plan(ctx, tokens.size(0))]


def test_bias_free_encodings_use_is_causal_without_a_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict] = []
    real = F.scaled_dot_product_attention

    def spy(q: Tensor, k: Tensor, v: Tensor, **kw: object) -> Tensor:
        seen.append(kw)
        return real(q, k, v, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    for pe_id in ("nope", "rope", "yarn", "sinusoidal"):
        seen.clear()
        _model(pe_id).eval()(torch.randint(0, 256, (1, 16)))
        assert len(seen) == 3 and all(kw.get("is_causal") and kw.get("attn_mask") is None for kw in seen), pe_id


def test_plan_per_kind_of_encoding() -> None:
    tokens = torch.randint(0, 256, (2, 16))
    assert _plan_kinds(_model("rope"), tokens) == ["causal"] * 3
    assert _plan_kinds(_model("alibi"), tokens) == ["mask"] * 3
    assert _plan_kinds(_model("cope"), tokens) == ["explicit"] * 3
    assert _plan_kinds(_model("rope", attn="explicit"), tokens) == ["explicit"] * 3
    assert _plan_kinds(_model("rope", attn="flex"), tokens) == ["flex"] * 3
    assert _plan_kinds(_model("alibi"), tokens) == ["mask"] * 3  # flex only on CUDA under "auto"
    # positions not in one increasing order (or given): the mask comes from the positions
    assert _plan_kinds(_model("rope"), tokens, pos=torch.arange(16.0).flip(0)) == ["mask"] * 3
    assert _plan_kinds(_model("rope"), tokens, pos=torch.arange(16.0) * 3) == ["causal"] * 3


@pytest.mark.parametrize(("device", "mod", "dropout", "grad", "want"), [
    ("cuda", True, False, True, True),  # training a bias PE on a GPU: the compiled kernel pays
    ("cuda", True, False, False, False),  # evaluation: one forward per shape, the mask path instead of a compile
    ("cuda", False, False, True, False),  # no in-kernel bias
    ("cuda", True, True, True, False),  # FlexAttention has no attention dropout
    ("cpu", True, False, True, False),  # no FlexAttention backward on CPU
])
def test_auto_takes_flex_only_to_train_a_bias_pe_on_cuda(device: str, mod: bool, dropout: bool, grad: bool,
                                                          want: bool) -> None:
    assert auto_flex(device, mod, dropout, grad) is want


def test_explicit_path_chunks_only_without_autograd() -> None:
    m = _model("cope", explicit_chunk_mb=2 * 2 * 64 * 4 * 5 / 2**20)  # five rows of (B=2, H=2, S=64) logits
    tokens = torch.randint(0, 256, (2, 64))
    assert m.plan(m.context(tokens), 2)[0].chunk is None  # autograd: whole
    with torch.no_grad():
        assert m.plan(m.context(tokens), 2)[0].chunk == 5
        out = m.eval()(tokens)[0]
    torch.testing.assert_close(out, _model("cope", explicit_chunk_mb=1e6).eval()(tokens)[0].detach(),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pe_id", ["alibi", "t5_bias", "bipe", "irope"])
def test_mask_path_in_query_blocks_matches_explicit(pe_id: str) -> None:
    kw = {"attention_chunk": 100, "nope_every": 2} if pe_id == "irope" else {}
    models = []
    for attn in ("sdpa", "explicit"):
        torch.manual_seed(0)
        pe = posenc.build(pe_id, head_dim=16, num_heads=2, train_len=8, **kw)
        torch.manual_seed(0)
        models.append(Transformer(ModelConfig(d_model=32, n_head=2, n_layer=2, attn=attn), pe).eval())
    tokens = torch.randint(0, 256, (2, 700))
    tokens[:, ::9] = ord(".")
    plan = models[0].plan(models[0].context(tokens), 2)[0]
    assert plan.kind == "mask" and [(a, b, s) for a, b, s, _ in plan.masks] == [(0, 350, 350), (350, 700, 700)]
    with torch.no_grad():
        torch.testing.assert_close(models[0](tokens)[0], models[1](tokens)[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("last", [1, 200, 351, 700])
def test_last_rows_across_the_mask_paths_query_blocks(last: int) -> None:
    """``last`` rows that start inside the second query block, at its start, or cover both blocks."""
    torch.manual_seed(0)
    m = Transformer(ModelConfig(d_model=32, n_head=2, n_layer=2, attn="sdpa"),
                    posenc.build("alibi", head_dim=16, num_heads=2, train_len=8)).eval()
    tokens = torch.randint(0, 256, (2, 700))
    with torch.no_grad():
        full, _ = m(tokens)
        part, _ = m(tokens, last=last)
    assert part.shape == (2, last, 256)
    torch.testing.assert_close(part, full[:, 700 - last:], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("bad", [0, -1, 9, 2.0, True, "3"])
def test_bad_last_is_named(bad: object) -> None:
    m = _model("rope").eval()
    with pytest.raises(ValueError, match="'last' must be an int in 1..8"):
        m(torch.randint(0, 256, (1, 8)), last=bad)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- static masks
def test_alibi_mask_is_kept_across_forwards_and_never_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = ALiBi.compute_bias
    fast, ref = _model("alibi").eval(), _model("alibi", attn="explicit").eval()
    monkeypatch.setattr(ALiBi, "compute_bias", lambda self, ctx: calls.append(self is fast.pe) or real(self, ctx))
    long = torch.randint(0, 256, (2, 24))
    tokens = long[:, :16]
    with torch.no_grad():
        a = fast(tokens)[0]
        assert calls == [True] and len(fast._static_masks) == 1
        torch.testing.assert_close(fast(tokens)[0], a)
        assert calls == [True]  # the float mask of the first forward is reused; the bias is not rebuilt
        for pos in (torch.arange(16.0) * 2, torch.arange(16.0) + 3, torch.arange(16.0).flip(0)):
            # other positions: built from them, never read from the cache
            torch.testing.assert_close(fast(tokens, pos=pos)[0], ref(tokens, pos=pos)[0], rtol=1e-5, atol=1e-5)
        n = len(calls)
        for T in (8, 24, 16):  # another length: another key
            torch.testing.assert_close(fast(long[:, :T])[0], ref(long[:, :T])[0], rtol=1e-5, atol=1e-5)
        assert sum(calls[n:]) == 2  # 16 was cached
        with torch.autocast("cpu", dtype=torch.bfloat16):  # another working dtype: another key
            fast(tokens)
        assert any(key[1] == torch.bfloat16 for key in fast._static_masks)
    assert len(fast._static_masks) <= 4


def test_flex_block_mask_is_kept_at_plain_positions_only() -> None:
    m = _model("alibi", attn="flex").eval()
    tokens = torch.randint(0, 256, (1, 12))
    first = m.plan(m.context(tokens), 1)[0].block_mask
    assert m.plan(m.context(tokens), 1)[0].block_mask is first and len(m._block_masks) == 1
    assert m.plan(m.context(tokens, pos=torch.arange(12.0) * 2), 1)[0].block_mask is not first


def test_learned_biases_are_never_kept_across_forwards() -> None:
    m = _model("t5_bias").eval()
    tokens = torch.randint(0, 256, (1, 12))
    with torch.no_grad():
        a = m(tokens)[0]
        m.pe.table.add_(1.0)
        b = m(tokens)[0]
    assert not m._static_masks and not torch.allclose(a, b)


def test_wrappers_follow_their_inner_pe() -> None:
    assert posenc.build("randomized", head_dim=16, num_heads=2, train_len=8, inner="alibi").static_bias
    ssmax = posenc.build("ssmax", head_dim=16, num_heads=2, train_len=8, inner="alibi")
    assert not ssmax.static_bias  # its bias is scaled by the learned s


def test_a_pe_defined_outside_the_package_plugs_in() -> None:
    class HalfNoPE(PositionalEncoding):
        id = "half_nope_test_only"

        def rotate(self, q: Tensor, k: Tensor, ctx: PositionContext, layer: int = 0) -> tuple[Tensor, Tensor]:
            return q * 0.5, k

    with registered(HalfNoPE):
        m = Transformer(ModelConfig(d_model=32, n_head=2, n_layer=1),
                        posenc.build("half_nope_test_only", head_dim=16, num_heads=2, train_len=8))
        assert torch.isfinite(m(torch.randint(0, 256, (1, 9)))[0]).all()
