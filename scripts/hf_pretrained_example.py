"""Execute the book's worked example of ``notebooks/pretrained.ipynb`` (papermill) on a tiny random Llama written
to a temporary folder (nothing is downloaded) and write the executed copy to ``book/runs/pretrained_example.ipynb``.

Usage::

    .venv/bin/python scripts/hf_pretrained_example.py [--out book/runs/pretrained_example.ipynb]

Fails when the executed notebook contains an absolute path.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from posenc import paths
from posenc.hf.notebook import EXAMPLE, absolute_paths, execute


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None, help=f"executed notebook (default {EXAMPLE})")
    args = parser.parse_args()
    out = Path(args.out) if args.out else paths.find_root() / EXAMPLE
    execute(out)
    found = absolute_paths(out)
    if found:
        print(f"{paths.relative(out)} contains absolute paths: {', '.join(found)}", file=sys.stderr)
        return 1
    print(f"wrote {paths.relative(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
