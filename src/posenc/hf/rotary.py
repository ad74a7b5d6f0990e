"""Put a posenc method into a Hugging Face causal LM: :func:`apply` and the rotary module it installs.

The model's rotary-embedding module (``model.model.rotary_emb``, called once per forward with the
``position_ids``, its cos/sin passed to every layer) is replaced by :class:`PosencRotaryEmbedding`, which
holds the posenc PE and builds its :class:`~posenc.pe.context.PositionContext` once per forward:

* ``rotary`` methods: it returns the PE's cos/sin (attention factor included) in the model's rotate-half
  layout, ``cat(cos, cos)`` over the head dimension: pair i of posenc (dims 2i, 2i + 1) is the model's pair
  (i, i + d/2) with the same θ_i, so the logits are posenc's logits after that fixed permutation of dims.
* ``attention`` methods: it returns cos = 1, sin = 0 (no rotation), and the model's attention implementation
  is set to the posenc attention function (:mod:`posenc.hf.attention`), which reads the context from here.

The weights are untouched; the model's config is not changed either, so a saved checkpoint reloads without
the method (re-apply it, or for native methods save :func:`posenc.hf.to_rope_parameters` in the config).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor, nn

from posenc.hf import attention as A
from posenc.hf.support import ARCHITECTURES, Kind, UnsupportedError, check_supported, inherits_base
from posenc.pe import spec
from posenc.pe.base import PositionalEncoding
from posenc.pe.context import PositionContext

__all__ = ["PosencRotaryEmbedding", "apply", "config_dims", "model_dims", "rotary_owner"]

AttentionPath = Literal["auto", "attention"]


class PosencRotaryEmbedding(nn.Module):
    """Drop-in for transformers' ``LlamaRotaryEmbedding`` (and its copies): ``forward(x, position_ids)`` →
    cos, sin (P, T, head_dim) in ``x``'s dtype, P = ``position_ids.size(0)``.

    ``pe``: the posenc PE (a submodule: it follows ``model.to(device)``, and a learnable PE's parameters are
    the model's); ``kind``: ``rotary`` or ``attention`` (see the module docstring); ``chunk_mb``: memory cap
    of one float32 logits chunk on the attention path. ``method``/``hparams`` record what was applied.
    """

    def __init__(self, pe: PositionalEncoding, kind: Kind, *, method: str, hparams: dict[str, Any],
                 original_attn_implementation: str, chunk_mb: float = 256.0) -> None:
        super().__init__()
        self.pe, self.kind, self.method, self.hparams = pe, kind, method, dict(hparams)
        self.original_attn_implementation = original_attn_implementation
        self.chunk_mb = float(chunk_mb)
        self._q_pos: Tensor | None = None  # (T,) float32 positions of this forward (attention kind)
        self._contexts: dict[tuple[int, int], PositionContext] = {}

    @property
    def head_dim(self) -> int:
        return self.pe.head_dim

    def forward(self, x: Tensor, position_ids: Tensor) -> tuple[Tensor, Tensor]:
        pos = position_ids if position_ids.dim() == 2 else position_ids[None]
        P, T = pos.shape
        rows = pos.float()
        same = P == 1 or bool((rows == rows[:1]).all())
        self._contexts = {}
        if self.kind == "attention":
            if not same:
                raise ValueError(f"posenc.hf ({self.method}): attention methods need the same position_ids in every "
                                 "batch row (no left padding); evaluate rows separately")
            self._q_pos = rows[0]
            ones = torch.ones(1, T, self.head_dim, dtype=x.dtype, device=x.device)
            return ones.expand(P, -1, -1), torch.zeros_like(ones).expand(P, -1, -1)
        if same:
            cos, sin = self._cos_sin(rows[0])
            return cos[None].expand(P, -1, -1).to(x.dtype), sin[None].expand(P, -1, -1).to(x.dtype)
        pairs = [self._cos_sin(r) for r in rows]  # each row its own context (its own current length)
        return (torch.stack([c for c, _ in pairs]).to(x.dtype), torch.stack([s for _, s in pairs]).to(x.dtype))

    def _cos_sin(self, pos: Tensor) -> tuple[Tensor, Tensor]:
        """posenc's cos/sin (T, d/2) at ``pos``, in rotate-half layout (T, d)."""
        ctx = self.pe.context(pos)
        cos, sin = ctx.get("cos_q"), ctx.get("sin_q")
        return torch.cat((cos, cos), dim=-1), torch.cat((sin, sin), dim=-1)

    def attention_context(self, T: int, S: int, device: torch.device, dtype: torch.dtype) -> PositionContext:
        """The context of this forward for T queries and S keys (keys at positions 0..S−1), built once and
        shared by every layer."""
        if (T, S) in self._contexts:
            return self._contexts[(T, S)]
        q_pos = self._q_pos
        if q_pos is None or q_pos.numel() != T:
            raise RuntimeError(f"posenc.hf ({self.method}): no positions for {T} queries; the rotary module must run "
                               "before attention in the same forward")
        q_pos = q_pos.to(device)
        if S == T:
            ctx = self.pe.context(q_pos, dtype=dtype)
        else:
            k_pos = torch.arange(S, dtype=torch.float32, device=device)
            if int(q_pos.max().item()) >= S:
                raise ValueError(f"posenc.hf ({self.method}): query positions up to {int(q_pos.max().item())} but "
                                 f"only {S} cached keys (keys are assumed at positions 0..{S - 1})")
            ctx = self.pe.context(q_pos, k_pos, dtype=dtype)
        self._contexts[(T, S)] = ctx
        return ctx

    def extra_repr(self) -> str:
        hp = ", ".join(f"{k}={v!r}" for k, v in self.hparams.items())
        return f"method={self.method}, kind={self.kind}" + (f", {hp}" if hp else "")


# ---------------------------------------------------------------------- the model side
def rotary_owner(model: nn.Module) -> nn.Module:
    """The one submodule holding ``rotary_emb`` (``model.model`` for ``*ForCausalLM``)."""
    owners = [m for m in model.modules() if isinstance(getattr(m, "rotary_emb", None), nn.Module)]
    if len(owners) != 1:
        raise UnsupportedError(f"posenc.hf: expected one rotary_emb module in {type(model).__name__}, found "
                               f"{len(owners)}")
    return owners[0]


def _check_config(config: Any, what: str) -> None:
    model_type = getattr(config, "model_type", None)
    if model_type not in ARCHITECTURES:
        raise UnsupportedError(f"posenc.hf: model_type {model_type!r} ({what}) is not supported; "
                               f"supported: {', '.join(ARCHITECTURES)}")
    rp = getattr(config, "rope_parameters", None) or {}
    if "rope_theta" not in rp:
        raise UnsupportedError(f"posenc.hf: {model_type} config has per-layer-type rope_parameters "
                               f"({', '.join(map(str, rp)) or 'none'}); one global RoPE is supported")
    if rp.get("partial_rotary_factor", 1.0) != 1.0 and rp.get("rope_type") != "proportional":
        raise UnsupportedError(f"posenc.hf: partial_rotary_factor={rp['partial_rotary_factor']} (partial rotation) "
                               "is not supported")


def config_dims(config: Any, what: str = "config") -> dict[str, Any]:
    """head_dim, num_heads, the original context L and rope_theta of a supported architecture's config.

    L is ``rope_parameters["original_max_position_embeddings"]`` when the checkpoint already has a scaling
    (e.g. Llama 3.1), else ``max_position_embeddings``. Unsupported configs raise
    :class:`~posenc.hf.support.UnsupportedError` naming the supported architectures.
    """
    _check_config(config, what)
    rp = config.rope_parameters
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    train_len = rp.get("original_max_position_embeddings") or config.max_position_embeddings
    return {"head_dim": int(head_dim), "num_heads": int(config.num_attention_heads), "train_len": int(train_len),
            "rope_theta": float(rp["rope_theta"])}


def model_dims(model: nn.Module) -> dict[str, Any]:
    """:func:`config_dims` of ``model.config``."""
    return config_dims(getattr(model, "config", None), type(model).__name__)


def _with_model_base(method_id: str, hparams: dict[str, Any], theta: float) -> dict[str, Any]:
    """``hparams`` with ``base`` = the model's θ where the method inherits the model's base (and, for a PE
    wrapping another, in ``inner_kwargs``), unless given."""
    s, out = spec(method_id), dict(hparams)
    if inherits_base(s) and "base" not in out:
        out["base"] = theta
    if "inner" in s.hyperparameters and "inner_kwargs" in s.hyperparameters:
        inner = out.get("inner", s.hyperparameters["inner"])
        kw = dict(out.get("inner_kwargs") or {})
        if isinstance(inner, str) and inherits_base(spec(inner)) and "base" not in kw:
            out["inner_kwargs"] = {**kw, "base": theta}
    return out


def apply(model: nn.Module, method_id: str, *, train_len: int | None = None, path: AttentionPath = "auto",
          chunk_mb: float = 256.0, **hparams: Any) -> nn.Module:
    """Put posenc's ``method_id`` with ``hparams`` into ``model`` (a Hugging Face causal LM of a supported
    architecture, :data:`~posenc.hf.support.ARCHITECTURES`) and return the model; weights are untouched.

    ``head_dim``, ``num_heads`` and ``train_len`` (the original context L) come from the config
    (:func:`model_dims`; ``train_len`` may be given); ``base`` defaults to the checkpoint's ``rope_theta``
    unless the method sets its own base (:func:`~posenc.hf.support.inherits_base`). ``path="attention"``
    sends a ``rotary`` method through the posenc attention function too (for checks and attention maps).
    Applying again replaces the previous method. Unsupported models or methods raise
    :class:`~posenc.hf.support.UnsupportedError` naming what is supported; bad hyperparameters ``ValueError``.
    """
    if path not in ("auto", "attention"):
        raise ValueError(f"posenc.hf.apply: 'path' must be 'auto' or 'attention', got {path!r}")
    if not (isinstance(chunk_mb, (int, float)) and not isinstance(chunk_mb, bool) and chunk_mb > 0
            and math.isfinite(chunk_mb)):
        raise ValueError(f"posenc.hf.apply: 'chunk_mb' must be a number > 0, got {chunk_mb!r}")
    dims = model_dims(model)
    s = spec(method_id)  # unknown id: ValueError with close matches
    L = dims["train_len"] if train_len is None else train_len
    hp = _with_model_base(method_id, hparams, dims["rope_theta"])
    pe = s.build(head_dim=dims["head_dim"], num_heads=dims["num_heads"], train_len=L, **hp)
    kind: Kind = check_supported(method_id, pe)
    if path == "attention":
        kind = "attention"
    owner = rotary_owner(model)
    old = owner.rotary_emb
    original = (old.original_attn_implementation if isinstance(old, PosencRotaryEmbedding)
                else model.config._attn_implementation)
    ref = next(model.parameters(), None)
    pe = pe.to(ref.device) if ref is not None else pe
    pe.train(model.training)
    rotary = PosencRotaryEmbedding(pe, kind, method=method_id, hparams=hp, original_attn_implementation=original,
                                   chunk_mb=chunk_mb)
    owner.rotary_emb = rotary
    if kind == "attention":
        A.register()
        for m in model.modules():
            if hasattr(m, "layer_idx") and hasattr(m, "num_key_value_groups"):
                A.bind(m, rotary)
        model.set_attn_implementation(A.ATTN_IMPLEMENTATION)
    elif model.config._attn_implementation != original:
        model.set_attn_implementation(original)
    return model
