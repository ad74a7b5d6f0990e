"""posenc: a reproducible atlas of positional encodings for Transformer length extrapolation.

Importing the package stays light (no torch); :func:`build` and :func:`available` import
:mod:`posenc.pe` (which registers every implementation) on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["build", "available", "__version__"]

if TYPE_CHECKING:
    from posenc.pe import PositionalEncoding


def build(pe_id: str, *, head_dim: int, num_heads: int, train_len: int, **hparams: Any) -> PositionalEncoding:
    """Build the positional encoding registered under card id ``pe_id`` (see :mod:`posenc.pe.base`).

    Unknown ids, unknown hyperparameters and invalid values (wrong types included) raise ``ValueError``
    naming the id or the parameter.
    """
    from posenc.pe import build as _build  # lazy: importing posenc must not import torch

    return _build(pe_id, head_dim=head_dim, num_heads=num_heads, train_len=train_len, **hparams)


def available() -> list[str]:
    """Registry ids of every implemented positional encoding."""
    from posenc.pe import available as _available  # lazy: importing posenc must not import torch

    return _available()
