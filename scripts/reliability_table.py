"""Write the book's table of bad inputs and faults (``book/reliability_table.md``) from the list the tests check.

The cases, their exact messages and what is kept live in ``tests/reliability_cases.py``; each test asserts its
case's message, so this table says what the code does. ``tests/test_reliability_table.py`` fails when the
committed table differs from what this script writes.

    python scripts/reliability_table.py            # rewrite book/reliability_table.md
    python scripts/reliability_table.py --check    # exit 1 when it is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from reliability_cases import CASES, Case  # noqa: E402  (the tests folder is not a package)

TABLE = ROOT / "book" / "reliability_table.md"


class _Shown(dict):  # type: ignore[type-arg]
    """A message's fields shown as ``<name>``."""

    def __missing__(self, key: str) -> str:
        return f"<{key}>"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _message(c: Case) -> str:
    shown = c.message.format_map(_Shown())
    if shown.startswith("(") and shown.endswith(")"):  # what happens, not a message
        return _cell(shown[1:-1])
    return f"`{_cell(shown)}`"


def render() -> str:
    lines = [
        "<!-- Written by scripts/reliability_table.py from tests/reliability_cases.py: edit those, not this file. -->",
        "",
        "| # | Area | Bad input or fault | What the user gets | What is kept | Checked by |",
        "|---|---|---|---|---|---|",
    ]
    for i, c in enumerate(CASES.values(), 1):
        path, _, name = c.test.partition("::")
        lines.append(f"| {i} | {c.area} | {_cell(c.trigger)} | {_message(c)} | {_cell(c.kept)} | "
                     f"`{Path(path).name}::{name}` |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 when the committed table is out of date")
    args = ap.parse_args(argv)
    text = render()
    if args.check:
        if not TABLE.is_file() or TABLE.read_text(encoding="utf-8") != text:
            print(f"{TABLE.relative_to(ROOT)} is out of date: run python scripts/reliability_table.py",
                  file=sys.stderr)
            return 1
        return 0
    TABLE.write_text(text, encoding="utf-8")
    print(f"{len(CASES)} cases -> {TABLE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
