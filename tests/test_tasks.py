"""The synthetic tasks: answers, lengths, and the same evaluation examples for everyone."""

from __future__ import annotations

import numpy as np
import pytest

from posenc import tasks as T
from posenc.cards import EXPECT_TASKS


def _text(row: np.ndarray) -> str:
    return bytes(row.astype(np.uint8)).decode()


@pytest.mark.parametrize("name", T.general_tasks())
@pytest.mark.parametrize("length", [8, 64, 257])
def test_shapes_and_the_one_target(name: str, length: int) -> None:
    task = T.TASKS[name]
    x, y = task.train_set(32, length, seed=0)
    assert x.shape == y.shape == (32, length) and x.dtype == y.dtype == np.int64
    assert ((y != T.IGNORE).sum(axis=1) == 1).all() and (y[:, -1] != T.IGNORE).all()
    assert (x[:, -1] == ord("?")).all()
    digits = (x >= ord("0")) & (x <= ord("9"))
    assert (digits.sum(axis=1) >= 1).all()
    assert np.isin(y[:, -1], np.arange(ord("0"), ord("9") + 1)).all()


def test_needle_answer_is_the_only_digit() -> None:
    x, y = T.TASKS["needle"].train_set(100, 64, seed=3)
    for row, ans in zip(x, y[:, -1], strict=True):
        digits = [c for c in _text(row) if c.isdigit()]
        assert digits == [chr(ans)]


def test_needle_evaluation_spreads_depths_evenly() -> None:
    x, _ = T.TASKS["needle"].eval_set(128, 10)
    where = [next(i for i, c in enumerate(_text(r)) if c.isdigit()) for r in x]
    assert where == sorted(where) and where[0] < 13 and where[-1] > 113


def test_latest_answer_is_the_last_of_two_to_four_digits() -> None:
    x, y = T.TASKS["latest"].train_set(200, 64, seed=1)
    counts = []
    for row, ans in zip(x, y[:, -1], strict=True):
        digits = [c for c in _text(row) if c.isdigit()]
        counts.append(len(digits))
        assert digits[-1] == chr(ans)
    assert set(counts) == {2, 3, 4}


def test_evaluation_sets_do_not_depend_on_the_training_seed_and_differ_by_length() -> None:
    task = T.TASKS["latest"]
    a, b = task.eval_set(64, 20), task.eval_set(64, 20)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(task.train_set(20, 64, 0)[0], task.train_set(20, 64, 1)[0])


def test_answers_are_roughly_uniform() -> None:
    _, y = T.TASKS["needle"].train_set(5000, 32, seed=0)
    counts = np.bincount(y[:, -1] - ord("0"), minlength=10)
    assert counts.min() > 400


def test_bad_lengths_and_names_are_named() -> None:
    with pytest.raises(ValueError, match="needle: 'length'"):
        T.needle_examples(1, 2, np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown task 'copy'"):
        T.get_task("copy")


def test_the_card_schema_knows_the_same_tasks() -> None:
    assert set(EXPECT_TASKS) == set(T.TASKS)


def test_addition_sums_are_right_and_tests_use_the_longest_operands() -> None:
    task = T.TASKS["addition"]
    assert not task.general and "addition" not in T.general_tasks()
    x, y = task.train_set(50, 40, seed=2)
    for row, tgt in zip(x, y, strict=True):
        answer = "".join(chr(v) for v in tgt if v != T.IGNORE)
        text = _text(row).split()[-1] if " " in _text(row) else _text(row)
        a, rest = text[text.index("+") - len(answer) + 1:].split("+")
        b = rest.split("=")[0]
        assert int(a[::-1]) + int(b[::-1]) == int(answer[::-1])
    xe, ye = task.eval_set(64, 4)
    assert ((ye != T.IGNORE).sum(axis=1) == 21).all()  # 20-digit operands, 21-digit sums
