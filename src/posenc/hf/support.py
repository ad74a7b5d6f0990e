"""What :func:`posenc.hf.apply` supports, derived from the registry: methods, how each enters a Hugging Face
model, the architectures, and the transformers rope types that compute the same frequencies.

A registered method is **supported** when it is a RoPE-family method (a :class:`~posenc.pe.rope.RoPE`, a PE
wrapping one, or a method applied to RoPE models, ``applies_to == "rope"``) whose position enters only
through attention: no absolute embedding (``embed``) and no training-time position sampler
(``positions``), since a Hugging Face model takes its positions from ``position_ids``.

It enters the model in one of two ways (its **kind**):

* ``rotary``: the rotation is exactly RoPE's, with cos/sin that depend on the position alone (shared by
  every head and layer): the model keeps its own attention (SDPA, FlashAttention) and only its rotary module
  is replaced. PI, NTK, YaRN, Llama-3 scaling, LongRoPE, ABF ... are of this kind.
* ``attention``: anything else (index remapping, windows and sinks, logit temperatures, per-layer or
  per-head rotations): the rotary module becomes the identity and a posenc attention function, registered
  through transformers' ``AttentionInterface``, evaluates the method's own ``logits``.

:data:`NATIVE` maps the methods that transformers implements itself (``ROPE_INIT_FUNCTIONS``) to the rope type
and its ``rope_parameters``; the parity tests check each against transformers on several architectures.

Import cost: this module imports torch and :mod:`posenc.pe`, never transformers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Any, Literal

import torch

from posenc.pe import available, spec
from posenc.pe.base import MethodSpec, PositionalEncoding
from posenc.pe.rope import RoPE, default_longrope_factors

__all__ = ["ARCHITECTURES", "NATIVE", "Kind", "SupportRow", "UnsupportedError", "kind_of", "check_supported",
           "supported_methods", "to_rope_parameters", "support_table", "support_table_markdown", "inherits_base"]

Kind = Literal["rotary", "attention"]

#: Hugging Face ``model_type`` → name: causal LMs whose rotary module maps (x, position_ids) to rotate-half
#: cos/sin (B, T, head_dim) for every head, whose attention applies them with ``apply_rotary_pos_emb`` and
#: dispatches through ``ALL_ATTENTION_FUNCTIONS``, and whose logits are ``lm_head(last hidden state)``. Each
#: is exercised by the tests with a tiny random model (:func:`posenc.hf.tiny.tiny_model`).
ARCHITECTURES: Mapping[str, str] = MappingProxyType({
    "llama": "Llama", "mistral": "Mistral", "mixtral": "Mixtral", "qwen2": "Qwen2", "qwen2_moe": "Qwen2-MoE",
    "qwen3": "Qwen3", "qwen3_moe": "Qwen3-MoE", "olmo2": "OLMo 2",
})

_PROBE = {"head_dim": 64, "num_heads": 4, "train_len": 4096}  # shapes used to classify a method


class UnsupportedError(ValueError):
    """A method or model that :func:`posenc.hf.apply` cannot handle; the message names what is supported."""


# ---------------------------------------------------------------------- classification
def _overrides(pe: PositionalEncoding, hook: str) -> bool:
    return getattr(type(pe), hook) is not getattr(PositionalEncoding, hook)


def _inner(pe: PositionalEncoding) -> PositionalEncoding | None:
    inner = getattr(pe, "inner", None)
    return inner if isinstance(inner, PositionalEncoding) else None


def _embeds(pe: PositionalEncoding) -> bool:
    """True when the PE adds to the token embeddings (through a wrapped PE too)."""
    inner = _inner(pe)
    return _embeds(inner) if inner is not None else _overrides(pe, "embed")


def _why_unsupported(s: MethodSpec, pe: PositionalEncoding) -> str | None:
    inner = _inner(pe)
    if not (isinstance(pe, RoPE) or isinstance(inner, RoPE) or s.applies_to == "rope"):
        return "not a RoPE-family method (a Hugging Face checkpoint of this family was trained with RoPE)"
    if _overrides(pe, "positions"):
        return "a training-time position sampler (the model takes its positions from position_ids)"
    if _embeds(pe):
        return "adds an absolute encoding to the token embeddings"
    return None


def kind_of(pe: PositionalEncoding) -> Kind:
    """``rotary`` when ``pe``'s rotation is RoPE's with cos/sin shared by heads and layers, else ``attention``.

    The shared-cos/sin check prepares a two-position context and reads the shape of ``cos_q`` ((T, d/2) for
    a shared rotation; FoPE's per-head series is (H, T, d/2)).
    """
    cls = type(pe)
    if not isinstance(pe, RoPE) or cls.rotate is not RoPE.rotate or pe.overrides_logits() or _overrides(pe, "bias"):
        return "attention"
    was = pe.training
    pe.eval()  # CLEX draws its scale in training mode
    try:
        ctx = pe.context(torch.arange(2, dtype=torch.float32))
    finally:
        pe.train(was)
    cos = ctx.get("cos_q")
    return "rotary" if tuple(cos.shape) == (2, pe.head_dim // 2) else "attention"


def check_supported(method_id: str, pe: PositionalEncoding) -> Kind:
    """The kind of ``pe`` (built for ``method_id``), or :class:`UnsupportedError` naming the supported ids."""
    why = _why_unsupported(spec(method_id), pe)
    if why is not None:
        raise UnsupportedError(f"posenc.hf: method {method_id!r} is not supported: {why}. Supported: "
                               f"{', '.join(supported_methods())}")
    return kind_of(pe)


def _classified() -> tuple[tuple[str, Kind | None, str | None], ...]:
    """(id, kind or None, reason it is unsupported or None) for every registered method."""
    return _classify(tuple(available()))


@lru_cache(maxsize=4)
def _classify(ids: tuple[str, ...]) -> tuple[tuple[str, Kind | None, str | None], ...]:
    out = []
    for mid in ids:
        s = spec(mid)
        pe = s.build(**_PROBE)
        why = _why_unsupported(s, pe)
        out.append((mid, None if why else kind_of(pe), why))
    return tuple(out)


def supported_methods() -> list[str]:
    """Registry ids that :func:`posenc.hf.apply` accepts, sorted."""
    return [mid for mid, kind, _ in _classified() if kind is not None]


def inherits_base(s: MethodSpec) -> bool:
    """True when the method's ``base`` is RoPE's own default, i.e. "the model's base": applied to a model, it
    takes the checkpoint's ``rope_theta``. Methods whose point is another base (ABF, Code Llama, the RoPE
    scaling laws) keep theirs unless ``base`` is given."""
    return "base" in s.hyperparameters and s.hyperparameters["base"] == spec("rope").hyperparameters["base"]


# ---------------------------------------------------------------------- native transformers rope types
def _hp(method_id: str, hparams: Mapping[str, Any]) -> dict[str, Any]:
    s = spec(method_id)
    unknown = sorted(set(hparams) - set(s.hyperparameters))
    if unknown:
        raise ValueError(f"{method_id}: unknown hyperparameter(s) {', '.join(unknown)} "
                         f"(allowed: {', '.join(sorted(s.hyperparameters)) or 'none'})")
    return {**s.hyperparameters, **hparams}


def _native_longrope(hp: dict[str, Any], train_len: int, head_dim: int) -> dict[str, Any]:
    if hp["n_hat"]:
        raise UnsupportedError("longrope: hyperparameter 'n_hat' (leading positions kept unscaled) has no "
                               "transformers equivalent; use posenc.hf.apply for it")
    half = head_dim // 2
    out = {"factor": float(hp["scale"]), "original_max_position_embeddings": train_len,
           "long_factor": [float(v) for v in (hp["long_factors"] or default_longrope_factors(head_dim, hp["scale"]))],
           "short_factor": [float(v) for v in (hp["short_factors"] or [1.0] * half)]}
    if hp["attention_factor"] is not None:
        out["attention_factor"] = float(hp["attention_factor"])
    return out


@dataclass(frozen=True)
class NativeRope:
    """A transformers rope type computing the same frequencies and attention factor as a posenc method.

    ``params(hp, train_len, head_dim)`` gives the type's ``rope_parameters`` (besides ``rope_type`` and
    ``rope_theta``) from the method's resolved hyperparameters. ``note``: what transformers reads elsewhere.
    """

    rope_type: str
    params: Callable[[dict[str, Any], int, int], dict[str, Any]]
    note: str = ""
    #: Which of ``train_len`` and ``head_dim`` the parameters depend on (then :func:`to_rope_parameters` needs them).
    needs: tuple[str, ...] = ()


#: posenc id → transformers rope type (``transformers.modeling_rope_utils.ROPE_INIT_FUNCTIONS``).
NATIVE: Mapping[str, NativeRope] = MappingProxyType({
    "rope": NativeRope("default", lambda hp, L, d: {}),
    "pi": NativeRope("linear", lambda hp, L, d: {"factor": float(hp["scale"])}),
    "dynamic_ntk": NativeRope("dynamic", lambda hp, L, d: {"factor": float(hp["scale"])},
                              "transformers reads the original length L from config.max_position_embeddings, and "
                              "keeps the frequencies of the longest sequence seen until the length drops below L"),
    "yarn": NativeRope("yarn", lambda hp, L, d: {
        "factor": float(hp["scale"]), "original_max_position_embeddings": L,
        "beta_fast": float(hp["beta_fast"]), "beta_slow": float(hp["beta_slow"])}, needs=("train_len",)),
    "llama3_scaling": NativeRope("llama3", lambda hp, L, d: {
        "factor": float(hp["scale"]), "original_max_position_embeddings": L,
        "low_freq_factor": float(hp["low_freq_factor"]), "high_freq_factor": float(hp["high_freq_factor"])},
        "transformers warns unless config.max_position_embeddings > L", needs=("train_len",)),
    "longrope": NativeRope("longrope", _native_longrope, needs=("train_len", "head_dim")),
    "p_rope": NativeRope("proportional", lambda hp, L, d: {"partial_rotary_factor": float(hp["p"])}),
})


def to_rope_parameters(method_id: str, *, train_len: int | None = None, head_dim: int | None = None,
                       **hparams: Any) -> dict[str, Any]:
    """The transformers ``rope_parameters`` whose frequencies and attention factor equal posenc's
    ``method_id`` with these hyperparameters (``base`` becomes ``rope_theta``; defaults are posenc's), e.g.
    ``to_rope_parameters("pi", scale=4)``.

    ``train_len``: the original context L (``original_max_position_embeddings``), needed by YaRN, Llama-3
    scaling and LongRoPE; ``head_dim``: the attention head size, needed by LongRoPE (one factor per rotary
    pair). Raises :class:`UnsupportedError` listing the native methods when transformers has no such rope type.
    """
    if method_id not in NATIVE:
        spec(method_id)  # unknown ids: ValueError with close matches
        raise UnsupportedError(f"to_rope_parameters: transformers has no rope type for {method_id!r}; native "
                               f"methods: {', '.join(sorted(NATIVE))} (posenc.hf.apply supports "
                               f"{len(supported_methods())} methods)")
    nat = NATIVE[method_id]
    for name, v in (("train_len", train_len), ("head_dim", head_dim)):
        if v is None and name in nat.needs:
            raise ValueError(f"to_rope_parameters({method_id!r}): '{name}' is required")
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v <= 0):
            raise ValueError(f"to_rope_parameters: '{name}' must be a positive int, got {v!r}")
    hp = _hp(method_id, hparams)
    L, d = train_len or _PROBE["train_len"], head_dim or _PROBE["head_dim"]  # stand-ins where unused
    spec(method_id).build(head_dim=d, num_heads=1, train_len=L, **hparams)  # validates the values
    return {"rope_type": nat.rope_type, "rope_theta": float(hp["base"]), **nat.params(hp, L, d)}


# ---------------------------------------------------------------------- the support table
@dataclass(frozen=True)
class SupportRow:
    """One supported method: how it enters a model, its native transformers rope type, the architectures."""

    method: str
    kind: Kind
    hf_rope_type: str | None
    architectures: tuple[str, ...]
    learnable: bool


def support_table() -> list[SupportRow]:
    """A row per supported method, sorted by kind then id; computed from the registry and :data:`NATIVE`."""
    rows = [SupportRow(mid, kind, NATIVE[mid].rope_type if mid in NATIVE else None, tuple(ARCHITECTURES),
                       spec(mid).learnable) for mid, kind, _ in _classified() if kind is not None]
    return sorted(rows, key=lambda r: (r.kind != "rotary", r.method))


def support_table_markdown() -> str:
    """The support table as Markdown (the book's "Use posenc on your model" page), followed by the
    registered methods that are not applicable and why."""
    archs = ", ".join(f"{name} (`{mt}`)" for mt, name in ARCHITECTURES.items())
    lines = [f"Architectures (every row): {archs}.", "",
             "| method | kind | native transformers `rope_type` | parameters |",
             "|---|---|---|---|"]
    for r in support_table():
        native = f"`{r.hf_rope_type}` (parity tested)" if r.hf_rope_type else "—"
        learn = "learnable (initialised; train them with the model)" if r.learnable else "fixed"
        lines.append(f"| `{r.method}` | {r.kind} | {native} | {learn} |")
    reasons: dict[str, list[str]] = {}
    for mid, kind, why in _classified():
        if kind is None and why is not None:
            reasons.setdefault(why, []).append(f"`{mid}`")
    lines += ["", "Registered methods that do not apply to a pretrained RoPE model:", ""]
    lines += [f"- {why}: {', '.join(ids)}" for why, ids in reasons.items()]
    return "\n".join(lines) + "\n"
