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

Per forward, the model builds one :class:`~posenc.pe.context.PositionContext` with :meth:`context`; the PE's
:meth:`prepare` computes its position tensors (cos/sin, bias) into it once, and every hook reads them from
the context it is given.

This module holds the interface and the registry only; importing :mod:`posenc.pe` imports the family
modules, whose ``@register`` (and ``@rope_scaling``) decorators fill the registry.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, Literal, TypeVar

import torch
from torch import Tensor, nn

from posenc.pe.context import PositionContext, PositionOrder, causal_mask

__all__ = [
    "PositionalEncoding",
    "PositionContext",
    "MethodSpec",
    "ScalePolicy",
    "register",
    "register_spec",
    "spec",
    "build",
    "available",
    "get_class",
    "hyperparameters",
    "causal_mask",
    "registered",
]

#: How an experiment sets ``scale`` for zero-shot evaluation at length l (training length L):
#: ``"per_length"``: static scalings use s = l/L; ``"fixed"``: methods that adapt to the current length
#: themselves keep their configured factor; None: the method has no extension factor.
ScalePolicy = Literal["per_length", "fixed"] | None

SHARED_ARGS = ("head_dim", "num_heads", "train_len")


def _positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


class PositionalEncoding(nn.Module):
    """Base class and NoPE: every hook is the identity.

    Subclasses set ``id`` (the card id) and override the hooks they need. Constructor arguments are
    keyword-only: the shared ``head_dim``, ``num_heads``, ``train_len`` and the method's own
    hyperparameters, which subclasses validate with :meth:`_check`.

    Class-level traits (copied into the method's :class:`MethodSpec`):

    * ``relative``: logits depend on positions only through i − j (checked by the tests);
    * ``applies_to``: registry id of the PE a model must be trained with before this method is applied
      (zero-shot or after a short fine-tune), e.g. "rope"; None when the method trains itself;
    * ``learnable``: the PE has parameters trained with the model (checked by the tests);
    * ``scale_policy``: see :data:`ScalePolicy`;
    * ``static_bias``: :meth:`bias` depends only on positions and fixed hyperparameters (no parameters, no
      tokens), so the model may keep its float mask across forwards at fixed positions (checked by the tests);
    * ``bias_per_layer``: ``bias``/``rotate`` differ between layers (the model then builds masks per layer);
    * ``logits_halo``: rows before a query chunk that :meth:`logits` needs (DAPE v2's convolution);
    * ``designed_for``: the task of :mod:`posenc.tasks` a task-specific method was made for (e.g. "addition"
      for position coupling); the experiments train that task for it and for the baselines.
    """

    id: str = "nope"
    relative: bool = False
    applies_to: str | None = None
    learnable: ClassVar[bool] = False
    scale_policy: ScalePolicy = None
    static_bias: bool = False
    bias_per_layer: bool = False
    logits_halo: int = 0
    designed_for: ClassVar[str | None] = None

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int) -> None:
        super().__init__()
        self._check("head_dim", head_dim, _positive_int(head_dim), "a positive int")
        self._check("num_heads", num_heads, _positive_int(num_heads), "a positive int")
        self._check("train_len", train_len, _positive_int(train_len), "a positive int")
        self.head_dim = head_dim
        self.num_heads = num_heads
        self.train_len = train_len

    # ------------------------------------------------------------------ validation helpers
    def _check(self, name: str, value: Any, ok: bool, expected: str) -> None:
        """Raise ``ValueError`` naming the hyperparameter when ``ok`` is False."""
        if not ok:
            raise ValueError(f"{self.id}: hyperparameter '{name}' must be {expected}, got {value!r}")

    @property
    def d_model(self) -> int:
        return self.head_dim * self.num_heads

    # ------------------------------------------------------------------ the per-forward context
    def context(self, q_pos: Tensor, k_pos: Tensor | None = None, *, tokens: Tensor | None = None,
                dtype: torch.dtype = torch.float32, order: PositionOrder | None = None) -> PositionContext:
        """Build the position context for ``q_pos`` (T,) and ``k_pos`` (S,; default the same) and
        :meth:`prepare` this PE's tensors in it. The model calls it once per forward; standalone use:
        ``pe.logits(q, k, pe.context(pos))``."""
        ctx = PositionContext.build(q_pos, k_pos, tokens=tokens, dtype=dtype, order=order)
        self.prepare(ctx)
        return ctx

    def prepare(self, ctx: PositionContext) -> None:
        """Compute this PE's position tensors (cos/sin, bias, index maps) into ``ctx``, once per forward."""

    def positions(self, seq_len: int, *, training: bool = False, device: torch.device | str | None = None) -> Tensor:
        """Float positions ``(T,)`` for a sequence of ``seq_len`` tokens. Samplers override it in training."""
        return torch.arange(seq_len, dtype=torch.float32, device=device)

    def samples_positions(self, training: bool) -> bool:
        """True when :meth:`positions` may return anything but ``arange`` (they stay strictly increasing)."""
        return False

    # ------------------------------------------------------------------ the hooks
    def embed(self, x: Tensor, ctx: PositionContext) -> Tensor:
        """Token embeddings ``x`` (B, T, C) at positions ``ctx.q_pos`` → (B, T, C). Absolute PEs add here."""
        return x

    def rotate(self, q: Tensor, k: Tensor, ctx: PositionContext, layer: int = 0) -> tuple[Tensor, Tensor]:
        """Rotate queries (B, H, T, D) and keys (B, H, S, D). RoPE and its scalings override it."""
        return q, k

    def bias(self, ctx: PositionContext, layer: int = 0) -> Tensor | None:
        """Additive float32 logit bias (H, T, S) or (B, H, T, S), added after the 1/√d scaling; None for none."""
        return None

    def score_mod(self, ctx: PositionContext, layer: int = 0) -> Callable[..., Tensor] | None:
        """FlexAttention ``score_mod(score, b, h, q_idx, kv_idx)`` computing the bias in-kernel from
        positions, or None (the model then reads :meth:`bias`). Only methods whose bias is a cheap function
        of positions define it."""
        return None

    def logits(self, q: Tensor, k: Tensor, ctx: PositionContext, layer: int = 0) -> Tensor:
        """Pre-mask attention logits (B, H, T, S): rotate, then q·kᵀ/√d, plus the bias.

        This is the single definition of how position changes attention. The model's fast paths (SDPA with
        ``is_causal`` or the bias as a float mask, FlexAttention) are used only when a subclass does not
        override this method, and a test checks that every path agrees.
        """
        q, k = self.rotate(q, k, ctx, layer)
        att = (q @ k.transpose(-2, -1)) * q.size(-1) ** -0.5
        b = self.bias(ctx, layer)
        return att if b is None else att + b

    # ------------------------------------------------------------------ introspection
    @classmethod
    def overrides_logits(cls) -> bool:
        """True when the class defines its own :meth:`logits` (the model then takes the explicit path)."""
        return cls.logits is not PositionalEncoding.logits

    def extra_repr(self) -> str:
        return f"id={self.id}, head_dim={self.head_dim}, num_heads={self.num_heads}, train_len={self.train_len}"


# ---------------------------------------------------------------------- registry
@dataclass(frozen=True)
class MethodSpec:
    """Everything the registry knows about one card id.

    ``factory`` builds the PE (a class, or :class:`~posenc.pe.rope.ScaledRoPE` bound to a scaling type);
    ``cls`` is the class it returns; ``hyperparameters`` the method's own keyword arguments and defaults
    (the shared ``head_dim``, ``num_heads``, ``train_len`` excluded); the traits are those of
    :class:`PositionalEncoding`; ``explicit`` is True when the method overrides ``logits``.
    """

    id: str
    factory: Callable[..., PositionalEncoding]
    cls: type[PositionalEncoding]
    hyperparameters: Mapping[str, Any]
    applies_to: str | None = None
    relative: bool = False
    learnable: bool = False
    scale_policy: ScalePolicy = None
    explicit: bool = False
    designed_for: str | None = None

    def build(self, *, head_dim: int, num_heads: int, train_len: int, **hparams: Any) -> PositionalEncoding:
        """Build the PE; unknown hyperparameters raise ``ValueError`` naming them."""
        unknown = sorted(set(hparams) - set(self.hyperparameters))
        if unknown:
            allowed = ", ".join(sorted(self.hyperparameters)) or "none"
            raise ValueError(f"{self.id}: unknown hyperparameter(s) {', '.join(unknown)} (allowed: {allowed})")
        return self.factory(head_dim=head_dim, num_heads=num_heads, train_len=train_len, **hparams)


def class_hyperparameters(cls: type[PositionalEncoding], stop: type | None = None) -> dict[str, Any]:
    """Keyword-only constructor arguments (and defaults) along ``cls``'s MRO, shared ones excluded.

    ``stop``: a base class whose own arguments (and those of its bases) are not included.
    """
    skip = set(SHARED_ARGS)
    if stop is not None:
        skip |= set(class_hyperparameters(stop)) | {"scaling"}
    out: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        if not (isinstance(klass, type) and issubclass(klass, PositionalEncoding)):
            continue
        for name, p in inspect.signature(klass.__init__).parameters.items():
            if p.kind is p.KEYWORD_ONLY and name not in skip:
                out[name] = None if p.default is p.empty else p.default
    return out


_REGISTRY: dict[str, MethodSpec] = {}

P = TypeVar("P", bound=type[PositionalEncoding])


def register_spec(s: MethodSpec) -> MethodSpec:
    """Register a spec under its id. Ids are unique."""
    if not s.id or (s.id in _REGISTRY and _REGISTRY[s.id].factory is not s.factory):
        raise ValueError(f"positional encoding id {s.id!r} is empty or already registered")
    _REGISTRY[s.id] = s
    return s


def register(cls: P) -> P:
    """Class decorator: register ``cls`` under ``cls.id`` (the card id), with its class-level traits."""
    register_spec(MethodSpec(
        id=cls.id, factory=cls, cls=cls, hyperparameters=MappingProxyType(class_hyperparameters(cls)),
        applies_to=cls.applies_to, relative=bool(cls.relative), learnable=bool(cls.learnable),
        scale_policy=cls.scale_policy, explicit=cls.overrides_logits(), designed_for=cls.designed_for,
    ))
    return cls


register(PositionalEncoding)  # NoPE


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


def available() -> list[str]:
    """Sorted registry ids."""
    return sorted(_REGISTRY)


def spec(pe_id: str) -> MethodSpec:
    """The registry entry of ``pe_id``; unknown ids raise ``ValueError`` with close matches."""
    if not isinstance(pe_id, str) or pe_id not in _REGISTRY:
        close = difflib.get_close_matches(pe_id, list(_REGISTRY), n=3) if isinstance(pe_id, str) else []
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown positional encoding id {pe_id!r}{hint}")
    return _REGISTRY[pe_id]


def get_class(pe_id: str) -> type[PositionalEncoding]:
    """The class :func:`build` returns for ``pe_id`` (several RoPE scalings share ``ScaledRoPE``: read
    their traits from :func:`spec`)."""
    return spec(pe_id).cls


def hyperparameters(pe_id: str) -> dict[str, Any]:
    """The method's own hyperparameters and their defaults."""
    return dict(spec(pe_id).hyperparameters)


def build(pe_id: str, *, head_dim: int, num_heads: int, train_len: int, **hparams: Any) -> PositionalEncoding:
    """Build the registered PE ``pe_id``. Unknown or invalid hyperparameters raise ``ValueError`` naming them."""
    return spec(pe_id).build(head_dim=head_dim, num_heads=num_heads, train_len=train_len, **hparams)
