"""Training-time position samplers: randomized positional encodings, PoSE and CREAM.

Both change only the *indices* a sequence is given during training; every other hook (``embed``,
``rotate``, ``bias``) is the one of an inner PE, built with the same ``head_dim``/``num_heads``/
``train_len`` and registered as a submodule so its parameters train. The inner PE prepares its tensors in
a child of the position context and its hooks receive that child. The model builds the causal mask from
the positions, so the sampled ids must be strictly increasing (they are).

Randomness comes from ``self.generator`` (a :class:`torch.Generator`, settable) or, when it is None,
from torch's global generator, so ``torch.manual_seed`` makes a run reproducible.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from posenc.pe.base import PositionalEncoding, PositionContext, available, build, register, spec

__all__ = ["InnerPE", "RandomizedPositions", "PoSE", "CREAM", "cream_positions"]


class InnerPE(PositionalEncoding):
    """Base for methods that wrap another registered PE (``inner``) and delegate every hook to it.

    The inner PE must put position into ``embed``/``rotate``/``bias`` (the model's fast path); one that
    overrides ``logits`` or ``weights`` is refused, because the wrapper would otherwise have to override them
    too and silently send every wrapped PE down the explicit path.
    """

    inner: PositionalEncoding
    generator: torch.Generator | None

    def _init_inner(self, inner: str, inner_kwargs: dict[str, Any] | None) -> None:
        ids = available()
        self._check("inner", inner, isinstance(inner, str) and inner in ids and inner != type(self).id,
                    "the registry id of another positional encoding")
        self._check("inner_kwargs", inner_kwargs, inner_kwargs is None or isinstance(inner_kwargs, dict),
                    "None or a dict of the inner PE's hyperparameters")
        pe = build(inner, head_dim=self.head_dim, num_heads=self.num_heads, train_len=self.train_len,
                   **(inner_kwargs or {}))
        self._check("inner", inner, not pe.needs_explicit(),
                    "a PE whose position enters through embed/rotate/bias (it overrides logits or weights)")
        self.inner = pe  # a submodule: its parameters are trained with the model
        self.bias_per_layer = pe.bias_per_layer  # follows the inner PE
        self.static_bias = pe.static_bias
        self.generator = None

    def prepare(self, ctx: PositionContext) -> None:
        self.inner.prepare(ctx.child_for())

    def inner_context(self, ctx: PositionContext) -> PositionContext:
        """The child context the inner PE's tensors live in."""
        if ctx.child is None:
            raise ValueError(f"{self.id}: the position context has no child context for the inner PE; build it "
                             "with pe.context(...)")
        return ctx.child

    def embed(self, x: Tensor, ctx: PositionContext) -> Tensor:
        return self.inner.embed(x, self.inner_context(ctx))

    def rotate(self, q: Tensor, k: Tensor, ctx: PositionContext, layer: int = 0) -> tuple[Tensor, Tensor]:
        return self.inner.rotate(q, k, self.inner_context(ctx), layer)

    def bias(self, ctx: PositionContext, layer: int = 0) -> Tensor | None:
        return self.inner.bias(self.inner_context(ctx), layer)

    def _randint(self, low: int, high: int) -> int:
        """Uniform integer in [low, high] (inclusive), from ``self.generator`` or the global generator."""
        return int(torch.randint(low, high + 1, (1,), generator=self.generator).item())

    def extra_repr(self) -> str:
        return super().extra_repr() + f", inner={self.inner.id}"


@register
class RandomizedPositions(InnerPE):
    """Randomized positional encodings (Ruoss et al., ACL 2023, arXiv 2305.16843, §3).

    In training, a sequence of n tokens gets the positions ``sort(sample_without_replacement(range(M), n))``
    for a simulated maximum length M (``max_len``) far beyond the training length, so every position
    (absolute or relative) a test sequence of length ≤ M will use has been seen. Works with any PE
    (``inner``; RoPE by default).

    Defaults. M: the authors' released example (``experiments/example.py``) uses ``noise_max_length = 2048``
    with training lengths up to 40 and ``max_range_test_length = 100`` (tests up to length 100; M ≈ 51 × the
    training length); we use M = 64 × ``train_len`` so that the 32 × evaluation protocol stays inside the
    simulated range.

    Evaluation. The released code samples ordered positions at evaluation as well (the noisy encodings
    are drawn on every call). Here evaluation uses ``arange(T)`` by default, the convention every PE in
    this project shares; set ``sample_at_eval=True`` to follow the released code (the evaluation is then
    stochastic; fix ``generator`` or the global seed).
    """

    id = "randomized"

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, inner: str = "rope",
                 max_len: int | None = None, sample_at_eval: bool = False,
                 inner_kwargs: dict[str, Any] | None = None) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len)
        max_len = 64 * train_len if max_len is None else max_len
        self._check("max_len", max_len, isinstance(max_len, int) and max_len >= train_len,
                    f"an int >= train_len ({train_len})")
        self._check("sample_at_eval", sample_at_eval, isinstance(sample_at_eval, bool), "a bool")
        self.max_len = max_len
        self.sample_at_eval = sample_at_eval
        self._init_inner(inner, inner_kwargs)

    def sample(self, seq_len: int, device: torch.device | str | None = None) -> Tensor:
        """Sorted sample of ``seq_len`` distinct ids from ``range(max_len)``, float32 (T,)."""
        if seq_len > self.max_len:
            raise ValueError(f"{self.id}: sequence length {seq_len} exceeds hyperparameter 'max_len' "
                             f"({self.max_len}); raise max_len to at least the longest length used")
        ids = torch.randperm(self.max_len, generator=self.generator)[:seq_len]
        return ids.sort().values.to(device=device, dtype=torch.float32)

    def positions(self, seq_len: int, *, training: bool = False, device: torch.device | str | None = None) -> Tensor:
        if self.samples_positions(training):
            return self.sample(seq_len, device)
        return torch.arange(seq_len, dtype=torch.float32, device=device)

    def samples_positions(self, training: bool) -> bool:
        return training or self.sample_at_eval

    def extra_repr(self) -> str:
        return super().extra_repr() + f", max_len={self.max_len}, sample_at_eval={self.sample_at_eval}"


class _TrainingSampler(InnerPE):
    """A fine-tuning position sampler (PoSE, CREAM): ``sample`` draws skipped positions while training; evaluation
    uses the plain positions 0..T-1."""

    def sample(self, seq_len: int, device: torch.device | str | None = None) -> Tensor:
        raise NotImplementedError

    def positions(self, seq_len: int, *, training: bool = False, device: torch.device | str | None = None) -> Tensor:
        if training:
            return self.sample(seq_len, device)
        return torch.arange(seq_len, dtype=torch.float32, device=device)

    def samples_positions(self, training: bool) -> bool:
        return training


@register
class PoSE(_TrainingSampler):
    """PoSE, positional skip-wise training (Zhu et al., ICLR 2024, arXiv 2309.10400, §3.2, Eqs. 3–4).

    The training window of T tokens is cut into N chunks c_0..c_{N−1} of lengths l_i (Σ l_i = T); chunk i
    starts at st_i = Σ_{j<i} l_j and gets the ids ``u_i + st_i + (0 .. l_i − 1)`` with skip biases
    u_0 = 0 and u_i ~ U{u_{i−1}, …, L_t − T} (non-decreasing), so ids stay contiguous inside a chunk,
    strictly increase across chunks, and stay below the target length L_t (``target_len``); relative
    distances cover the whole target window. Evaluation uses ``arange(T)``.

    Chunk lengths follow the authors' released code for N = 2 (l_0 ~ U{1, …, ⌈T/2⌉}); for N > 2 the
    N − 1 cut points are drawn uniformly without replacement. Only the position ids are sampled here:
    the paper also samples each chunk's *content* from a longer document (Eq. 5, skip v_i); with the
    data pipeline feeding contiguous windows, the content is the contiguous window (the paper's
    ``v_i = 0`` ablation).

    Defaults: N = 2 (the paper's choice); L_t = 16 × ``train_len`` (the paper's main runs extend a 2k
    window to 16k and 32k, i.e. 8× and 16×). PoSE is a fine-tuning method for a RoPE model, usually
    combined with an interpolation (``inner="pi"`` or ``"yarn"`` with ``inner_kwargs``).
    """

    id = "pose"
    applies_to = "rope"

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, inner: str = "rope",
                 target_len: int | None = None, num_chunks: int = 2,
                 inner_kwargs: dict[str, Any] | None = None) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len)
        target_len = 16 * train_len if target_len is None else target_len
        self._check("target_len", target_len, isinstance(target_len, int) and target_len >= train_len,
                    f"an int >= train_len ({train_len})")
        self._check("num_chunks", num_chunks, isinstance(num_chunks, int) and num_chunks >= 1, "an int >= 1")
        self.target_len = target_len
        self.num_chunks = num_chunks
        self._init_inner(inner, inner_kwargs)

    def chunk_lengths(self, seq_len: int) -> list[int]:
        """Random chunk lengths l_0..l_{N−1} (all ≥ 1, summing to ``seq_len``); N = min(num_chunks, T)."""
        n = min(self.num_chunks, seq_len)
        if n == 1:
            return [seq_len]
        if n == 2:  # as in the released code: the first chunk is at most half the window
            first = self._randint(1, (seq_len + 1) // 2)
            return [first, seq_len - first]
        cuts = (torch.randperm(seq_len - 1, generator=self.generator)[: n - 1] + 1).sort().values.tolist()
        bounds = [0, *cuts, seq_len]
        return [b - a for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    def sample(self, seq_len: int, device: torch.device | str | None = None) -> Tensor:
        """Skip-wise ids for one training window, float32 (T,), strictly increasing, all < target_len."""
        if seq_len > self.target_len:
            raise ValueError(f"{self.id}: sequence length {seq_len} exceeds hyperparameter 'target_len' "
                             f"({self.target_len})")
        pieces, start, skip = [], 0, 0
        for i, length in enumerate(self.chunk_lengths(seq_len)):
            if i > 0:  # u_i ~ U{u_{i-1}, ..., L_t - T}; u_0 = 0
                skip = self._randint(skip, self.target_len - seq_len)
            pieces.append(torch.arange(length) + (start + skip))
            start += length
        return torch.cat(pieces).to(device=device, dtype=torch.float32)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", target_len={self.target_len}, num_chunks={self.num_chunks}"


def _gaussian_factor(u: float, factor: int, sigma: float) -> int:
    """CREAM's truncated-Gaussian draw of r ∈ {2, …, 2k} from a uniform u ∈ [0, 1) (released code): the inverse of
    the normal CDF Φ((x − (1 + k))/σ) on x ∈ [2, 2k], by interpolation on a 1000-point grid and clamped at the
    ends (so mass outside [2, 2k] lands on 2 or 2k), then floored."""
    x = np.linspace(2.0, 2.0 * factor, 1000)
    cdf = 0.5 * (1.0 + np.array([math.erf((v - (1.0 + factor)) / (sigma * math.sqrt(2.0))) for v in x]))
    return int(np.interp(u, cdf, x))


def cream_positions(seq_len: int, factor: int, edge: int, end: int) -> Tensor:
    """The CREAM position ids (T,) int64 for a window of T = ``seq_len`` tokens, given the edge length h (head =
    tail = h) and the middle segment's last id ``end``: head 0..h−1, middle
    end − m + 1..end (m = T − 2h), tail k·T − h..k·T − 1 (k = ``factor``)."""
    m = seq_len - 2 * edge
    return torch.cat((torch.arange(edge), torch.arange(end - m + 1, end + 1),
                      torch.arange(factor * seq_len - edge, factor * seq_len)))


@register
class CREAM(_TrainingSampler):
    """CREAM, Continuity-Relativity indExing with gAussian Middle (Wu, Zhao, Zheng, NeurIPS 2024, arXiv
    2406.07138; released code bigai-nlco/CREAM, ``src/train.py``, function ``CREAM``).

    A fine-tuning position sampler of the PoSE family: a training window of T tokens is cut into a head, a middle
    and a tail. With probability 1/2 head = tail = ⌊T/3⌋ ("relativity": the three parts cover long distances),
    otherwise head = tail = h small ("continuity"; the code uses 4·k at Llama 2's 4,096-token window, here
    ``small_edge``). The head keeps ids 0..head−1 and the tail takes the last ids of the target window,
    k·T − tail..k·T − 1, with k = ⌊L_t/T⌋ (``target_len`` L_t). The middle (m tokens) ends at

        end ~ U{⌊head + (m − 1)·r/2⌋, …, ⌊r·T/2⌋ − tail − 1},  r = ⌊F⁻¹(u)⌋ ∈ {2, …, 2k},

    where F is the normal CDF with mean 1 + k and standard deviation σ (``sigma``) restricted to [2, 2k] by
    clamping, u ~ U(0, 1): the "truncated Gaussian" that puts the middle segment near the middle of the target
    window most often (against "lost in the middle"). Ids strictly increase and stay below k·T ≤ L_t. Evaluation
    uses ``arange(T)``.

    As in the released code, the position ids are the middle of an interpolated RoPE: ``inner`` defaults to
    linear interpolation (``"pi"``) and, when ``inner_kwargs`` is None, an inner PE with a ``scale``
    hyperparameter gets scale = L_t/train_len (the code's ``rope_scaling_factor``); other inner PEs get their
    defaults. Differences from the released code: the code draws the head/tail choice once per batch of 3,000
    documents (here per window) and fills the middle and tail with the tokens found at those ids in a long
    document; the data pipeline here feeds contiguous windows, so only the ids are sampled (as for PoSE).
    Defaults: L_t = 8 × ``train_len`` (the paper's main runs extend Llama 2 from 4K to 32K), σ = 3 (the code's
    default ``sigma``).
    """

    id = "cream"
    applies_to = "rope"

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, inner: str = "pi",
                 target_len: int | None = None, sigma: float = 3.0, small_edge: int | None = None,
                 inner_kwargs: dict[str, Any] | None = None) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len)
        target_len = 8 * train_len if target_len is None else target_len
        self._check("target_len", target_len,
                    isinstance(target_len, int) and not isinstance(target_len, bool) and target_len >= train_len,
                    f"an int >= train_len ({train_len})")
        self._check("sigma", sigma, isinstance(sigma, (int, float)) and not isinstance(sigma, bool)
                    and math.isfinite(sigma) and sigma > 0, "a finite number > 0")
        factor = target_len // train_len
        small_edge = max(1, 4 * factor * train_len // 4096) if small_edge is None else small_edge
        self._check("small_edge", small_edge, isinstance(small_edge, int) and not isinstance(small_edge, bool)
                    and 1 <= small_edge < (train_len + 1) // 2, f"an int in [1, {(train_len + 1) // 2})")
        self.target_len, self.sigma, self.small_edge = target_len, float(sigma), small_edge
        if inner_kwargs is None and isinstance(inner, str) and inner in available() \
                and "scale" in spec(inner).hyperparameters:
            inner_kwargs = {"scale": target_len / train_len}
        self._init_inner(inner, inner_kwargs)

    def _uniform(self) -> float:
        return float(torch.rand((), generator=self.generator).item())

    def sample(self, seq_len: int, device: torch.device | str | None = None) -> Tensor:
        """CREAM ids for one training window, float32 (T,), strictly increasing, all < ``target_len``."""
        if seq_len > self.target_len:
            raise ValueError(f"{self.id}: sequence length {seq_len} exceeds hyperparameter 'target_len' "
                             f"({self.target_len})")
        if seq_len < 3:  # no head, middle and tail to place
            return torch.arange(seq_len, dtype=torch.float32, device=device)
        factor = self.target_len // seq_len
        relativity = self._uniform() < 0.5
        edge = seq_len // 3 if relativity else min(self.small_edge, (seq_len - 1) // 2)
        r = _gaussian_factor(self._uniform(), factor, self.sigma)
        m = seq_len - 2 * edge
        lo, hi = int(edge + (m - 1) * r / 2), (r * seq_len) // 2 - edge - 1
        end = self._randint(lo, hi)
        return cream_positions(seq_len, factor, edge, end).to(device=device, dtype=torch.float32)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", target_len={self.target_len}, sigma={self.sigma}"
