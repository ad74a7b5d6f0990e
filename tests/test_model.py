"""The reference model: configuration errors, the mask from positions, PE tensors computed once per forward."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

import posenc
from posenc.model import ModelConfig, Transformer
from posenc.pe.base import PositionalEncoding, causal_mask


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"n_layer": 0}, "n_layer"), ({"d_model": 100, "n_head": 3}, "d_model"), ({"dropout": 1.5}, "dropout"),
     ({"attn": "flash"}, "attn")],
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


class CountingBias(PositionalEncoding):
    id = "counting_bias_test_only"

    def __init__(self, **kw: int) -> None:
        super().__init__(**kw)
        self.calls = 0

    def bias(self, q_pos: Tensor, k_pos: Tensor, *, layer: int = 0) -> Tensor | None:
        def make() -> Tensor:
            self.calls += 1
            return -(q_pos[:, None] - k_pos[None, :]).abs().expand(self.num_heads, -1, -1)

        return self.shared(("bias", id(q_pos), id(k_pos)), make)


@pytest.mark.parametrize("attn", ["sdpa", "explicit"])
def test_pe_tensors_are_computed_once_per_forward(attn: str) -> None:
    pe = CountingBias(head_dim=16, num_heads=2, train_len=8)
    m = Transformer(ModelConfig(d_model=32, n_head=2, n_layer=4, attn=attn), pe)
    m(torch.randint(0, 256, (2, 10)))
    assert pe.calls == 1
    m(torch.randint(0, 256, (2, 10)))
    assert pe.calls == 2  # a new forward recomputes (parameters may have changed)


def test_rope_cos_sin_computed_once_per_forward(monkeypatch: pytest.MonkeyPatch) -> None:
    from posenc.pe import rotary

    calls = []
    real = rotary.rope_angles
    monkeypatch.setattr(rotary, "rope_angles", lambda *a: calls.append(1) or real(*a))
    pe = posenc.build("rope", head_dim=16, num_heads=2, train_len=8)
    Transformer(ModelConfig(d_model=32, n_head=2, n_layer=3), pe)(torch.randint(0, 256, (1, 12)))
    assert len(calls) == 1


def test_explicit_and_sdpa_paths_agree_with_a_bias() -> None:
    torch.manual_seed(0)
    tokens = torch.randint(0, 256, (2, 12))
    outs = []
    for attn in ("sdpa", "explicit"):
        torch.manual_seed(0)
        pe = CountingBias(head_dim=16, num_heads=2, train_len=8)
        torch.manual_seed(0)
        outs.append(Transformer(ModelConfig(d_model=32, n_head=2, n_layer=2, attn=attn), pe)(tokens)[0])
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-4, atol=1e-4)
