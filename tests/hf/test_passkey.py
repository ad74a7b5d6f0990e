"""Passkey prompts: exact length, the needle at the asked depth, the answer where the question ends."""

from __future__ import annotations

import pytest

from posenc.hf.passkey import filler_for, min_length, passkey_example, passkey_key
from posenc.hf.tiny import tiny_tokenizer

TOK = tiny_tokenizer()


def text(ids: list[int]) -> str:
    return TOK.decode(ids)


@pytest.mark.parametrize("length", [min_length(TOK), 300, 777])
def test_prompt_has_the_length_and_ends_with_the_key(length: int) -> None:
    key = passkey_key(0, length, 0, 0)
    ex = passkey_example(TOK, length, 0.5, key)
    assert ex.tokens.size == length + 1  # inputs tokens[:-1] are exactly `length` tokens
    assert text(ex.tokens[ex.answer_start:].tolist()) == f" {key}"
    assert text(ex.tokens[:ex.answer_start].tolist()).endswith("What is the pass key? The pass key is")
    assert text(ex.tokens[ex.needle_at:].tolist()).startswith(f"The pass key is {key}.")


def test_depth_moves_the_needle_through_the_filler() -> None:
    filler = filler_for(TOK, 600)
    at = [passkey_example(TOK, 600, d, 12345, filler).needle_at for d in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert at == sorted(at) and at[0] < at[-1]
    first = passkey_example(TOK, 600, 0.0, 12345, filler)
    assert text(first.tokens[:first.needle_at].tolist()).endswith("important information there.\n")
    last = passkey_example(TOK, 600, 1.0, 12345, filler)
    assert text(last.tokens[last.needle_at:].tolist()).startswith("The pass key is 12345. Remember it. 12345 is the "
                                                                  "pass key. \nWhat is the pass key?")


def test_keys_depend_only_on_seed_length_depth_and_trial() -> None:
    keys = {passkey_key(0, 512, d, t) for d in range(5) for t in range(5)}
    assert len(keys) > 20 and all(10_000 <= k < 100_000 for k in keys)
    assert passkey_key(0, 512, 1, 2) == passkey_key(0, 512, 1, 2) != passkey_key(1, 512, 1, 2)


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="too short.*need"):
        passkey_example(TOK, min_length(TOK) - 1, 0.5, 12345)
    with pytest.raises(ValueError, match="depth must be in"):
        passkey_example(TOK, 400, 1.5, 12345)
