"""Task-structured positions for arithmetic: position coupling and Abacus embeddings.

Both methods give every digit a position id read from the token ids: the index of the digit inside its run of
consecutive digits (:func:`digit_run_index`). For numbers written least-significant digit first, as in the
``addition`` task of :mod:`posenc.tasks` (``a+b=c`` reversed), that index is the digit's significance, so the
digits of the two operands and of the sum that must be added together share an id. Both are learned absolute
tables added to the token embeddings (``embed``), designed for that task (``designed_for = "addition"``): the
experiments train the addition task for them. A context built without token ids makes the hooks raise.

Training-time randomisation (the random start of position coupling, Abacus's random offset k) is drawn in
:meth:`prepare` when the module is in training mode (``self.training``), from ``self.generator`` when set or
torch's global generator otherwise; evaluation is deterministic.

Conventions: tokens are bytes, digits are the bytes ``'0'``–``'9'`` (48–57); tables are initialised
N(0, 0.02²) like this project's learned absolute table.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from posenc.pe.base import PositionalEncoding, PositionContext, register

__all__ = ["DIGIT_BYTES", "digit_run_index", "PositionCoupling", "Abacus"]

#: The byte values of the ten digits.
DIGIT_BYTES: tuple[int, ...] = tuple(range(ord("0"), ord("9") + 1))


def digit_run_index(tokens: Tensor) -> Tensor:
    """1-based index of every token inside its run of consecutive digits, 0 for other tokens: (B, T) int64.

    ``"ab12+345"`` → ``0 0 1 2 0 1 2 3``. (Abacus's ``helper``; position coupling's digit ids before the
    start offset.)
    """
    is_digit = (tokens >= DIGIT_BYTES[0]) & (tokens <= DIGIT_BYTES[-1])
    idx = torch.arange(1, tokens.size(-1) + 1, device=tokens.device).expand_as(tokens)
    # Index of the last non-digit at or before each token (0 when none): a running max over the non-digits.
    last_break = torch.cummax(torch.where(is_digit, torch.zeros_like(idx), idx), dim=-1).values
    return torch.where(is_digit, idx - last_break, torch.zeros_like(idx))


def _tokens(pe: PositionalEncoding, ctx: PositionContext) -> Tensor:
    if ctx.tokens is None:
        raise ValueError(f"{pe.id}: needs the token ids to find the digits; build the context with "
                         "pe.context(pos, tokens=tokens), as the reference model does")
    return ctx.tokens.to(ctx.device)


class _DigitTable(PositionalEncoding):
    """A learned table E ∈ ℝ^(rows × d_model) added to the token embeddings at ids from :meth:`ids`."""

    learnable: ClassVar[bool] = True
    designed_for: ClassVar[str | None] = "addition"
    generator: torch.Generator | None
    table_name: ClassVar[str]  # the hyperparameter that sizes the table (named in errors)

    def _init_table(self, rows: int) -> None:
        self.weight = nn.Parameter(torch.randn(rows, self.d_model) * 0.02)
        self.generator = None

    def _randint(self, low: Tensor | int, high: Tensor | int, shape: tuple[int, ...], device: torch.device) -> Tensor:
        """Uniform integers in [low, high] (inclusive; tensors broadcast to ``shape``), int64 on ``device``."""
        u = torch.rand(shape, generator=self.generator).to(device)
        low_t = torch.as_tensor(low, device=device)
        high_t = torch.as_tensor(high, device=device)
        return (low_t + torch.floor(u * (high_t - low_t + 1))).long()

    def ids(self, runs: Tensor) -> Tensor:
        """Table rows (B, T) for the digit-run indices ``runs`` (B, T)."""
        raise NotImplementedError

    def prepare(self, ctx: PositionContext) -> None:
        tok = _tokens(self, ctx)
        if tok.size(-1) != ctx.q_pos.numel():
            raise ValueError(f"{self.id}: the context's token ids ({tok.size(-1)}) do not match its "
                             f"{ctx.q_pos.numel()} query positions")
        ids = self.ids(digit_run_index(tok))
        if ids.numel() and int(ids.max()) >= self.weight.size(0):
            raise ValueError(f"{self.id}: position id {int(ids.max())} is outside the learned table "
                             f"({self.table_name}={getattr(self, self.table_name)}); a number this long needs a "
                             f"larger '{self.table_name}'")
        ctx.put(f"{self.id}_ids", ids, q_dim=1)

    def embed(self, x: Tensor, ctx: PositionContext) -> Tensor:
        name = f"{self.id}_ids"
        if name not in ctx:
            raise ValueError(f"{self.id}: the context has no token ids; build it with pe.context(pos, tokens=...)")
        ids = ctx.get(name)
        if tuple(ids.shape) != tuple(x.shape[:2]):
            raise ValueError(f"{self.id}: the context's token ids {tuple(ids.shape)} do not match the sequence "
                             f"{tuple(x.shape[:2])}")
        return x + self.weight[ids].to(x.dtype)


@register
class PositionCoupling(_DigitTable):
    """Position coupling (Cho, Cha, Awasthi, Bhojanapalli, Gupta, Yun, NeurIPS 2024, arXiv 2405.20671, §3;
    released code HanseulJo/position-coupling, ``AdditionDatasetWithCoupledPositions``).

    Tokens that play the same role share a position id: for addition, the digits of the same significance in
    both operands and in the sum. With a start s, the digit of significance t (1-based) gets id s + t and the
    other tokens (``+``, ``=``; here also filler) get id s. The ids index a learned absolute table (``abs_learned``
    in the released scripts) added to the token embeddings. In training s is drawn per example, uniform in
    {1, …, max_position − n} for the longest digit run n of the example, so every id up to ``max_position`` is
    trained even on short numbers; at evaluation s = 1. Ids come from :func:`digit_run_index`, which equals the
    significance for numbers written least-significant digit first (this project's addition task; the released
    code couples reversed ids on most-significant-first operands, the same pairing).

    Default ``max_position``: the released scripts set it to the longest tested number plus 2–3 (e.g. 202–203 for
    200-digit tests); here ``11·train_len``, which covers the longest numbers of the 32 × evaluation (an addition
    of n-digit operands takes 3n + 3 tokens). An id past the table raises ``ValueError`` naming ``max_position``.
    """

    id = "position_coupling"
    table_name = "max_position"

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, max_position: int | None = None) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len)
        max_position = 11 * train_len if max_position is None else max_position
        self._check("max_position", max_position, isinstance(max_position, int) and not isinstance(max_position, bool)
                    and max_position >= 2, "an int >= 2")
        self.max_position = max_position
        self._init_table(max_position + 1)  # ids 0..max_position (0 is never used: s >= 1)

    def ids(self, runs: Tensor) -> Tensor:
        if not self.training:
            return runs + 1
        longest = runs.max(dim=-1, keepdim=True).values  # (B, 1)
        high = (self.max_position - longest).clamp(min=1)  # too long for a random start: s = 1 (then checked)
        start = self._randint(1, high, tuple(longest.shape), runs.device)
        return runs + start

    def extra_repr(self) -> str:
        return super().extra_repr() + f", max_position={self.max_position}"


@register
class Abacus(_DigitTable):
    """Abacus embeddings (McLeish, Bansal, Stein, Jain, Kirchenbauer, Bartoldson, Kailkhura, Bhatele, Geiping,
    Schwarzschild, Goldstein, NeurIPS 2024, arXiv 2405.17399, §3; released code mcleish7/arithmetic,
    ``abacus.py`` and ``cramming/architectures/embeddings.py``).

    Each digit gets a learned embedding indexed by its position inside its number (1 for the first digit, which
    for least-significant-first numbers is the units digit), added to its token embedding; other tokens get the
    embedding of index 0. In training a random offset k ~ U{0, …, ``max_k``} is added to every digit index (one
    k per forward, as in the released code), so that indices up to ``max_k`` plus the training length are
    trained; at evaluation k = 0. Position otherwise enters nowhere: the paper's main models pair Abacus with
    NoPE attention (its runs named ``attn_emb_nope``), as here.

    Defaults from the released code: ``max_k`` = 100 (the configuration's ``max_abacus_len``; the standalone
    ``abacus.py`` defaults to 99), ``max_len`` = 1024 table rows (``max_seq_length``). An index past the table
    raises ``ValueError`` naming ``max_len``.
    """

    id = "abacus"
    table_name = "max_len"

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, max_k: int = 100, max_len: int = 1024) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len)
        self._check("max_k", max_k, isinstance(max_k, int) and not isinstance(max_k, bool) and max_k >= 0,
                    "an int >= 0")
        self._check("max_len", max_len, isinstance(max_len, int) and not isinstance(max_len, bool) and max_len >= 2,
                    "an int >= 2")
        self.max_k, self.max_len = max_k, max_len
        self._init_table(max_len)

    def ids(self, runs: Tensor) -> Tensor:
        if not self.training or self.max_k == 0:
            return runs
        k = self._randint(0, self.max_k, (), runs.device)
        return torch.where(runs > 0, runs + k, runs)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", max_k={self.max_k}, max_len={self.max_len}"
