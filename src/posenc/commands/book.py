"""``posenc book``: generate the book's pages from the cards and results, then build the HTML book."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from posenc.commands import examples


def add_parsers(sub: Any) -> None:  # argparse's private _SubParsersAction type
    """Register ``posenc book`` on ``sub``."""
    p = sub.add_parser(
        "book",
        help="generate the book pages and build _build/html (warnings are errors)",
        description="Generate book/generated/ and _toc.yml from taxonomy/ and results/, then build the "
        "Jupyter Book with 'jupyter-book build . -W -n --keep-going'. Exits non-zero on any warning. The book "
        "publishes the results of the gpu preset, else cpu, else smoke (current protocol only).",
        **examples("posenc book", "posenc book --no-build", "posenc book --strict --build-dir /tmp/posenc-book"),
    )
    p.add_argument("--no-build", action="store_true", help="only generate the pages and _toc.yml")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--strict", dest="keep_going", action="store_false",
                      help="stop at the first warning")
    mode.add_argument("--keep-going", dest="keep_going", action="store_true",
                      help="report every warning before failing (default)")
    p.set_defaults(keep_going=True)
    p.add_argument("--all", dest="all_files", action="store_true",
                   help="rebuild every page, not only the changed ones")
    p.add_argument("--build-dir", default=None,
                   help="output folder (default: <repo>/_build); the HTML goes to <build-dir>/html")
    p.add_argument("--root", default=None, help="repository root (default: found from the current directory)")
    p.set_defaults(handler=_book)


def _book(args: argparse.Namespace) -> int:
    try:
        return _generate_and_build(args)
    except KeyboardInterrupt:
        print("\nposenc book: interrupted; the pages written so far are kept (each whole) and the HTML build is "
              "incomplete; rerun posenc book to finish", file=sys.stderr)
        return 130


def _generate_and_build(args: argparse.Namespace) -> int:
    from posenc import book  # pandas/itables only when the command runs

    try:
        gen = book.generate(args.root)
    except ValueError as exc:  # unreadable card or tree (TaxonomyError is a ValueError): say which file
        print(f"posenc book: {exc}", file=sys.stderr)
        return 2
    n_methods = sum(1 for f in gen.files if f.startswith(f"{book.GENERATED}/methods/"))
    print(f"generated {len(gen.files)} files ({n_methods} method pages): {len(gen.changed)} changed, "
          f"{len(gen.removed)} removed")
    if args.no_build:
        return 0
    res = book.build(args.root, args.build_dir, strict=True, keep_going=args.keep_going,
                     all_files=args.all_files)
    if res.returncode != 0:
        tail = "\n".join(res.log.splitlines()[-40:])
        print(tail, file=sys.stderr)
        if res.warnings:
            print(f"\n{len(res.warnings)} warning(s):", file=sys.stderr)
            for w in res.warnings:
                print(f"  {w}", file=sys.stderr)
        print(f"build FAILED after {res.seconds:.1f} s", file=sys.stderr)
        return res.returncode or 1
    print(f"built {res.index} in {res.seconds:.1f} s")
    return 0
