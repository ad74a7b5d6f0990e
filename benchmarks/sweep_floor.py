"""The arithmetic floor of a whole sweep on this machine (a script, not a test).

How short can the sweep of a preset be on this CPU, whatever the code does? Its training alone sets a floor:

* **the work**: every (method, seed) unit's training steps, as the gpu sweep's dry run lists them
  (:func:`posenc.experiment.estimate.workload`: the language model, its fine-tune, the task models and their
  fine-tunes), each step's FLOPs counted by ``torch.utils.flop_counter`` on the reference model with the
  method's PE (forward and backward; the optimiser's few FLOPs per parameter are left out). Evaluation is left
  out too, so the floor is lower than the sweep can ever be;
* **the best rate**: a float32 matrix product of 1024³ on one thread, the fastest thing this core does
  (the median of several);
* **the achieved rate**: one real training step of RoPE at the preset's shape on one thread (median of
  several), the rate the small matrices of a 0.4M-parameter model reach in practice.

The floor is the work at the best rate on all the machine's cores, with nothing else running; the second
figure is the work at the achieved rate::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sweep_floor.py --preset cpu --out benchmarks/sweep_floor.md
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from posenc.experiment import estimate as ES
from posenc.experiment import sweep as S
from posenc.experiment.presets import get_preset
from posenc.experiment.spec import RunSpec


def training_flops(preset: str) -> tuple[dict[str, float], int, int]:
    """Training FLOPs of the whole sweep by stage, the number of units, and the training steps in all."""
    p = get_preset(preset)
    by_stage: dict[str, float] = defaultdict(float)
    units = steps = 0
    for method in S.implemented_cards():
        spec = RunSpec.create(method, p)
        cache: dict[tuple[object, ...], ES.Measured] = {}
        for seed in p.seeds:
            units += 1
            for w in ES.workload(spec.with_seed(seed)):
                if not w.train:
                    continue
                key = (w.arch, w.batch, w.length)
                if key not in cache:
                    cache[key] = ES.measure(spec, w)
                by_stage[w.stage] += cache[key].at(w.batch).flops * w.calls
                steps += w.calls
    return dict(by_stage), units, steps


def gemm_rate(n: int = 1024, repeats: int = 7) -> float:
    """FLOP/s of an n³ float32 matrix product (median of ``repeats``)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times)


def step_rate(preset: str, method: str = "rope", repeats: int = 10) -> tuple[float, float]:
    """FLOPs of one training step of ``method``'s language model at the preset's shape, and its FLOP/s (the
    median step of ``repeats``, after two warm-up steps)."""
    p = get_preset(preset)
    model = RunSpec.create(method, p).model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (p.batch_size, p.train_len), generator=g)

    def forward_backward() -> None:
        logits, _ = model(x)
        F.cross_entropy(logits.float().reshape(-1, 256), x.reshape(-1)).backward()

    def step() -> None:
        forward_backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    counter = FlopCounterMode(display=False)
    with counter:
        forward_backward()
    opt.zero_grad(set_to_none=True)
    flops = counter.get_total_flops()
    step()
    step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return flops, flops / statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="cores the sweep runs on")
    ap.add_argument("--target-min", type=float, default=60.0, help="the sweep's time target, in minutes")
    ap.add_argument("--out", type=Path, default=None, help="write the Markdown table here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    t0 = time.perf_counter()
    by_stage, units, steps = training_flops(args.preset)
    total = sum(by_stage.values())
    peak = gemm_rate()
    step_flops, achieved = step_rate(args.preset)
    floor_peak = total / (args.cores * peak) / 60
    floor_step = total / (args.cores * achieved) / 60
    lines = [
        f"Command: `OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sweep_floor.py --preset {args.preset}`",
        "",
        f"The `{args.preset}` sweep: {units} units (method × seed), {steps:,} training steps in all. torch "
        f"{torch.__version__}, {platform.machine()}, one thread per core, {args.cores} cores; the script took "
        f"{time.perf_counter() - t0:.0f} s.",
        "",
        "| training stage | FLOPs (forward + backward) |",
        "|---|---|",
        *(f"| {k} | {v / 1e12:,.1f} T |" for k, v in sorted(by_stage.items())),
        f"| **all** | **{total / 1e12:,.1f} T** |",
        "",
        "| rate (one core) | GFLOP/s |",
        "|---|---|",
        f"| float32 product 1024³ (the best this core does) | {peak / 1e9:.1f} |",
        f"| one RoPE training step at the preset's shape ({step_flops / 1e9:.2f} GFLOP) | {achieved / 1e9:.1f} |",
        "",
        f"Floor of the sweep's training alone on {args.cores} cores (evaluation left out): "
        f"**{floor_peak:.0f} min** at the best rate, **{floor_step:.0f} min** at the achieved rate, against a "
        f"target of {args.target_min:.0f} min.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
