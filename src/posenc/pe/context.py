"""The per-forward position context: positions, token ids and the tensors a PE precomputes from them.

Like gpt-fast's ``freqs_cis``, everything position-related that every layer needs is built once per forward,
before the layers run, and passed down explicitly:

* the model calls ``pe.context(q_pos, tokens=..., dtype=..., order=...)`` once per forward; the PE's
  :meth:`~posenc.pe.base.PositionalEncoding.prepare` fills the context with its tensors (cos/sin, bias,
  index maps) through :meth:`PositionContext.put`;
* every hook receives the context (``embed(x, ctx)``, ``rotate(q, k, ctx, layer)``, ``bias(ctx, layer)``,
  ``logits(q, k, ctx, layer)``) and reads them back with :meth:`PositionContext.get`;
* a PE that wraps another (randomized positions, PoSE, SSMax, DAPE's base bias) prepares its inner PE into a
  *child* context (:meth:`PositionContext.child_for`) and hands that child to the inner PE's hooks.

Each stored tensor records which of its dimensions run over queries and over keys, so a context can be cut
into query chunks (:meth:`PositionContext.rows`) for the model's memory-capped explicit attention path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

__all__ = ["PositionContext", "PositionOrder", "causal_mask"]

#: How the query and key positions are ordered:
#: ``"arange"``: one sequence, positions 0..T−1 (the plain causal order);
#: ``"increasing"``: one sequence (q_pos is k_pos), strictly increasing positions (samplers, shifts): the
#: causal mask built from positions is still the lower triangle;
#: ``"any"``: anything else (e.g. decoding, q ≠ k): the mask must be built from the positions.
PositionOrder = Literal["arange", "increasing", "any"]


def causal_mask(q_pos: Tensor, k_pos: Tensor) -> Tensor:
    """Boolean ``(T, S)`` mask, True where key j may be attended by query i (``k_pos[j] <= q_pos[i]``)."""
    return k_pos[None, :] <= q_pos[:, None]


def _detect_order(q_pos: Tensor, k_pos: Tensor) -> PositionOrder:
    """Inspect the positions (a host sync on accelerators; the model passes the order instead)."""
    if k_pos is not q_pos and not (k_pos.shape == q_pos.shape and torch.equal(k_pos, q_pos)):
        return "any"
    n = q_pos.numel()
    if torch.equal(q_pos, torch.arange(n, dtype=q_pos.dtype, device=q_pos.device)):
        return "arange"
    return "increasing" if bool((q_pos[1:] > q_pos[:-1]).all()) else "any"


@dataclass
class _Entry:
    value: Any
    q_dim: int | None
    k_dim: int | None
    make: Callable[[PositionContext], Any] | None = None  # a lazy entry: built from the context on first use


_UNSET = object()


@dataclass(eq=False)
class PositionContext:
    """Positions of one forward and the PE tensors built from them (see the module docstring).

    ``q_pos`` (T,) and ``k_pos`` (S,) are float32 positions (the same tensor in training and full-sequence
    evaluation); ``tokens`` (B, T) are the token ids or None; ``dtype`` is the working dtype of q and k (the
    model builds its float masks at this dtype). ``order`` says whether the causal mask is the plain lower
    triangle (:data:`PositionOrder`).
    """

    q_pos: Tensor
    k_pos: Tensor
    tokens: Tensor | None = None
    dtype: torch.dtype = torch.float32
    order: PositionOrder = "any"
    #: The inner PE's context, for PEs that wrap another one (set by the wrapper's ``prepare``).
    child: PositionContext | None = None
    _length: int | None = None
    _tensors: dict[str, _Entry] = field(default_factory=dict)

    @classmethod
    def build(cls, q_pos: Tensor, k_pos: Tensor | None = None, *, tokens: Tensor | None = None,
              dtype: torch.dtype = torch.float32, order: PositionOrder | None = None) -> PositionContext:
        """A context for positions ``q_pos`` (T,) and ``k_pos`` (S,; default: the same tensor).

        ``order=None`` inspects the positions; callers that know it (the model) pass it and avoid the sync.
        """
        if q_pos.dim() != 1:
            raise ValueError(f"positions must be a 1-D tensor (T,), got shape {tuple(q_pos.shape)}")
        k = q_pos if k_pos is None else k_pos
        if k.dim() != 1:
            raise ValueError(f"key positions must be a 1-D tensor (S,), got shape {tuple(k.shape)}")
        if order is None:
            order = _detect_order(q_pos, k)
        elif order != "any" and k is not q_pos:
            raise ValueError(f"order {order!r} needs one position tensor for queries and keys")
        return cls(q_pos=q_pos, k_pos=k, tokens=tokens, dtype=dtype, order=order)

    # ------------------------------------------------------------------ facts about the positions
    @property
    def device(self) -> torch.device:
        return self.q_pos.device

    @property
    def causal_order(self) -> bool:
        """True when the causal mask built from positions is the lower triangle (one increasing sequence)."""
        return self.order != "any"

    @property
    def length(self) -> int:
        """Current length l = largest position + 1, used by dynamic scalings (computed once, on demand)."""
        if self._length is None:
            if self.order == "arange":
                self._length = self.q_pos.numel()
            elif self.k_pos.numel() == 0:
                self._length = 0
            else:
                self._length = int(torch.maximum(self.q_pos.max(), self.k_pos.max()).item()) + 1
        return self._length

    def causal_mask(self) -> Tensor:
        """Boolean (T, S) mask from the positions, True where key j may be attended by query i."""
        if "causal_mask" not in self._tensors:
            self.put("causal_mask", causal_mask(self.q_pos, self.k_pos), q_dim=-2, k_dim=-1)
        return self.get("causal_mask")

    # ------------------------------------------------------------------ PE-owned tensors
    def put(self, name: str, value: Any, *, q_dim: int | None = None, k_dim: int | None = None) -> Any:
        """Store ``value`` under ``name``; ``q_dim``/``k_dim`` name its query and key dimensions (or None)."""
        if name in self._tensors:
            raise ValueError(f"position context: {name!r} is already set (prepare must build it once)")
        self._tensors[name] = _Entry(value, q_dim, k_dim)
        return value

    def put_lazy(self, name: str, make: Callable[[PositionContext], Any], *, q_dim: int | None = None,
                 k_dim: int | None = None) -> None:
        """Like :meth:`put`, but ``make(context)`` runs on the first :meth:`get` (at most once per context), so
        a tensor the model does not need (e.g. a bias whose float mask it kept from an earlier forward) is
        never built, and a query chunk (:meth:`rows`) builds only its own rows. ``make`` must depend on the
        context's positions only through ``q_pos``/``k_pos`` (and its length)."""
        if name in self._tensors:
            raise ValueError(f"position context: {name!r} is already set (prepare must build it once)")
        self._tensors[name] = _Entry(_UNSET, q_dim, k_dim, make)

    def get(self, name: str) -> Any:
        """The value stored under ``name`` by the PE's ``prepare``."""
        try:
            e = self._tensors[name]
        except KeyError:
            raise KeyError(f"position context has no {name!r}: build it with pe.context(...) (which calls "
                           f"pe.prepare), not PositionContext.build alone") from None
        if e.value is _UNSET:
            assert e.make is not None
            e.value, e.make = e.make(self), None
        return e.value

    def __contains__(self, name: str) -> bool:
        return name in self._tensors

    def child_for(self) -> PositionContext:
        """A fresh context with the same positions and tokens, for an inner PE (stored as ``child``)."""
        self.child = PositionContext(q_pos=self.q_pos, k_pos=self.k_pos, tokens=self.tokens, dtype=self.dtype,
                                     order=self.order, _length=self._length)
        return self.child

    def rows(self, start: int, stop: int, k_stop: int | None = None) -> PositionContext:
        """The context of queries ``start:stop`` against keys ``:k_stop`` (all keys by default).

        Every stored tensor is sliced along its query and key dimensions, children too; lazy entries not built
        yet are built for the chunk's positions only (so a chunk never materialises the whole (T, S) map).
        The length (used by dynamic scalings) stays that of the whole forward. Used by the chunked explicit
        attention path.
        """
        k_stop = self.k_pos.numel() if k_stop is None else k_stop
        out = PositionContext(q_pos=self.q_pos[start:stop], k_pos=self.k_pos[:k_stop], tokens=self.tokens,
                              dtype=self.dtype, order="any", _length=self.length)
        for name, e in self._tensors.items():
            if e.value is _UNSET and e.make is not None and (e.q_dim is not None or e.k_dim is not None):
                out._tensors[name] = _Entry(_UNSET, e.q_dim, e.k_dim, e.make)
                continue
            v = self.get(name)
            if e.q_dim is not None:
                v = v.narrow(e.q_dim, start, stop - start)
            if e.k_dim is not None:
                v = v.narrow(e.k_dim, 0, k_stop)
            out._tensors[name] = _Entry(v, e.q_dim, e.k_dim)
        if self.child is not None:
            out.child = self.child.rows(start, stop, k_stop)
        return out
