"""Tiny random-weight models for the tests (built from configs, nothing downloaded): a short original context
L and weights large enough that attention is far from uniform, so a wrong rotation or mask changes the logits
visibly."""

from __future__ import annotations

from typing import Any

import torch

from posenc.hf.tiny import tiny_model

#: The tiny models' original context; the ``tokens`` fixture (80 tokens) is 2.5 L.
L = 32


def tiny(arch: str = "llama", **overrides: Any) -> torch.nn.Module:
    """A tiny model with max_position_embeddings = L and initializer_range = 0.2 (same seed, same weights)."""
    return tiny_model(arch, **{"max_position_embeddings": L, "initializer_range": 0.2, **overrides})


def logits(model: torch.nn.Module, x: torch.Tensor, **kw: Any) -> torch.Tensor:
    with torch.no_grad():
        return model(x, use_cache=False, **kw).logits


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
