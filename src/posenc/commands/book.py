"""`posenc` subcommands of this group (see :mod:`posenc.cli`)."""

from __future__ import annotations

from typing import Any


def add_parsers(sub: Any) -> None:  # argparse's private _SubParsersAction type
    """Register this group's subcommands on ``sub``."""
