"""Time `posenc book` the way a fresh clone runs it: a clean build, then a rebuild with nothing changed.

The repository's files (tracked and untracked-but-not-ignored, as ``git ls-files`` lists them; without
``book/generated/``, ``_build/`` or results of earlier builds) are copied to a temporary folder and
``posenc book --root COPY`` runs there. With ``--offline`` (the default where ``unshare -n`` works, e.g. as
root on Linux) the build runs in a network namespace without network, which proves it needs none.

    .venv/bin/python benchmarks/book_build.py [--json OUT.json] [--online]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP_PREFIXES = ("book/generated/", "_build/", "test-artifacts/")


def repo_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                         capture_output=True, check=True).stdout.decode()
    return sorted(f for f in out.split("\0") if f and not f.startswith(SKIP_PREFIXES) and (ROOT / f).is_file())


def can_unshare() -> bool:
    try:
        return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0
    except FileNotFoundError:
        return False


def timed(cmd: list[str], cwd: Path) -> tuple[float, int, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    return time.perf_counter() - t0, proc.returncode, proc.stdout + proc.stderr


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="write the measurements to this JSON file")
    ap.add_argument("--online", action="store_true", help="do not cut the network off")
    args = ap.parse_args()
    posenc = str(Path(sys.executable).with_name("posenc"))
    offline = not args.online and can_unshare()
    with tempfile.TemporaryDirectory(prefix="posenc-book-bench-") as tmp:
        copy = Path(tmp) / "posenc"
        files = repo_files()
        for rel in files:
            dst = copy / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dst)
        cmd = [posenc, "book", "--root", str(copy)]
        if offline:
            cmd = ["unshare", "-n", *cmd]
        clean_s, rc, log = timed(cmd, copy)
        if rc != 0:
            print(log[-4000:], file=sys.stderr)
            print(f"clean build failed (exit {rc})", file=sys.stderr)
            return 1
        rebuild_s, rc2, log2 = timed(cmd, copy)
        if rc2 != 0:
            print(log2[-4000:], file=sys.stderr)
            return 1
        n_cards = len(list((copy / "taxonomy" / "methods").glob("*.yaml")))
        n_notebooks = len(list((copy / "book" / "runs").glob("*/*.ipynb")))
        html = copy / "_build" / "html"
        size_mb = sum(p.stat().st_size for p in html.rglob("*") if p.is_file()) / 2**20
    result = {
        "cards": n_cards, "executed_notebooks": n_notebooks, "clean_build_s": round(clean_s, 1),
        "rebuild_s": round(rebuild_s, 1), "html_mb": round(size_mb, 1), "offline": offline,
        "cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
        "files_copied": len(files),
    }
    print(json.dumps(result, indent=2))
    print(f"| {os.cpu_count()} CPU cores | {n_cards} | {n_notebooks} | {clean_s:.0f} s | {rebuild_s:.0f} s | "
          f"{size_mb:.0f} MB |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
