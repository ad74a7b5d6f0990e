"""Randomized positions, PoSE and CREAM: the samplers' invariants, delegation to the inner PE, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import posenc
from posenc.pe.sampling import PoSE, RandomizedPositions

HEAD_DIM, HEADS, L = 16, 4, 16


def build(pe_id: str, **hp: object) -> posenc.PositionalEncoding:
    return posenc.build(pe_id, head_dim=HEAD_DIM, num_heads=HEADS, train_len=L, **hp)


# ---------------------------------------------------------------------- randomized
def test_randomized_training_positions_sorted_unique_in_range() -> None:
    pe = build("randomized", max_len=100)
    assert isinstance(pe, RandomizedPositions)
    torch.manual_seed(0)
    seen_max = 0.0
    for T in (1, 5, L, 100):
        for _ in range(20):
            pos = pe.positions(T, training=True)
            assert pos.shape == (T,) and pos.dtype == torch.float32
            assert bool((pos[1:] > pos[:-1]).all())
            assert bool((pos >= 0).all()) and bool((pos < 100).all())
            assert bool((pos == pos.round()).all())
            seen_max = max(seen_max, float(pos.max()))
    assert seen_max > 90  # the whole simulated range is used, not just the first T ids
    assert torch.equal(pe.positions(100, training=True), torch.arange(100, dtype=torch.float32))


def test_randomized_default_range_is_64x_train_len() -> None:
    assert build("randomized").max_len == 64 * L


def test_randomized_is_deterministic_under_seed_and_generator() -> None:
    pe = build("randomized")
    torch.manual_seed(3)
    a = pe.positions(L, training=True)
    torch.manual_seed(3)
    b = pe.positions(L, training=True)
    assert torch.equal(a, b)
    pe.generator = torch.Generator().manual_seed(7)
    c = pe.positions(L, training=True)
    pe.generator = torch.Generator().manual_seed(7)
    d = pe.positions(L, training=True)
    assert torch.equal(c, d) and not torch.equal(a, c)


def test_randomized_eval_positions() -> None:
    pe = build("randomized")
    torch.testing.assert_close(pe.positions(40, training=False), torch.arange(40, dtype=torch.float32))
    sampled = build("randomized", sample_at_eval=True)
    torch.manual_seed(0)
    pos = sampled.positions(40, training=False)
    assert not torch.equal(pos, torch.arange(40, dtype=torch.float32))
    assert bool((pos[1:] > pos[:-1]).all())


def test_randomized_longer_than_max_len_is_a_named_error() -> None:
    with pytest.raises(ValueError, match="max_len"):
        build("randomized", max_len=20).positions(21, training=True)


def test_wrapper_delegates_to_inner_and_trains_its_parameters() -> None:
    pe = build("randomized")
    rope = build("rope")
    q, k = torch.randn(2, HEADS, 9, HEAD_DIM), torch.randn(2, HEADS, 9, HEAD_DIM)
    pos = torch.tensor([0.0, 3, 4, 10, 11, 50, 51, 52, 90])
    torch.testing.assert_close(pe.logits(q, k, pe.context(pos)), rope.logits(q, k, rope.context(pos)))
    # An inner PE with parameters: they belong to the wrapper (and so to the model's optimiser).
    wrapped = build("randomized", inner="ssmax")
    assert any(name.startswith("inner.") for name, _ in wrapped.named_parameters())
    nope = build("randomized", inner="nope")
    torch.testing.assert_close(nope.logits(q, k, nope.context(pos)), q @ k.transpose(-2, -1) / HEAD_DIM**0.5)


def test_inner_kwargs_reach_the_inner_pe() -> None:
    pe = build("pose", inner_kwargs={"base": 500.0})
    assert pe.inner.base == 500.0
    with pytest.raises(ValueError, match="not_a_parameter"):
        build("pose", inner_kwargs={"not_a_parameter": 1})


# ---------------------------------------------------------------------- PoSE
def _chunks(pos: torch.Tensor) -> int:
    return int((pos[1:] - pos[:-1] != 1).sum()) + 1


@pytest.mark.parametrize("num_chunks", [1, 2, 3])
def test_pose_positions_are_skipwise_chunks_below_target(num_chunks: int) -> None:
    pe = build("pose", target_len=8 * L, num_chunks=num_chunks)
    assert isinstance(pe, PoSE)
    torch.manual_seed(0)
    spans = []
    for T in (1, 2, 7, L):
        for _ in range(30):
            pos = pe.positions(T, training=True)
            assert pos.shape == (T,) and pos.dtype == torch.float32
            assert pos[0] == 0  # u_0 = 0
            assert bool((pos[1:] > pos[:-1]).all())
            assert bool((pos < 8 * L).all())
            assert _chunks(pos) <= min(num_chunks, T)  # contiguous inside each chunk
            lengths = pe.chunk_lengths(T)
            assert sum(lengths) == T and min(lengths) >= 1 and len(lengths) == min(num_chunks, T)
            spans.append(float(pos[-1] - pos[0]))
    if num_chunks > 1:
        assert max(spans) > 4 * L  # relative distances reach far into the target window
    else:
        assert max(spans) == L - 1


def test_pose_two_chunks_follow_released_code_first_chunk_at_most_half() -> None:
    pe = build("pose")
    torch.manual_seed(0)
    firsts = {pe.chunk_lengths(L)[0] for _ in range(200)}
    assert firsts <= set(range(1, (L + 1) // 2 + 1)) and len(firsts) > 3


def test_pose_deterministic_and_eval_arange() -> None:
    pe = build("pose")
    torch.manual_seed(5)
    a = pe.positions(L, training=True)
    torch.manual_seed(5)
    assert torch.equal(a, pe.positions(L, training=True))
    pe.generator = torch.Generator().manual_seed(1)
    b = pe.positions(L, training=True)
    pe.generator = torch.Generator().manual_seed(1)
    assert torch.equal(b, pe.positions(L, training=True))
    torch.testing.assert_close(pe.positions(3 * L, training=False), torch.arange(3 * L, dtype=torch.float32))
    assert build("pose").target_len == 16 * L


def test_pose_window_longer_than_target_is_a_named_error() -> None:
    with pytest.raises(ValueError, match="target_len"):
        build("pose", target_len=L).positions(L + 1, training=True)


@pytest.mark.parametrize(
    ("pe_id", "hp", "name"),
    [
        ("randomized", {"max_len": L - 1}, "max_len"),
        ("randomized", {"max_len": 2.5}, "max_len"),
        ("randomized", {"inner": "no_such_pe"}, "inner"),
        ("randomized", {"inner": "randomized"}, "inner"),
        ("randomized", {"inner": "rerope"}, "inner"),  # overrides logits: cannot keep the fast path
        ("randomized", {"sample_at_eval": 1}, "sample_at_eval"),
        ("pose", {"target_len": L - 1}, "target_len"),
        ("pose", {"num_chunks": 0}, "num_chunks"),
        ("pose", {"inner_kwargs": [1]}, "inner_kwargs"),
    ],
)
def test_invalid_hyperparameters_name_the_parameter(pe_id: str, hp: dict[str, object], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        build(pe_id, **hp)


# ---------------------------------------------------------------------- CREAM
def authors_cream(seq_len: int, factor: int, sigma: float, relativity: bool, u: float, end_u: float,
                  edge_small: int) -> list[int]:
    """The released CREAM id rule (bigai-nlco/CREAM src/train.py), written out with explicit draws: the head/tail
    choice, the uniform u of the Gaussian factor and a uniform for the middle's end."""
    head = tail = seq_len // 3 if relativity else edge_small
    chunk = seq_len - head - tail
    mu = 1 + factor
    x = np.linspace(2, factor * 2, 1000)
    cdf = 0.5 * (1 + np.array([math.erf((v - mu) / (sigma * math.sqrt(2))) for v in x]))
    r = np.interp(u, cdf, x).astype(int)
    lo, hi = int(head + ((chunk - 1) * (r / 2))), int((r / 2) * seq_len) - tail - 1
    end = lo + int(end_u * (hi - lo + 1))
    return (list(range(head)) + list(range(end - (chunk - 1), end + 1))
            + list(range(factor * seq_len - tail, factor * seq_len)))


def test_cream_matches_the_released_id_rule() -> None:
    """Given the same draws, CREAM's ids are those of the released code."""
    pe = build("cream", target_len=8 * L, small_edge=2)
    for relativity in (True, False):
        for u, end_u in ((0.02, 0.0), (0.5, 0.99), (0.97, 0.4)):
            draws = iter([0.25 if relativity else 0.75, u])
            pe._uniform = lambda draws=draws: next(draws)  # type: ignore[method-assign]
            ends = iter([end_u])
            pe._randint = lambda lo, hi, ends=ends: lo + int(next(ends) * (hi - lo + 1))  # type: ignore[method-assign]
            ours = pe.sample(L).long().tolist()
            assert ours == authors_cream(L, 8, 3.0, relativity, u, end_u, 2)


def test_cream_positions_sorted_unique_below_target_and_middle_focused() -> None:
    pe = build("cream", target_len=16 * L)
    torch.manual_seed(0)
    mids = []
    for _ in range(300):
        pos = pe.positions(L, training=True)
        assert pos.shape == (L,) and bool((pos[1:] > pos[:-1]).all())
        assert float(pos[0]) == 0.0 and float(pos[-1]) == 16 * L - 1  # head at 0, tail at the target's end
        mids.append(float(pos[L // 2]))
    mids_t = torch.tensor(mids)
    # The middle segment sits near the middle of the target window most often (the truncated Gaussian).
    assert 0.3 * 16 * L < float(mids_t.median()) < 0.7 * 16 * L
    torch.testing.assert_close(pe.positions(10, training=False), torch.arange(10.0))
    assert pe.samples_positions(True) and not pe.samples_positions(False)


def test_cream_inner_is_interpolated_by_the_target_factor() -> None:
    pe = build("cream")
    assert pe.inner.id == "pi" and pe.inner.scale == 8.0  # target 8L: linear interpolation by 8
    assert build("cream", inner="yarn", target_len=4 * L).inner.scale == 4.0
    assert build("cream", inner="rope").inner.id == "rope"  # no scale hyperparameter: its defaults
    assert build("cream", inner_kwargs={"scale": 2.0}).inner.scale == 2.0
    with pytest.raises(ValueError, match="target_len"):
        build("cream").sample(9 * L)
    with pytest.raises(ValueError, match="sigma"):
        build("cream", sigma=0.0)
