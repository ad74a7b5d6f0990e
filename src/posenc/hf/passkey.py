"""Passkey retrieval for pretrained models (Mohtashami & Jaggi 2023, "Landmark Attention", arXiv 2305.16300, §4.2).

A five-digit key is hidden at a given *depth* (0 = just after the instructions, 1 = just before the question)
of repeated filler sentences, and the model is asked for it at the end::

    <bos> There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. ...
    The grass is green. The sky is blue. ... The pass key is 68201. Remember it. 68201 is the pass key. ...
    What is the pass key? The pass key is 68201

The prompt is exactly ``length`` tokens of input (the answer's last token is only a target). A trial is
correct when, at every answer position, the model's most likely next token is the answer's token: the greedy
continuation of the question reproduces the key token for token (checked in one teacher-forced forward,
which equals greedy decoding of those tokens). Keys depend only on the seed, the length, the depth and the
trial, so every method answers the same questions.

The wording follows the prompt used by Landmark Attention and then YaRN and LongLoRA (their released code);
the text here is posenc's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["INTRO", "FILLER", "QUESTION", "PasskeyExample", "passkey_example", "passkey_key", "min_length",
           "filler_for"]

INTRO = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
         "I will quiz you about the important information there.\n")
FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
QUESTION = "\nWhat is the pass key? The pass key is"


def _needle(key: int) -> str:
    return f"The pass key is {key}. Remember it. {key} is the pass key. "


@dataclass(frozen=True)
class PasskeyExample:
    """``tokens`` (length + 1,) int64: the input is ``tokens[:-1]``; the answer is ``tokens[answer_start:]``,
    predicted at positions ``answer_start − 1 ..`` of the input. ``needle_at``: where the needle starts."""

    tokens: np.ndarray
    answer_start: int
    needle_at: int
    key: int


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False, return_attention_mask=False, verbose=False)["input_ids"])


def passkey_key(seed: int, length: int, depth_index: int, trial: int) -> int:
    """The five-digit key of one trial, from the seed, the length, the depth's index and the trial only."""
    return int(np.random.default_rng([seed, length, depth_index, trial]).integers(10_000, 100_000))


def _fixed(tokenizer: Any, key: int) -> tuple[list[int], list[int], list[int], list[int], list[int]]:
    bos = [] if tokenizer.bos_token_id is None else [int(tokenizer.bos_token_id)]
    return bos, _encode(tokenizer, INTRO), _encode(tokenizer, _needle(key)), _encode(tokenizer, QUESTION), \
        _encode(tokenizer, f" {key}")


def min_length(tokenizer: Any) -> int:
    """The shortest input that holds the instructions, needle, question and answer (no filler)."""
    return sum(len(p) for p in _fixed(tokenizer, 99_999)) - 1


def passkey_example(tokenizer: Any, length: int, depth: float, key: int,
                    filler_tokens: Sequence[int] | None = None) -> PasskeyExample:
    """The prompt of ``length`` input tokens with ``key`` at ``depth`` ∈ [0, 1] of the filler.

    ``filler_tokens``: the tokenised filler (repeated sentences, at least as long as needed), to tokenise it
    once for many examples; by default it is tokenised here. Raises ``ValueError`` when ``length`` is too short
    for the fixed parts.
    """
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"passkey depth must be in [0, 1], got {depth!r}")
    bos, intro, needle, question, answer = _fixed(tokenizer, key)
    n_fill = length + 1 - (len(bos) + len(intro) + len(needle) + len(question) + len(answer))
    if n_fill < 0:
        raise ValueError(f"passkey: length {length} is too short; the instructions, needle, question and answer "
                         f"need {length - n_fill} input tokens")
    if filler_tokens is None or len(filler_tokens) < n_fill:
        reps = 1 + n_fill // max(1, len(_encode(tokenizer, FILLER)) - 2)
        filler_tokens = _encode(tokenizer, FILLER * reps)
    fill = list(filler_tokens[:n_fill])
    cut = int(round(depth * n_fill))
    head = bos + intro + fill[:cut]
    seq = head + needle + fill[cut:] + question + answer
    return PasskeyExample(np.asarray(seq, dtype=np.int64), len(seq) - len(answer), len(head), key)


def filler_for(tokenizer: Any, length: int) -> list[int]:
    """The tokenised filler long enough for a prompt of ``length`` tokens."""
    per = max(1, len(_encode(tokenizer, FILLER)) - 2)
    return _encode(tokenizer, FILLER * (2 + length // per))
