"""Properties every registered positional encoding must have (one parametrised test per method)."""

from __future__ import annotations

import math

import pytest
import torch

import posenc
from posenc.model import ModelConfig, Transformer
from posenc.pe.base import PositionalEncoding, spec

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


def model_for(pe_id: str, attn: str = "auto", n_layer: int = 2, chunk_mb: float = 64.0, **hp: object
              ) -> Transformer:
    pe = make(pe_id, **hp)
    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=n_layer, n_head=HEADS, d_model=HEAD_DIM * HEADS, attn=attn, explicit_chunk_mb=chunk_mb)
    return Transformer(cfg, pe).eval()


def tokens_for(batch: int, length: int) -> torch.Tensor:
    t = torch.randint(0, 256, (batch, length))
    t[:, 3::7] = ord(".")  # sentence breaks, so token-dependent methods (BiPE) see several segments
    return t


def test_registry_is_populated_and_keyed_by_id() -> None:
    assert {"nope", "rope"} <= set(IDS)
    for pe_id in IDS:
        assert spec(pe_id).id == pe_id and make(pe_id).id == pe_id
        assert isinstance(make(pe_id), spec(pe_id).cls)


@pytest.mark.parametrize("pe_id", IDS)
def test_shapes_dtypes_and_devices(pe_id: str) -> None:
    pe = make(pe_id)
    B, T = 2, 24
    pos = pe.positions(T, training=False)
    assert pos.shape == (T,) and pos.dtype == torch.float32
    q, k = torch.randn(B, HEADS, T, HEAD_DIM), torch.randn(B, HEADS, T, HEAD_DIM)
    x = torch.randn(B, T, HEAD_DIM * HEADS)
    ctx = pe.context(pos, tokens=tokens_for(B, T))
    assert pe.embed(x, ctx).shape == x.shape
    qr, kr = pe.rotate(q, k, ctx)
    assert qr.shape == q.shape and kr.shape == k.shape and qr.dtype == q.dtype
    att = pe.logits(q, k, ctx)
    b = pe.bias(ctx)
    assert att.shape == (B, HEADS, T, T) and att.dtype == torch.float32 and att.device == q.device
    if b is not None:
        assert b.shape[-3:] == (HEADS, T, T) and b.dim() in (3, 4)
    tokens = tokens_for(B, T)
    logits, loss = model_for(pe_id)(tokens, targets=tokens)
    assert logits.shape == (B, T, 256) and loss is not None and torch.isfinite(loss)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("pe_id", IDS)
def test_finite_at_32x_train_len(pe_id: str, dtype: torch.dtype) -> None:
    T = 32 * TRAIN_LEN
    m = model_for(pe_id, n_layer=1)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is torch.bfloat16):
        logits, _ = m(tokens_for(1, T))
    assert torch.isfinite(logits.float()).all()


@pytest.mark.parametrize("pe_id", IDS)
def test_pure_bf16_weights(pe_id: str) -> None:
    """``model.to(torch.bfloat16)``: training step and long evaluation run and stay finite."""
    m = model_for(pe_id).to(torch.bfloat16).train()
    tokens = tokens_for(2, TRAIN_LEN)
    logits, loss = m(tokens, targets=tokens)
    assert logits.dtype == torch.bfloat16 and loss is not None and torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad.float()).all() for p in m.parameters() if p.grad is not None)
    with torch.no_grad():
        assert torch.isfinite(m.eval()(tokens_for(1, 4 * TRAIN_LEN))[0].float()).all()


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
    a = tokens_for(1, T)
    b = a.clone()
    b[0, t:] = (b[0, t:] + 7) % 256
    with torch.no_grad():
        la, _ = m(a)
        lb, _ = m(b)
    torch.testing.assert_close(la[0, :t], lb[0, :t], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(la[0, t:], lb[0, t:])


RELATIVE = [i for i in IDS if spec(i).relative]


@pytest.mark.parametrize("pe_id", RELATIVE)
def test_relative_methods_depend_only_on_offsets(pe_id: str) -> None:
    pe = make(pe_id)
    T = 12
    q, k = torch.randn(1, HEADS, T, HEAD_DIM), torch.randn(1, HEADS, T, HEAD_DIM)
    pos = torch.arange(T, dtype=torch.float32)
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    base = pe.logits(q, k, pe.context(pos))[..., causal]
    for shift in (3.0, 40.0):
        shifted = pe.logits(q, k, pe.context(pos + shift))[..., causal]
        torch.testing.assert_close(shifted, base, rtol=1e-4, atol=1e-4)


def test_some_methods_are_declared_relative() -> None:
    assert {"rope", "alibi", "yarn"} <= set(RELATIVE) and "dynamic_ntk" not in RELATIVE


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.parametrize("pe_id", IDS)
def test_attention_paths_agree(pe_id: str) -> None:
    """The fast path (SDPA with is_causal or a float mask), FlexAttention (eager on CPU), the explicit path
    and the chunked explicit path all give the reference model's output of ``pe.logits``."""
    B, T = 2, 24
    tokens = tokens_for(B, T)
    row = B * HEADS * T * 4 / 2**20  # MiB of one float32 logits row
    with torch.no_grad():
        ref, _ = model_for(pe_id, "explicit", chunk_mb=1e6)(tokens)
        for attn, mb in (("auto", 64.0), ("sdpa", 64.0), ("flex", 64.0), ("explicit", 5 * row), ("explicit", row)):
            out, _ = model_for(pe_id, attn, chunk_mb=mb)(tokens)
            path = f"attn={attn}, explicit_chunk_mb={mb:.3g}"
            torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4, msg=lambda m, path=path: f"{path}: {m}")


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.parametrize("pe_id", IDS)
def test_last_rows_are_the_full_forwards_last_rows(pe_id: str) -> None:
    """``forward(last=n)`` (the final layer computes only its last n query rows) gives the last n rows of
    the full forward on every path, whole and chunked, including a final row block cut mid-chunk."""
    B, T = 2, 40
    tokens = tokens_for(B, T)
    row = B * HEADS * T * 4 / 2**20
    with torch.no_grad():
        for attn, mb in (("auto", 64.0), ("sdpa", 64.0), ("flex", 64.0), ("explicit", 1e6), ("explicit", 7 * row)):
            m = model_for(pe_id, attn, chunk_mb=mb)
            torch.manual_seed(3)  # PEs that sample positions at evaluation draw the same ones in both forwards
            full, _ = m(tokens)
            for n in (1, 5, T):
                torch.manual_seed(3)
                part, _ = m(tokens, last=n)
                path = f"attn={attn}, explicit_chunk_mb={mb:.3g}, last={n}"
                torch.testing.assert_close(part, full[:, T - n:], rtol=1e-4, atol=1e-4,
                                           msg=lambda msg, path=path: f"{path}: {msg}")


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
def test_positions_are_arange_unless_the_pe_says_it_samples(pe_id: str) -> None:
    """The model tells SDPA the order is the plain one (no check, no sync) unless ``samples_positions``."""
    pe = make(pe_id)
    for training in (False, True):
        if not pe.samples_positions(training):
            for _ in range(3):
                assert torch.equal(pe.positions(20, training=training), torch.arange(20, dtype=torch.float32))


@pytest.mark.parametrize("pe_id", IDS)
def test_invalid_hyperparameter_is_named(pe_id: str) -> None:
    with pytest.raises(ValueError, match="not_a_parameter"):
        make(pe_id, not_a_parameter=1)
    for shared in ("head_dim", "num_heads", "train_len"):
        for bad in (0, "16", 2.5, True):
            kw = {"head_dim": HEAD_DIM, "num_heads": HEADS, "train_len": TRAIN_LEN, shared: bad}
            with pytest.raises(ValueError, match=shared):
                posenc.build(pe_id, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("pe_id", IDS)
def test_wrong_types_raise_value_error_naming_the_hyperparameter(pe_id: str) -> None:
    for name in spec(pe_id).hyperparameters:
        for bad in (object(), "16", [None]):
            with pytest.raises(ValueError, match=name):
                make(pe_id, **{name: bad})


@pytest.mark.parametrize("pe_id", IDS)
def test_backward_reaches_pe_parameters(pe_id: str) -> None:
    m = model_for(pe_id).train()
    tokens = tokens_for(2, 16)
    _, loss = m(tokens, pos=torch.arange(16, dtype=torch.float32), targets=tokens)
    assert loss is not None
    loss.backward()
    for name, p in m.pe.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), f"no finite gradient for pe.{name}"


@pytest.mark.parametrize("pe_id", IDS)
def test_learnable_trait_matches_the_parameters(pe_id: str) -> None:
    trainable = any(p.requires_grad for p in make(pe_id).parameters())
    assert spec(pe_id).learnable == trainable


@pytest.mark.parametrize("pe_id", [i for i in IDS if make(i).static_bias])
def test_static_biases_depend_on_positions_only(pe_id: str) -> None:
    """What lets the model keep their float masks across forwards: no parameters, no tokens."""
    pe = make(pe_id, **({"attention_chunk": 5} if pe_id == "irope" else {}))
    pos = torch.arange(12.0)
    before = [pe.bias(pe.context(pos, tokens=tokens_for(1, 12)), layer) for layer in range(4)]
    with torch.no_grad():
        for p in pe.parameters():
            p.add_(torch.randn_like(p))
    after = [pe.bias(pe.context(pos, tokens=tokens_for(1, 12)), layer) for layer in range(4)]
    assert any(b is not None for b in before)
    for b, a in zip(before, after, strict=True):
        assert (b is None and a is None) or torch.equal(b, a)


@pytest.mark.parametrize("pe_id", IDS)
def test_scale_policy_matches_the_hyperparameters(pe_id: str) -> None:
    s = spec(pe_id)
    if s.scale_policy is not None:
        assert "scale" in s.hyperparameters and s.applies_to == "rope"
        assert s.scale_policy in ("per_length", "fixed")
        default = s.hyperparameters["scale"]
        assert isinstance(default, float) and default >= 1 and math.isfinite(default)
