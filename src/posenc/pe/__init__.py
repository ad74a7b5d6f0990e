"""Positional encodings, one module per family; :mod:`posenc.pe.base` holds the interface and registry."""

from posenc.pe.base import PositionalEncoding, available, build, get_class, register

__all__ = ["PositionalEncoding", "available", "build", "get_class", "register"]
