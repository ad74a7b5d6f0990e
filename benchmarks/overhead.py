"""Training throughput of posenc's reference model against the speed limit and x-transformers (a script, not a test).

One training step = forward + backward + AdamW update, on CPU, for models of the same size and head size:
2 layers, d = 128, 4 heads of 32, byte vocabulary, tied embeddings, batch = 4096 // length sequences (so
every length processes 4096 tokens per step). Entries:

* **limit**: a plain causal model with no positional encoding that calls
  ``scaled_dot_product_attention(is_causal=True)`` with no mask (written here, independent of posenc);
* **posenc**: the reference model (``attn="auto"``) with NoPE, RoPE, ALiBi, T5 bias and CoPE (explicit path);
* **x-transformers**: ``TransformerWrapper`` + ``Decoder`` at the same size and head size (``attn_dim_head=32``),
  with its own RoPE (on all 32 dims of a head, as posenc) / ALiBi / T5 bias / CoPE, with and without its flash
  path (``attn_flash=True``; CoPE and the T5 bias have none).

Runs are interleaved (every round runs each entry once, in a rotated order), after two warm-up steps. Each
round gives one ratio per entry, its step time over the limit's step time in the same round, so that a slow
spell of the machine, which lasts longer than a round, slows both sides of a ratio alike. The table reports the
median of those ``--repeats`` paired ratios with their quartiles, and the tokens/s of the median step.
Subnormal floats are flushed to zero, as in the experiments.
Transparent huge pages for PyTorch's CPU allocator (``THP_MEM_ALLOC_ENABLE=1``, read when torch starts) cut
page faults on large tensors; the table records whether it was set::

    THP_MEM_ALLOC_ENABLE=1 .venv/bin/python benchmarks/overhead.py --lengths 64 1024 4096 --repeats 7 \\
        --out benchmarks/overhead.md

``--posenc-only ID ...`` instead times the listed posenc methods against the limit (no x-transformers).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import posenc
import posenc.pe
from posenc.model import ModelConfig, Transformer

N_LAYER, D_MODEL, N_HEAD, VOCAB, TOKENS_PER_STEP = 2, 128, 4, 256, 4096
POSENC = ["nope", "rope", "alibi", "t5_bias", "cope"]
XT = {"nope": {}, "rope": {"rotary_pos_emb": True, "rotary_emb_dim": D_MODEL // N_HEAD},  # all of each head
      "alibi": {"alibi_pos_bias": True},
      "t5_bias": {"rel_pos_bias": True}, "cope": {"attn_use_cope": True, "attn_cope_max_pos": 64}}


class PlainCausal(nn.Module):
    """The speed limit: posenc's architecture (pre-LN, GELU MLP, tied head) with no PE and is_causal SDPA."""

    def __init__(self) -> None:
        super().__init__()
        self.wte = nn.Embedding(VOCAB, D_MODEL)
        self.blocks = nn.ModuleList(nn.ModuleDict({
            "ln1": nn.LayerNorm(D_MODEL), "qkv": nn.Linear(D_MODEL, 3 * D_MODEL, bias=False),
            "proj": nn.Linear(D_MODEL, D_MODEL, bias=False), "ln2": nn.LayerNorm(D_MODEL),
            "fc": nn.Linear(D_MODEL, 4 * D_MODEL, bias=False), "out": nn.Linear(4 * D_MODEL, D_MODEL, bias=False),
        }) for _ in range(N_LAYER))
        self.ln_f = nn.LayerNorm(D_MODEL)
        self.head = nn.Linear(D_MODEL, VOCAB, bias=False)
        self.head.weight = self.wte.weight

    def forward(self, tokens: Tensor) -> Tensor:
        B, T = tokens.shape
        x = self.wte(tokens)
        for b in self.blocks:
            q, k, v = b["qkv"](b["ln1"](x)).split(D_MODEL, dim=2)
            q, k, v = (t.view(B, T, N_HEAD, -1).transpose(1, 2) for t in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + b["proj"](y.transpose(1, 2).reshape(B, T, D_MODEL))
            x = x + b["out"](F.gelu(b["fc"](b["ln2"](x))))
        return self.head(self.ln_f(x))


def posenc_model(pe_id: str, length: int) -> nn.Module:
    cfg = ModelConfig(n_layer=N_LAYER, n_head=N_HEAD, d_model=D_MODEL)
    hp = {"max_len": length} if pe_id == "learned" else {}  # a table must cover the benchmarked length
    pe = posenc.build(pe_id, head_dim=cfg.head_dim, num_heads=N_HEAD, train_len=64, **hp)
    model = Transformer(cfg, pe)

    class Logits(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = model

        def forward(self, tokens: Tensor) -> Tensor:
            return self.m(tokens)[0]

    return Logits()


def xt_model(kind: str, flash: bool, length: int) -> nn.Module:
    from x_transformers import Decoder, TransformerWrapper  # test-only dependency

    return TransformerWrapper(
        num_tokens=VOCAB, max_seq_len=length, use_abs_pos_emb=False, tie_embedding=True,
        attn_layers=Decoder(dim=D_MODEL, depth=N_LAYER, heads=N_HEAD, attn_dim_head=D_MODEL // N_HEAD,
                            attn_flash=flash, **XT[kind]),
    )


def train_step(model: nn.Module, length: int) -> Callable[[], None]:
    """One forward + backward + AdamW step on random bytes (4096 tokens per step)."""
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, VOCAB, (max(1, TOKENS_PER_STEP // length), length), generator=g)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def step() -> None:
        logits = model(tokens)
        F.cross_entropy(logits.float().reshape(-1, VOCAB), tokens.reshape(-1)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def entries(length: int, posenc_ids: list[str], with_xt: bool) -> dict[str, tuple[nn.Module, str]]:
    torch.manual_seed(0)
    out: dict[str, tuple[nn.Module, str]] = {"limit (no PE, is_causal SDPA)": (PlainCausal(), "")}
    for pe_id in posenc_ids:
        path = "explicit" if posenc.pe.spec(pe_id).explicit else "fast"
        out[f"posenc {pe_id}"] = (posenc_model(pe_id, length), path)
    if with_xt:
        for kind in XT:
            for flash in (False, True):
                if flash and kind in ("cope", "t5_bias"):
                    continue  # x-transformers: neither CoPE nor the T5 bias has a flash path
                out[f"x-transformers {kind}{' flash' if flash else ''}"] = (xt_model(kind, flash, length), "")
    return out


Timing = tuple[list[float], int, str]  # seconds of each round's step, parameter count, posenc path


def measure(length: int, posenc_ids: list[str], with_xt: bool, repeats: int) -> dict[str, Timing]:
    """Each round's seconds per step, parameter count and path of every entry at ``length``."""
    models = entries(length, posenc_ids, with_xt)
    steps = {name: train_step(m, length) for name, (m, _) in models.items()}
    for step in steps.values():  # two warm-up steps each
        step()
        step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:  # interleaved, rotated order
            t0 = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - t0)
        print(f"  {length} tokens: round {r + 1}/{repeats}", flush=True)
    return {name: (times[name], sum(p.numel() for p in models[name][0].parameters()), models[name][1])
            for name in names}


def paired_ratios(entry: list[float], limit: list[float]) -> tuple[float, float, float]:
    """Median and quartiles of the per-round ratios entry / limit (rounds paired by index)."""
    if len(entry) != len(limit) or not entry:
        raise ValueError(f"paired_ratios: need equally many rounds, got {len(entry)} and {len(limit)}")
    r = [a / b for a, b in zip(entry, limit, strict=True)]
    if len(r) < 4:
        return statistics.median(r), min(r), max(r)
    q1, _, q3 = statistics.quantiles(r, n=4)
    return statistics.median(r), q1, q3


def table(results: dict[int, dict[str, Timing]], repeats: int, command: str, load: str) -> str:
    lengths = sorted(results)
    names = list(results[lengths[0]])
    limit = names[0]
    head = (f"Command: `{command}`\n\n"
            f"Training step (forward + backward + AdamW), {N_LAYER} layers, d={D_MODEL}, {N_HEAD} heads of "
            f"{D_MODEL // N_HEAD}, {TOKENS_PER_STEP} tokens per step (batch = {TOKENS_PER_STEP} // length), "
            f"{repeats} interleaved rounds; torch {torch.__version__}, {torch.get_num_threads()} threads, "
            f"{platform.processor() or platform.machine()}, subnormals flushed, "
            f"THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE', 'unset')}; load average {load}. "
            "Cells: tokens/s of the median step · the median over rounds of the step's time relative to the "
            "limit's step in the same round (lower is better) · in brackets the quartiles of those ratios.\n\n")
    cols = " | ".join(f"{T} tokens" for T in lengths)
    lines = [f"| model | params | path | {cols} |", "|---|---|---|" + "---|" * len(lengths)]
    for name in names:
        cells = []
        for T in lengths:
            times = results[T][name][0]
            ratio, q1, q3 = paired_ratios(times, results[T][limit][0])
            cells.append(f"{TOKENS_PER_STEP / statistics.median(times):,.0f} · {ratio:.2f}× [{q1:.2f}–{q3:.2f}]")
        params, path = results[lengths[0]][name][1], results[lengths[0]][name][2]
        lines.append(f"| {name} | {params / 1e3:.0f}k | {path} | " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[64, 1024, 4096])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--posenc-only", nargs="*", default=None, metavar="ID",
                    help="time these posenc ids ('fast' for every non-explicit one) against the limit, without "
                         "x-transformers")
    ap.add_argument("--out", type=Path, default=None, help="write the Markdown table here")
    args = ap.parse_args()
    torch.set_flush_denormal(True)  # bias methods push logits far below 0, whose exp() is subnormal
    if args.posenc_only is not None:
        ids = args.posenc_only or ["fast"]
        if ids == ["fast"]:
            ids = [i for i in posenc.available() if not posenc.pe.spec(i).explicit]
        with_xt = False
    else:
        ids, with_xt = POSENC, True
    load0 = os.getloadavg()[0]
    results = {T: measure(T, ids, with_xt, args.repeats) for T in args.lengths}
    load = f"{load0:.1f} at the start, {os.getloadavg()[0]:.1f} at the end (1-minute, {os.cpu_count()} CPUs)"
    command = "".join(f"{k}={os.environ[k]} " for k in ("OMP_NUM_THREADS", "THP_MEM_ALLOC_ENABLE") if k in os.environ)
    command += ".venv/bin/python benchmarks/overhead.py " + " ".join(
        [f"--lengths {' '.join(map(str, args.lengths))}", f"--repeats {args.repeats}"]
        + ([f"--posenc-only {' '.join(args.posenc_only)}"] if args.posenc_only is not None else []))
    text = table(results, args.repeats, command, load)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
