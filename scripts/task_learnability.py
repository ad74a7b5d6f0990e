"""Which synthetic tasks does a cpu-preset-sized model learn at the training length? (the Protocol page's table)

Trains a 2-layer byte model with RoPE on each candidate task alone at L = 64 and prints its exact-match accuracy
at 1x, 2x and 4x L after the given number of steps. Candidates: the two tasks of ``posenc.tasks`` (needle,
latest) and three harder forms that were tried first: the 5-digit passkey, the duplicate-string copy and the
sum of two scattered digits modulo 10 (a bounded form of the survey's A.3 chain).

    python scripts/task_learnability.py --steps 300 --d-model 64 --out results/task_learnability.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import posenc
from posenc import tasks as T
from posenc.model import ModelConfig, Transformer

Make = Callable[[int, int, np.random.Generator], tuple[np.ndarray, np.ndarray]]
_FILL = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz      ", dtype=np.uint8)


def _filler(n: int, total: int, rng: np.random.Generator) -> np.ndarray:
    return _FILL[rng.integers(0, _FILL.size, size=(n, total))].astype(np.int64)


def passkey5(n: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``=ddddd.`` at a random depth, ``?ddddd`` at the end; the five digits are the targets."""
    total = length + 1
    seq = _filler(n, total, rng)
    keys = rng.integers(0, 10, size=(n, 5)) + ord("0")
    for i in range(n):
        at = int(rng.integers(0, total - 13))
        seq[i, at:at + 7] = [ord("="), *keys[i], ord(".")]
    seq[:, -6] = ord("?")
    seq[:, -5:] = keys
    y = np.full((n, length), T.IGNORE)
    y[:, -5:] = keys
    return seq[:, :-1], y


def copy(n: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``>`` + a random string + ``|`` + the string; strings of any length that fits; the copy is the target."""
    total = length + 1
    seq = _filler(n, total, rng)
    y = np.full((n, length), T.IGNORE)
    m = (total - 2) // 2
    for i in range(n):
        k = int(rng.integers(1, m + 1))
        s = rng.integers(ord("a"), ord("z") + 1, size=k)
        seq[i, total - 2 * k - 2:] = [ord(">"), *s, ord("|"), *s]
        y[i, length - k:] = s
    return seq[:, :-1], y


def scattered_sum(n: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two digits scattered in filler; the answer is their sum modulo 10."""
    total = length + 1
    seq = _filler(n, total, rng)
    y = np.full((n, length), T.IGNORE)
    for i in range(n):
        pos = rng.choice(total - 2, size=2, replace=False)
        d = rng.integers(0, 10, size=2)
        seq[i, pos] = d + ord("0")
        seq[i, -2:] = [ord("?"), ord("0") + int(d.sum() % 10)]
        y[i, -1] = seq[i, -1]
    return seq[:, :-1], y


CANDIDATES: dict[str, Make] = {
    "needle": lambda n, length, rng: T.TASKS["needle"].make(n, length, rng, False),
    "latest": lambda n, length, rng: T.TASKS["latest"].make(n, length, rng, False),
    "passkey5": passkey5, "copy": copy, "scattered_sum": scattered_sum,
}


def accuracy(model: Transformer, make: Make, length: int, n: int = 200) -> float:
    x, y = (torch.from_numpy(a) for a in make(n, length, np.random.default_rng(12345)))
    with torch.no_grad():
        logits, _ = model(x)
    hit = (logits.argmax(-1) == y) | (y == T.IGNORE)
    return float(hit.all(dim=1).float().mean())


def run(name: str, make: Make, *, steps: int, d_model: int, lr: float, batch: int, train_len: int) -> dict:
    torch.manual_seed(0)
    heads = d_model // 32
    model = Transformer(ModelConfig(n_layer=2, n_head=heads, d_model=d_model),
                        posenc.build("rope", head_dim=32, num_heads=heads, train_len=train_len))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    x, y = (torch.from_numpy(a) for a in make(steps * batch, train_len, np.random.default_rng(0)))
    t0 = time.perf_counter()
    model.train()
    for s in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (s + 1) / 30) * (0.1 + 0.45 * (1 + math.cos(math.pi * s / steps)))
        logits, _ = model(x[s * batch:(s + 1) * batch])
        loss = F.cross_entropy(logits.reshape(-1, 256), y[s * batch:(s + 1) * batch].reshape(-1),
                               ignore_index=T.IGNORE)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    model.eval()
    acc = {f"{f}x": accuracy(model, make, f * train_len) for f in (1, 2, 4)}
    return {"task": name, "steps": steps, "d_model": d_model, "final_loss": float(loss.detach()), "accuracy": acc,
            "wall_s": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--tasks", default=",".join(CANDIDATES))
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name in args.tasks.split(","):
        row = run(name, CANDIDATES[name], steps=args.steps, d_model=args.d_model, lr=args.lr, batch=args.batch,
                  train_len=64)
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"command": "python scripts/task_learnability.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out" and v is not None),
            "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
