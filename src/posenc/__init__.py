"""posenc: a reproducible atlas of positional encodings for Transformer length extrapolation.

Importing the package stays light (no torch); :func:`build` and :func:`available` import the
implementations on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["build", "available", "__version__"]

if TYPE_CHECKING:
    from posenc.pe.base import PositionalEncoding


def build(pe_id: str, *, head_dim: int, num_heads: int, train_len: int, **hparams: Any) -> PositionalEncoding:
    """Build the positional encoding registered under card id ``pe_id`` (see :mod:`posenc.pe.base`)."""
    from posenc.pe.base import build as _build

    return _build(pe_id, head_dim=head_dim, num_heads=num_heads, train_len=train_len, **hparams)


def available() -> list[str]:
    """Registry ids of every implemented positional encoding."""
    from posenc.pe.base import available as _available

    return _available()
