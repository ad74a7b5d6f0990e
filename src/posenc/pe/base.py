"""The one positional-encoding interface and the registry keyed by card id.

Position can enter a Transformer in three ways (added to x, a bias on the logits, a rotation of q/k); a
fourth, content-dependent one overrides :meth:`PositionalEncoding.logits`. Every hook is the identity by
default, so the base class itself is NoPE.

Conventions (see the book's conventions page):

* positions are explicit float tensors of shape ``(T,)``, never a length; the causal mask is built from them;
* logits are ``q·kᵀ/√d + bias``: the bias is added *after* the 1/√d scaling;
* a bias has shape ``(H, T, S)`` or, for token-dependent methods, ``(B, H, T, S)``; distances are
  ``rel = i − j`` (query minus key), which is ≥ 0 under the causal mask;
* any attention factor of a RoPE scaling is folded into the rotation (cos/sin), so it is applied once.

PE-wide tensors (cos/sin, bias) are computed once per forward: the model opens :meth:`scope` around a
forward pass and hooks memoise through :meth:`shared`.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor, nn

__all__ = [
    "PositionalEncoding",
    "register",
    "build",
    "available",
    "get_class",
    "causal_mask",
    "registered",
]


def causal_mask(q_pos: Tensor, k_pos: Tensor) -> Tensor:
    """Boolean ``(T, S)`` mask, True where key j may be attended by query i (``k_pos[j] <= q_pos[i]``)."""
    return k_pos[None, :] <= q_pos[:, None]


class PositionalEncoding(nn.Module):
    """Base class and NoPE: every hook is the identity.

    Subclasses set ``id`` (the card id) and override the hooks they need. Constructor arguments are
    keyword-only: the shared ``head_dim``, ``num_heads``, ``train_len`` and the method's own
    hyperparameters, which subclasses validate with :meth:`_check`.
    """

    id: ClassVar[str] = "nope"
    #: True for methods whose logits depend on positions only through i − j (checked by the tests).
    relative: ClassVar[bool] = False
    #: Registry id of the PE a model must be trained with before this method is applied (zero-shot or
    #: after a short fine-tune), e.g. "rope" for every RoPE scaling; None when the method trains itself.
    applies_to: ClassVar[str | None] = None
    #: True when the method derives its scaling from the current length itself (dynamic NTK, CLEX): its
    #: ``scale`` is a fixed configured factor, not the evaluation length's factor.
    dynamic: ClassVar[bool] = False
    #: True when ``bias``/``rotate`` differ between layers (the model then memoises them per layer).
    bias_per_layer: ClassVar[bool] = False

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int) -> None:
        super().__init__()
        self._check("head_dim", head_dim, head_dim > 0 and isinstance(head_dim, int), "a positive int")
        self._check("num_heads", num_heads, num_heads > 0 and isinstance(num_heads, int), "a positive int")
        self._check("train_len", train_len, train_len > 0 and isinstance(train_len, int), "a positive int")
        self.head_dim = head_dim
        self.num_heads = num_heads
        self.train_len = train_len
        self._memo: dict[Any, Any] | None = None
        self._tokens: Tensor | None = None

    # ------------------------------------------------------------------ validation helpers
    def _check(self, name: str, value: Any, ok: bool, expected: str) -> None:
        """Raise ``ValueError`` naming the hyperparameter when ``ok`` is False."""
        if not ok:
            raise ValueError(f"{type(self).id}: hyperparameter '{name}' must be {expected}, got {value!r}")

    @property
    def d_model(self) -> int:
        return self.head_dim * self.num_heads

    # ------------------------------------------------------------------ per-forward scope
    @contextmanager
    def scope(self, tokens: Tensor | None = None) -> Iterator[None]:
        """Open a forward pass: tensors built through :meth:`shared` are reused by every layer.

        ``tokens`` (B, T) is made available to token-dependent methods (e.g. BiPE's segmenter).
        """
        self._memo, self._tokens = {}, tokens
        try:
            yield
        finally:
            self._memo, self._tokens = None, None

    def shared(self, key: Any, fn: Callable[[], Any]) -> Any:
        """Return ``fn()``, computed once per :meth:`scope` for ``key`` (recomputed outside a scope).

        Keys should include ``id(q_pos), id(k_pos)``: within a scope the same position tensors are
        passed to every layer, so their ids identify them.
        """
        if self._memo is None:
            return fn()
        if key not in self._memo:
            self._memo[key] = fn()
        return self._memo[key]

    # ------------------------------------------------------------------ the hooks
    def positions(self, seq_len: int, *, training: bool = False, device: torch.device | str | None = None) -> Tensor:
        """Float positions ``(T,)`` for a sequence of ``seq_len`` tokens. Samplers override it in training."""
        return torch.arange(seq_len, dtype=torch.float32, device=device)

    def embed(self, x: Tensor, pos: Tensor) -> Tensor:
        """Token embeddings ``x`` (B, T, C) at positions ``pos`` (T,) → (B, T, C). Absolute PEs add here."""
        return x

    def rotate(self, q: Tensor, k: Tensor, q_pos: Tensor, k_pos: Tensor, *, layer: int = 0) -> tuple[Tensor, Tensor]:
        """Rotate queries (B, H, T, D) and keys (B, H, S, D). RoPE and its scalings override it."""
        return q, k

    def bias(self, q_pos: Tensor, k_pos: Tensor, *, layer: int = 0) -> Tensor | None:
        """Additive logit bias (H, T, S) or (B, H, T, S), added after the 1/√d scaling; None for none."""
        return None

    def logits(self, q: Tensor, k: Tensor, q_pos: Tensor, k_pos: Tensor, *, layer: int = 0) -> Tensor:
        """Pre-mask attention logits (B, H, T, S): rotate, then q·kᵀ/√d, plus the bias.

        This is the single definition of how position changes attention. The model's fast path
        (``scaled_dot_product_attention`` with the bias as a float mask) is used only when a subclass does
        not override this method, and a test checks that both paths agree.
        """
        q, k = self.rotate(q, k, q_pos, k_pos, layer=layer)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))
        b = self.bias(q_pos, k_pos, layer=layer)
        return att if b is None else att + b

    # ------------------------------------------------------------------ introspection
    @classmethod
    def overrides_logits(cls) -> bool:
        """True when the class defines its own :meth:`logits` (the model then takes the explicit path)."""
        return cls.logits is not PositionalEncoding.logits

    def extra_repr(self) -> str:
        return f"id={self.id}, head_dim={self.head_dim}, num_heads={self.num_heads}, train_len={self.train_len}"


# ---------------------------------------------------------------------- registry
_REGISTRY: dict[str, type[PositionalEncoding]] = {"nope": PositionalEncoding}

P = TypeVar("P", bound=type[PositionalEncoding])


def register(cls: P) -> P:
    """Class decorator: register ``cls`` under ``cls.id`` (the card id). Ids are unique."""
    pid = cls.id
    if not pid or pid in _REGISTRY and _REGISTRY[pid] is not cls:
        raise ValueError(f"positional encoding id {pid!r} is empty or already registered")
    _REGISTRY[pid] = cls
    return cls


@contextmanager
def registered(*classes: type[PositionalEncoding]) -> Iterator[None]:
    """Register ``classes`` for the duration of a ``with`` block (e.g. a PE tried out, or defined by a test)."""
    for cls in classes:
        register(cls)
    try:
        yield
    finally:
        for cls in classes:
            _REGISTRY.pop(cls.id, None)


def _load_all() -> None:
    # Importing the family modules registers their classes.
    from posenc.pe import absolute, bias, other, rope_scaling, rotary, sampling  # noqa: F401


def available() -> list[str]:
    """Sorted registry ids."""
    _load_all()
    return sorted(_REGISTRY)


def get_class(pe_id: str) -> type[PositionalEncoding]:
    _load_all()
    if pe_id not in _REGISTRY:
        import difflib

        close = difflib.get_close_matches(pe_id, list(_REGISTRY), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown positional encoding id {pe_id!r}{hint}")
    return _REGISTRY[pe_id]


def hyperparameters(pe_id: str) -> dict[str, Any]:
    """The method's own hyperparameters and their defaults (keyword arguments of its constructor)."""
    cls = get_class(pe_id)
    out: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        if not (isinstance(klass, type) and issubclass(klass, PositionalEncoding)):
            continue
        for name, p in inspect.signature(klass.__init__).parameters.items():
            if p.kind is p.KEYWORD_ONLY and name not in ("head_dim", "num_heads", "train_len"):
                out[name] = None if p.default is p.empty else p.default
    return out


def build(pe_id: str, *, head_dim: int, num_heads: int, train_len: int, **hparams: Any) -> PositionalEncoding:
    """Build the registered PE ``pe_id``. Unknown hyperparameters raise ``ValueError`` naming them."""
    cls = get_class(pe_id)
    known = hyperparameters(pe_id)
    unknown = sorted(set(hparams) - set(known))
    if unknown:
        allowed = ", ".join(sorted(known)) or "none"
        raise ValueError(f"{pe_id}: unknown hyperparameter(s) {', '.join(unknown)} (allowed: {allowed})")
    return cls(head_dim=head_dim, num_heads=num_heads, train_len=train_len, **hparams)
