"""Synthetic tasks for length generalisation, bytes as tokens, that a small model learns in-distribution.

Each task trains its own small model per method at the training length and is tested at 1…32× on the same
examples for every method (generated from :data:`EVAL_SEED`, the task and the length only). An example is a
token sequence whose answer position carries a target; every other target is :data:`IGNORE`. Accuracy is
exact match of the answer's argmax.

* ``needle``: one digit hidden at a uniformly random depth of letter filler, asked for at the end (``?``).
  This is passkey retrieval (Mohtashami & Jaggi 2023, "Landmark Attention") reduced to a one-token key:
  retrieval by content at any distance. A method whose attention cannot single out one far token fails
  as the filler grows.
* ``latest``: two to four digits scattered in filler; the answer is the most recent one. Retrieval that
  needs order, not only content: a method must prefer the latest digit at distances it never saw.
* ``addition`` (task-specific: trained only for the baselines and the methods designed for it, such as
  position coupling and Abacus embeddings): ``a+b=c`` with every number written least-significant digit
  first, as in McLeish et al. (2024) and Cho et al. (2024); training operands have 1 to n digits (the most
  that fit the training window), a test at length l adds the longest operands that fit, and every digit of
  the answer is a target (exact match of the whole sum).

Why these two: at the cpu preset's scale (2 layers, d = 64, a few hundred steps) both are learned to
100% at the training length by RoPE, while the usual harder forms are not learned at all in that budget
(measured with ``scripts/task_learnability.py``; the numbers are on the book's Protocol page): the
5-digit passkey, the duplicate-string copy (Jelassi et al. 2024) and a bounded form of the survey's A.3
chain (the sum of scattered digits modulo 10) all need two-hop circuits that a 2-layer model forms only
after thousands of steps. A task that no baseline learns in-distribution would enter no verdict anyway.

Filler uses lowercase letters and spaces; digits and ``?`` appear only where the task puts them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["IGNORE", "EVAL_SEED", "Task", "TASKS", "get_task", "needle_examples", "latest_examples",
           "addition_examples", "general_tasks", "answer_width"]

#: Target value ignored by ``torch.nn.functional.cross_entropy`` (its default ``ignore_index``).
IGNORE = -100
#: Seed of every evaluation set: the same questions for every method and training seed.
EVAL_SEED = 20240101
_FILLER = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz      ", dtype=np.uint8)  # letters and ~1/5 spaces
_QUERY = ord("?")
_ZERO = ord("0")


def _frame(n: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` rows of ``length + 1`` filler tokens (one more: inputs are seq[:-1], targets seq[1:])."""
    return _FILLER[rng.integers(0, _FILLER.size, size=(n, length + 1))].astype(np.int64)


def answer_width(y: np.ndarray) -> int:
    """How many final positions of the targets ``y`` (n, length) carry an answer: every task puts its answer
    last, so evaluation computes only those rows in the model's final layer (1 when nothing is scored)."""
    scored = (y != IGNORE).any(axis=0).nonzero()[0]
    return int(y.shape[1] - scored.min()) if len(scored) else 1


def _finish(seq: np.ndarray, answers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Put ``?`` and the answer at the end; the only target is the answer, predicted at ``?``."""
    seq[:, -2] = _QUERY
    seq[:, -1] = answers
    x = np.ascontiguousarray(seq[:, :-1])
    y = np.full_like(x, IGNORE)
    y[:, -1] = answers
    return x, y


def needle_examples(n: int, length: int, rng: np.random.Generator, depths: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """``n`` needle sequences of ``length`` tokens and their targets, (n, length) int64 each.

    The digit sits at ``round(depth × (length − 2))``, with ``depths`` (n,) in [0, 1] (uniform when None).
    """
    if length < 3:
        raise ValueError(f"needle: 'length' must be at least 3 tokens, got {length}")
    seq = _frame(n, length, rng)
    digits = rng.integers(0, 10, size=n) + _ZERO
    d = rng.random(n) if depths is None else np.asarray(depths, dtype=np.float64)
    if d.shape != (n,) or np.any((d < 0) | (d > 1)):
        raise ValueError(f"needle: 'depths' must be {n} values in [0, 1]")
    where = np.round(d * (length - 2)).astype(np.int64)  # positions 0..length-2, before the `?`
    seq[np.arange(n), where] = digits
    return _finish(seq, digits)


def latest_examples(n: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` sequences with 2–4 digits at distinct random positions; the answer is the latest digit."""
    if length < 5:
        raise ValueError(f"latest: 'length' must be at least 5 tokens, got {length}")
    seq = _frame(n, length, rng)
    counts = rng.integers(2, 5, size=n)
    # Distinct positions among 0..length-2: the first `count` of a random permutation's keys, sorted.
    keys = rng.random((n, length - 1))
    order = np.argsort(keys, axis=1)[:, :4]
    answers = np.empty(n, dtype=np.int64)
    for i in range(n):
        pos = np.sort(order[i, :counts[i]])
        digits = rng.integers(0, 10, size=counts[i]) + _ZERO
        seq[i, pos] = digits
        answers[i] = digits[-1]
    return _finish(seq, answers)


def addition_examples(n: int, length: int, rng: np.random.Generator, *, longest: bool = False
                      ) -> tuple[np.ndarray, np.ndarray]:
    """``n`` sequences ``filler a+b=c`` of ``length`` tokens, numbers least-significant digit first.

    Operands have ``k`` digits each (uniform in 1..m, or m when ``longest``; m = the most that fit: the text
    takes 3k + 3 tokens with the answer's k + 1 digits); the k + 1 answer digits are the targets.
    """
    total = length + 1
    m = (total - 3) // 3
    if m < 1:
        raise ValueError(f"addition: 'length' must be at least 6 tokens, got {length}")
    seq = _frame(n, length, rng)
    y = np.full((n, length), IGNORE, dtype=np.int64)
    sizes = np.full(n, m) if longest else rng.integers(1, m + 1, size=n)
    for i, k in enumerate(sizes):
        a, b = rng.integers(0, 10, size=k), rng.integers(0, 10, size=k)
        s, carry = np.empty(k + 1, dtype=np.int64), 0
        for j in range(k):  # least significant first
            t = int(a[j]) + int(b[j]) + carry
            s[j], carry = t % 10, t // 10
        s[k] = carry
        text = np.concatenate([a + _ZERO, [ord("+")], b + _ZERO, [ord("=")], s + _ZERO])
        seq[i, total - text.size:] = text
        y[i, length - (k + 1):] = s + _ZERO
    return np.ascontiguousarray(seq[:, :-1]), y


@dataclass(frozen=True)
class Task:
    """A task: its name, what it tests, and its generators."""

    name: str
    description: str
    make: Callable[[int, int, np.random.Generator, bool], tuple[np.ndarray, np.ndarray]]
    min_length: int
    #: True: trained for every method; False: only for the baselines and the methods designed for it.
    general: bool = True

    def train_set(self, n: int, length: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` training examples of ``length`` tokens for training seed ``seed``."""
        return self.make(n, length, np.random.default_rng([seed, 7, length]), False)

    def eval_set(self, length: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``n`` evaluation examples at ``length``: the same for every method and seed."""
        return self.make(n, length, np.random.default_rng([EVAL_SEED, length]), True)


def _needle(n: int, length: int, rng: np.random.Generator, evaluation: bool) -> tuple[np.ndarray, np.ndarray]:
    # Evaluation spreads the needle evenly over depths, so every depth is tested equally often.
    depths = (np.arange(n) + 0.5) / n if evaluation else None
    return needle_examples(n, length, rng, depths)


def _latest(n: int, length: int, rng: np.random.Generator, evaluation: bool) -> tuple[np.ndarray, np.ndarray]:
    return latest_examples(n, length, rng)


def _addition(n: int, length: int, rng: np.random.Generator, evaluation: bool) -> tuple[np.ndarray, np.ndarray]:
    return addition_examples(n, length, rng, longest=evaluation)


TASKS: dict[str, Task] = {
    "needle": Task("needle", "retrieve the one digit hidden at a random depth of filler", _needle, 3),
    "latest": Task("latest", "answer the most recent of 2-4 digits scattered in filler", _latest, 5),
    "addition": Task("addition", "add two numbers written least-significant digit first (exact sum)", _addition,
                     6, general=False),
}


def general_tasks() -> list[str]:
    """The tasks trained for every method."""
    return [name for name, t in TASKS.items() if t.general]


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return TASKS[name]
