"""Configuration checks that must fail a run rather than produce a misleading result.

:func:`check_distinct`: under a preset's protocol hyperparameters a method can degenerate into one it is
related to — e.g. Entropy-ABF leaves its first 2 layers unscaled, so on a 2-layer model it *is* ABF. Such a
run would publish one set of numbers under two names; it is an error naming both methods and the reason.
"""

from __future__ import annotations

import torch

from posenc.cards import find_card
from posenc.experiment.spec import RunSpec
from posenc.pe import base as pe_base

__all__ = ["relatives", "check_distinct"]


def relatives(method: str) -> list[str]:
    """Implemented methods the card says this one builds on or is a variant of, and the base it is applied to."""
    card = find_card(method)
    rel = card.get("relations") or {} if card is not None else {}
    ids = set(rel.get("builds_on") or []) | set(rel.get("variant_of") or [])
    base = pe_base.spec(method).applies_to
    if base:
        ids.add(base)
    ids.discard(method)
    return sorted(i for i in ids if i in pe_base.available())


def _probe(pe: pe_base.PositionalEncoding, n_layer: int, q: torch.Tensor, k: torch.Tensor, x: torch.Tensor,
           tokens: torch.Tensor, training: bool) -> list[torch.Tensor | str]:
    """The PE's positions, embedding and every layer's logits on a fixed probe, in one mode."""
    length = q.size(-2)
    pe.train(training)
    torch.manual_seed(0)  # samplers draw the same way on both sides
    try:
        pos = pe.positions(length, training=training)
        ctx = pe.context(pos, tokens=tokens)
        return [pos, pe.embed(x, ctx), *(pe.logits(q, k, ctx, layer) for layer in range(n_layer))]
    except (ValueError, IndexError) as e:  # e.g. a learned table that stops at its length
        return [f"{type(e).__name__}"]


def _signature(spec: RunSpec, method_spec: RunSpec, probes: list[tuple[torch.Tensor, ...]]
               ) -> list[torch.Tensor | str]:
    """What a PE does to fixed probes at 1× and 4× the training length, in evaluation and training mode."""
    out: list[torch.Tensor | str] = []
    with torch.no_grad():
        for q, k, x, tokens in probes:
            torch.manual_seed(0)  # learned PEs: the same initialisation for both sides of the comparison
            pe = method_spec.pe(method_spec.scale_for(q.size(-2)))
            for training in (False, True):
                out += _probe(pe, spec.preset.n_layer, q, k, x, tokens, training)
    return out


def _same(a: list[torch.Tensor | str], b: list[torch.Tensor | str]) -> bool:
    if len(a) != len(b):
        return False
    for u, v in zip(a, b, strict=True):
        if isinstance(u, str) or isinstance(v, str):
            if u != v:
                return False
        elif u.shape != v.shape or not torch.allclose(u.float(), v.float(), atol=1e-6, rtol=1e-5):
            return False
    return True


def check_distinct(spec: RunSpec) -> None:
    """Raise ``ValueError`` when ``spec``'s method computes exactly what a related method computes under the
    same preset (its embedding and every layer's attention logits on a probe at 4× the training length)."""
    p = spec.preset
    g = torch.Generator().manual_seed(1234)
    probes = []
    for length in (p.train_len, 4 * p.train_len):
        probes.append((torch.randn(1, p.n_head, length, p.head_dim, generator=g),
                       torch.randn(1, p.n_head, length, p.head_dim, generator=g),
                       torch.randn(1, length, p.d_model, generator=g),
                       torch.randint(0, 256, (1, length), generator=g)))
    mine = _signature(spec, spec, probes)
    for other in relatives(spec.method):
        o = RunSpec.create(other, p, spec.seed, overrides=dict(spec.overrides), device=spec.device)
        if o.applies_to != spec.applies_to:
            continue  # trained differently (e.g. DroPE is NoPE applied to a RoPE model, NoPE trains from scratch)
        if _same(mine, _signature(spec, o, probes)):
            raise ValueError(
                f"{spec.method}: under preset {p.name!r} (hyperparameters {dict(spec.hparams)}) it computes the "
                f"same positions, embeddings and attention logits as {other!r} at every layer, in training and "
                "evaluation; a protocol hyperparameter degenerates at this model size, so its result would repeat "
                "another method's under a new name")
