"""Subcommand groups of the posenc command line, and what their help texts share.

Every subcommand ends its ``--help`` with an ``examples:`` block, one command per line; ``tests/test_cli.py``
runs each of them, so an example that stops working fails the tests.
"""

from __future__ import annotations

import argparse

__all__ = ["HelpFormatter", "examples"]


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, except that an ``examples:`` epilog keeps one command per line."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("examples:"):
            return "".join(indent + line + "\n" for line in text.splitlines())
        return super()._fill_text(text, width, indent)


def examples(*commands: str) -> dict[str, object]:
    """``add_parser`` keywords for an examples epilog: ``sub.add_parser(name, ..., **examples(...))``."""
    return {"epilog": "examples:\n" + "\n".join(f"  {c}" for c in commands), "formatter_class": HelpFormatter}
