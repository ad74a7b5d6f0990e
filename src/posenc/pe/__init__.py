"""Positional encodings, one module per family; :mod:`posenc.pe.base` holds the interface and registry.

Importing this package imports every family module, whose decorators fill the registry.
"""

from posenc.pe import (  # noqa: F401  (registers)
    absolute,
    beyond_softmax,
    bias,
    hybrid_layers,
    multiplicative,
    other,
    remapping,
    rope,
    rope_extensions,
    rotary,
    rotary_hybrids,
    sampling,
    task_positions,
    wavelet,
)
from posenc.pe.base import (
    MethodSpec,
    PositionalEncoding,
    PositionContext,
    available,
    build,
    get_class,
    hyperparameters,
    register,
    spec,
)

__all__ = ["MethodSpec", "PositionContext", "PositionalEncoding", "available", "build", "get_class",
           "hyperparameters", "register", "spec"]
