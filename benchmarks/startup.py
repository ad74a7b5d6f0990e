"""Start-up time of the knowledge-base commands (each run is a fresh interpreter).

The target is ``posenc cite alibi`` in at most 0.5 s: these commands must not import torch, matplotlib or
pandas. Usage::

    .venv/bin/python benchmarks/startup.py            # 10 runs per command
    .venv/bin/python benchmarks/startup.py --runs 20 --root /path/to/repo

Prints a table (median, min, max wall time per command) and exits 1 when the median of ``posenc cite alibi``
is above the target.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET_S = 0.5
COMMANDS = [
    ["cite", "alibi"],
    ["cite", "alibi", "--format", "apa"],
    ["show", "alibi"],
    ["list"],
    ["query", "category~rope learnable=false"],
    ["validate"],
]


def posenc_command() -> list[str]:
    """The installed console script next to this interpreter, else ``python -m posenc.cli``."""
    script = Path(sys.executable).with_name("posenc")
    if script.is_file():
        return [str(script)]
    found = shutil.which("posenc")
    return [found] if found else [sys.executable, "-m", "posenc.cli"]


def time_once(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode not in (0, 1):  # validate exits 1 when it finds problems; that is still a timing
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="runs per command (default 10)")
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[1]), help="repository root")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")

    env = {**os.environ, "POSENC_ROOT": args.root}
    base = posenc_command()
    rows = []
    baseline = [time_once([sys.executable, "-c", "pass"], env) for _ in range(args.runs)]
    rows.append(["python -c pass", statistics.median(baseline), min(baseline), max(baseline)])
    medians = {}
    for cmd in COMMANDS:
        times = [time_once(base + cmd, env) for _ in range(args.runs)]
        label = "posenc " + " ".join(f"'{c}'" if " " in c else c for c in cmd)
        medians[label] = statistics.median(times)
        rows.append([label, medians[label], min(times), max(times)])

    from tabulate import tabulate

    print(f"{args.runs} runs per command, fresh process each; interpreter {sys.executable}")
    print(tabulate(rows, headers=["command", "median s", "min s", "max s"], floatfmt=".3f"))
    cite_median = medians["posenc cite alibi"]
    verdict = "ok" if cite_median <= TARGET_S else "ABOVE TARGET"
    print(f"posenc cite alibi: median {cite_median:.3f} s, target <= {TARGET_S} s: {verdict}")
    return 0 if cite_median <= TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
