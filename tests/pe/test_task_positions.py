"""Position coupling and Abacus embeddings: digit-run ids from token ids (posenc.pe.task_positions)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import posenc
from posenc.model import ModelConfig, Transformer
from posenc.pe.base import spec
from posenc.pe.task_positions import digit_run_index
from posenc.tasks import addition_examples


def tok(text: str) -> torch.Tensor:
    return torch.tensor([list(text.encode())])


def build(pe_id: str, **hp: object) -> posenc.PositionalEncoding:
    return posenc.build(pe_id, head_dim=8, num_heads=2, train_len=16, **hp)


def authors_helper(mask: torch.Tensor) -> torch.Tensor:
    """The released Abacus helper's algorithm (segment starts, cumulative segment ids, a scatter of each segment's
    start index), written out independently of :func:`digit_run_index`."""
    shifted = torch.cat([torch.zeros_like(mask[:, :1]), mask[:, :-1]], dim=1)
    starts = (shifted != mask) & mask
    segment = torch.cumsum(starts.long(), dim=1)
    index = torch.arange(mask.size(1)).repeat(mask.size(0), 1)
    start_of = torch.zeros_like(index).scatter_add(1, segment, index * starts.long())
    return (index - start_of.gather(1, segment) + 1) * mask.long()


def test_digit_run_index_hand_case() -> None:
    assert digit_run_index(tok("ab12+345=x9")).tolist() == [[0, 0, 1, 2, 0, 1, 2, 3, 0, 0, 1]]
    assert digit_run_index(tok("7")).tolist() == [[1]]
    assert digit_run_index(tok("")).shape == (1, 0)


def test_digit_run_index_matches_the_authors_helper() -> None:
    g = torch.Generator().manual_seed(0)
    tokens = torch.where(torch.rand(8, 64, generator=g) < 0.6, torch.randint(48, 58, (8, 64), generator=g),
                         torch.randint(97, 123, (8, 64), generator=g))
    mask = (tokens >= 48) & (tokens <= 57)
    assert torch.equal(digit_run_index(tokens), authors_helper(mask))


def test_position_coupling_couples_digits_of_equal_significance() -> None:
    """"xy12+34=460" is 21 + 43 = 64 written least-significant digit first (answer padded to k + 1 digits):
    '+' and '=' (and the filler) take the start id s = 1, the digit of significance t takes s + t."""
    pe = build("position_coupling").eval()
    ctx = pe.context(torch.arange(11.0), tokens=tok("xy12+34=460"))
    ids = ctx.get("position_coupling_ids")[0].tolist()
    assert ids == [1, 1, 2, 3, 1, 2, 3, 1, 2, 3, 4]
    # The released dataset's rule with reverse_input (operands already least-significant first): '+' at s,
    # a and b at s+1.., '=' at s, the answer at s+1..; here s = 1.
    s, a, b, ans = 1, "12", "34", "460"
    authors = [s + 1 + i for i in range(len(a))] + [s] + [s + 1 + i for i in range(len(b))] + [s] + \
        [s + 1 + i for i in range(len(ans))]
    assert ids[2:] == authors


def test_position_coupling_random_start_in_training() -> None:
    pe = build("position_coupling", max_position=20).train()
    tokens = tok("ab123+456=5791").repeat(64, 1)
    starts = set()
    for _ in range(20):
        ids = pe.context(torch.arange(14.0), tokens=tokens).get("position_coupling_ids")
        s = ids[:, 0]
        assert torch.equal(ids, digit_run_index(tokens) + s[:, None])  # one start per example
        assert int(s.min()) >= 1 and int(ids.max()) <= 20  # the longest run (4 digits) stays in the table
        starts |= set(s.tolist())
    assert starts == set(range(1, 17))  # s ~ U{1, ..., max_position − 4}


def test_position_coupling_errors_name_the_parameter() -> None:
    pe = build("position_coupling", max_position=4).eval()
    with pytest.raises(ValueError, match="max_position=4"):
        pe.context(torch.arange(6.0), tokens=tok("x12345"))
    with pytest.raises(ValueError, match="token ids"):
        pe.context(torch.arange(3.0))
    with pytest.raises(ValueError, match="max_position"):
        build("position_coupling", max_position=1)


def test_abacus_ids_and_training_offset() -> None:
    pe = build("abacus", max_k=5).eval()
    ids = pe.context(torch.arange(9.0), tokens=tok("q12+345=7")).get("abacus_ids")
    assert ids.tolist() == [[0, 1, 2, 0, 1, 2, 3, 0, 1]]
    pe.train()
    seen = set()
    tokens = tok("q12+345=7").repeat(3, 1)
    for _ in range(60):
        t = pe.context(torch.arange(9.0), tokens=tokens).get("abacus_ids")
        base = ids.expand_as(t)
        k = t - base
        assert torch.all(k[base == 0] == 0)  # non-digits stay at index 0
        assert k[base > 0].unique().numel() == 1  # one k for the whole batch, as in the released code
        seen.add(int(k[base > 0][0]))
    assert seen == set(range(6))


def test_abacus_table_limit_is_named() -> None:
    pe = build("abacus", max_len=4).eval()
    with pytest.raises(ValueError, match="max_len=4"):
        pe.context(torch.arange(6.0), tokens=tok("x12345"))


@pytest.mark.parametrize("pe_id", ["position_coupling", "abacus"])
def test_embedding_formula_and_design(pe_id: str) -> None:
    """embed adds the table rows of the ids; the method is designed for the addition task."""
    assert spec(pe_id).designed_for == "addition" and spec(pe_id).learnable
    pe = build(pe_id).eval()
    tokens = tok("ab12+34=460")
    ctx = pe.context(torch.arange(11.0), tokens=tokens)
    x = torch.randn(1, 11, 16)
    torch.testing.assert_close(pe.embed(x, ctx), x + pe.weight[ctx.get(f"{pe_id}_ids")])


@pytest.mark.parametrize("pe_id", ["position_coupling", "abacus"])
def test_trains_on_the_addition_task(pe_id: str) -> None:
    torch.manual_seed(0)
    x, y = addition_examples(4, 32, np.random.default_rng(0))
    m = Transformer(ModelConfig(n_layer=1, n_head=2, d_model=16), build(pe_id)).train()
    _, loss = m(torch.from_numpy(x), targets=torch.from_numpy(y))
    assert loss is not None and torch.isfinite(loss)
    loss.backward()
    assert m.pe.weight.grad is not None and m.pe.weight.grad.abs().sum() > 0
