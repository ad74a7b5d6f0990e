"""The ``posenc`` command.

Each group of subcommands lives in a module of :mod:`posenc.commands` that exposes
``add_parsers(subparsers)``; handlers import their heavy dependencies (torch, matplotlib) lazily, so
``list``, ``show``, ``query``, ``cite`` and ``validate`` start without them.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from posenc import __version__

# Modules that contribute subcommands, in help order. Missing ones are an error, never skipped.
COMMAND_MODULES = ("posenc.commands.taxonomy", "posenc.commands.run", "posenc.commands.hf", "posenc.commands.book")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="posenc",
        description="A reproducible atlas of positional encodings for Transformer length extrapolation.",
    )
    parser.add_argument("--version", action="version", version=f"posenc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except BrokenPipeError:  # e.g. `posenc list | head`
        return 0
    except KeyboardInterrupt:  # commands that write say what they kept; the others write nothing
        print(f"\nposenc {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
