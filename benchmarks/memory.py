"""Peak memory of inference against length, one method per attention path (a script, not a test).

The model has the gpu preset's size (4 layers, d = 256, 8 heads; training length L = 128) and is evaluated
without autograd on one sequence of 1×…32×L tokens (up to 4096), for:

* ``rope`` on the fast path (SDPA with ``is_causal``, no mask);
* ``alibi`` on the mask path (the float mask, kept across forwards);
* ``cope`` on the explicit path, chunked under the default 64 MiB cap, and unchunked (a cap larger than any
  logits tensor) for comparison, up to ``--unchunked-max`` tokens.

Each (method, length) runs in a fresh process; the figure is that process's peak resident memory during
the forward minus its resident memory just before it (``ru_maxrss``), so it includes every temporary of
attention and of the PE. The evaluation batches of the gpu preset (65,536 tokens per batch) multiply the
attention part by the batch size B = 65536 / length::

    THP_MEM_ALLOC_ENABLE=1 .venv/bin/python benchmarks/memory.py --out benchmarks/memory.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
from pathlib import Path

N_LAYER, D_MODEL, N_HEAD, TRAIN_LEN = 4, 256, 8, 128
FACTORS = (1, 2, 4, 8, 16, 32)
CASES = {"rope (fast: is_causal SDPA)": ("rope", 64.0), "alibi (mask path)": ("alibi", 64.0),
         "cope (explicit, chunked ≤ 64 MiB)": ("cope", 64.0), "cope (explicit, unchunked)": ("cope", 1e9)}


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(pe_id: str, length: int, chunk_mb: float) -> None:
    """Run one forward and print {"peak_mib": ...} (peak RSS during the forward minus RSS before it)."""
    import torch

    import posenc
    from posenc.model import ModelConfig, Transformer

    torch.manual_seed(0)
    pe = posenc.build(pe_id, head_dim=D_MODEL // N_HEAD, num_heads=N_HEAD, train_len=TRAIN_LEN)
    cfg = ModelConfig(n_layer=N_LAYER, n_head=N_HEAD, d_model=D_MODEL, explicit_chunk_mb=chunk_mb)
    model = Transformer(cfg, pe).eval()
    tokens = torch.randint(0, 256, (1, length))
    with torch.no_grad():
        model(tokens[:, :16])  # warm up the kernels at a tiny length
        before = _rss_mib()
        model(tokens)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"peak_mib": max(0.0, peak - before)}))


def measure(pe_id: str, length: int, chunk_mb: float) -> float:
    out = subprocess.run([sys.executable, __file__, "--child", pe_id, str(length), str(chunk_mb)],
                         capture_output=True, text=True, check=True, env=os.environ)
    return float(json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"])


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--child", nargs=3, metavar=("ID", "LENGTH", "CHUNK_MB"), help=argparse.SUPPRESS)
    ap.add_argument("--unchunked-max", type=int, default=2048, help="longest length for unchunked CoPE")
    ap.add_argument("--factors", type=int, nargs="+", default=list(FACTORS), help="lengths in units of L")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), float(args.child[2]))
        return
    lengths = [f * TRAIN_LEN for f in args.factors]
    rows: dict[str, dict[int, float | None]] = {}
    for name, (pe_id, mb) in CASES.items():
        rows[name] = {}
        for T in lengths:
            skip = mb > 1e6 and T > args.unchunked_max
            rows[name][T] = None if skip else measure(pe_id, T, mb)
            print(name, T, rows[name][T], flush=True)
    thp = os.environ.get("THP_MEM_ALLOC_ENABLE", "unset")
    cmd = ("THP_MEM_ALLOC_ENABLE=1 " if thp == "1" else "") + ".venv/bin/python benchmarks/memory.py" + (
        f" --unchunked-max {args.unchunked_max}" if args.unchunked_max != 2048 else "")
    lines = [
        f"Command: `{cmd}`", "",
        f"Peak resident memory of one forward without autograd, minus the memory before it (MiB), batch 1; "
        f"gpu-preset model ({N_LAYER} layers, d={D_MODEL}, {N_HEAD} heads, L={TRAIN_LEN}); "
        f"{platform.processor() or platform.machine()}, THP_MEM_ALLOC_ENABLE={thp}. "
        "Growth: the ratio of each doubling of the length (2 = linear, 4 = quadratic).", "",
        "| method (path) | " + " | ".join(f"{T // TRAIN_LEN}× ({T})" for T in lengths) + " | growth per doubling |",
        "|---|" + "---|" * (len(lengths) + 1),
    ]
    for name, vals in rows.items():
        got = [(T, v) for T, v in vals.items() if v is not None]
        ratios = [b / a for (_, a), (_, b) in zip(got, got[1:], strict=False) if a > 1]
        growth = ", ".join(f"{r:.1f}" for r in ratios[-3:]) if ratios else "–"
        cells = " | ".join("–" if v is None else f"{v:,.0f}" for v in vals.values())
        lines.append(f"| {name} | {cells} | {growth} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
