"""Properties every registered positional encoding must have (one parametrised test per method)."""

from __future__ import annotations

import pytest
import torch

import posenc
from posenc.model import ModelConfig, Transformer
from posenc.pe.base import PositionalEncoding, get_class

HEAD_DIM, HEADS, TRAIN_LEN = 16, 4, 16
IDS = posenc.available()
# PEs with a table of vectors cannot go past it: the generic properties use a table long enough for
# every test, and test_table_pes_raise_past_their_size checks the default table's error.
TABLE_SIZE = {"learned": "max_len"}


def make(pe_id: str, **hp: object) -> PositionalEncoding:
    torch.manual_seed(0)
    if pe_id in TABLE_SIZE:
        hp = {TABLE_SIZE[pe_id]: 64 * TRAIN_LEN, **hp}
    return posenc.build(pe_id, head_dim=HEAD_DIM, num_heads=HEADS, train_len=TRAIN_LEN, **hp)


def model_for(pe_id: str, attn: str = "sdpa", n_layer: int = 2, **hp: object) -> Transformer:
    pe = make(pe_id, **hp)
    torch.manual_seed(0)
    return Transformer(ModelConfig(n_layer=n_layer, n_head=HEADS, d_model=HEAD_DIM * HEADS, attn=attn), pe).eval()


def test_registry_is_populated_and_keyed_by_class_id() -> None:
    assert {"nope", "rope"} <= set(IDS)
    for pe_id in IDS:
        assert get_class(pe_id).id == pe_id


@pytest.mark.parametrize("pe_id", IDS)
def test_shapes_dtypes_and_devices(pe_id: str) -> None:
    pe = make(pe_id)
    B, T = 2, 24
    pos = pe.positions(T, training=False)
    assert pos.shape == (T,) and pos.dtype == torch.float32
    q, k = torch.randn(B, HEADS, T, HEAD_DIM), torch.randn(B, HEADS, T, HEAD_DIM)
    x = torch.randn(B, T, HEAD_DIM * HEADS)
    with pe.scope(torch.randint(0, 256, (B, T))):
        assert pe.embed(x, pos).shape == x.shape
        qr, kr = pe.rotate(q, k, pos, pos)
        assert qr.shape == q.shape and kr.shape == k.shape and qr.dtype == q.dtype
        att = pe.logits(q, k, pos, pos)
        b = pe.bias(pos, pos)
    assert att.shape == (B, HEADS, T, T) and att.dtype == torch.float32 and att.device == q.device
    if b is not None:
        assert b.shape[-3:] == (HEADS, T, T) and b.dim() in (3, 4)
    tokens = torch.randint(0, 256, (B, T))
    logits, loss = model_for(pe_id)(tokens, targets=tokens)
    assert logits.shape == (B, T, 256) and loss is not None and torch.isfinite(loss)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("pe_id", IDS)
def test_finite_at_32x_train_len(pe_id: str, dtype: torch.dtype) -> None:
    T = 32 * TRAIN_LEN
    m = model_for(pe_id, n_layer=1)
    tokens = torch.randint(0, 256, (1, T))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is torch.bfloat16):
        logits, _ = m(tokens)
    assert torch.isfinite(logits.float()).all()


@pytest.mark.parametrize("pe_id", sorted(TABLE_SIZE))
def test_table_pes_raise_past_their_size(pe_id: str) -> None:
    m = model_for(pe_id, **{TABLE_SIZE[pe_id]: TRAIN_LEN})
    m(torch.randint(0, 256, (1, TRAIN_LEN)))  # within the table: fine
    with pytest.raises(ValueError, match=f"{TABLE_SIZE[pe_id]}={TRAIN_LEN}"):
        m(torch.randint(0, 256, (1, TRAIN_LEN + 1)))


@pytest.mark.parametrize("pe_id", IDS)
def test_causal(pe_id: str) -> None:
    """Changing a future token leaves every earlier output unchanged."""
    m = model_for(pe_id)
    T, t = 20, 13
    a = torch.randint(0, 256, (1, T))
    b = a.clone()
    b[0, t:] = (b[0, t:] + 7) % 256
    with torch.no_grad():
        la, _ = m(a)
        lb, _ = m(b)
    torch.testing.assert_close(la[0, :t], lb[0, :t], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(la[0, t:], lb[0, t:])


RELATIVE = [i for i in IDS if get_class(i).relative]


@pytest.mark.parametrize("pe_id", RELATIVE)
def test_relative_methods_depend_only_on_offsets(pe_id: str) -> None:
    pe = make(pe_id)
    T = 12
    q, k = torch.randn(1, HEADS, T, HEAD_DIM), torch.randn(1, HEADS, T, HEAD_DIM)
    pos = torch.arange(T, dtype=torch.float32)
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    base = pe.logits(q, k, pos, pos)[..., causal]
    for shift in (3.0, 40.0):
        shifted = pe.logits(q, k, pos + shift, pos + shift)[..., causal]
        torch.testing.assert_close(shifted, base, rtol=1e-4, atol=1e-4)


def test_some_methods_are_declared_relative() -> None:
    assert {"rope"} <= set(RELATIVE)


FAST = [i for i in IDS if not get_class(i).overrides_logits()]


@pytest.mark.parametrize("pe_id", FAST)
def test_fast_path_matches_explicit_logits(pe_id: str) -> None:
    """SDPA with the bias as a float mask gives what ``pe.logits`` defines."""
    tokens = torch.randint(0, 256, (2, 24))
    with torch.no_grad():
        fast, _ = model_for(pe_id, "sdpa")(tokens)
        slow, _ = model_for(pe_id, "explicit")(tokens)
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("pe_id", IDS)
def test_training_positions_sorted_unique_in_range(pe_id: str) -> None:
    pe = make(pe_id)
    torch.manual_seed(1)
    for T in (1, 8, TRAIN_LEN):
        pos = pe.positions(T, training=True)
        assert pos.shape == (T,) and pos.dtype == torch.float32
        assert bool((pos >= 0).all()) and bool(torch.isfinite(pos).all())
        assert bool((pos[1:] > pos[:-1]).all()), "positions must be strictly increasing"
    torch.testing.assert_close(pe.positions(10, training=False), torch.arange(10, dtype=torch.float32))


@pytest.mark.parametrize("pe_id", IDS)
def test_invalid_hyperparameter_is_named(pe_id: str) -> None:
    with pytest.raises(ValueError, match="not_a_parameter"):
        make(pe_id, not_a_parameter=1)
    with pytest.raises(ValueError, match="train_len"):
        posenc.build(pe_id, head_dim=HEAD_DIM, num_heads=HEADS, train_len=0)


@pytest.mark.parametrize("pe_id", IDS)
def test_backward_reaches_pe_parameters(pe_id: str) -> None:
    m = model_for(pe_id).train()
    tokens = torch.randint(0, 256, (2, 16))
    _, loss = m(tokens, pos=torch.arange(16, dtype=torch.float32), targets=tokens)
    assert loss is not None
    loss.backward()
    for name, p in m.pe.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), f"no finite gradient for pe.{name}"
