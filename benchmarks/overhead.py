"""Overhead of each positional encoding in the reference model (a benchmark script, not a test).

For every registered PE: forward + backward time of the reference model (2 layers, d=128, 4 heads, one
sequence) at 1k and 4k tokens on CPU, relative to the same model with NoPE on the fast path
(``scaled_dot_product_attention``). Also one side-by-side run against x-transformers with ALiBi at the
same size, in tokens/s.

    .venv/bin/python benchmarks/overhead.py --lengths 1024 4096 --repeats 3 --out benchmarks/overhead.md
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

import posenc
from posenc.model import ModelConfig, Transformer
from posenc.pe.base import get_class

CFG = ModelConfig(n_layer=2, d_model=128, n_head=4)


def time_fwd_bwd(step: Callable[[], torch.Tensor], repeats: int) -> float:
    """Median seconds of one forward + backward, after one warm-up."""
    step().backward()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step().backward()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def ours(pe_id: str, T: int) -> Callable[[], torch.Tensor]:
    torch.manual_seed(0)
    hp = {"max_len": T} if pe_id == "learned" else {}  # a table must cover the benchmarked length
    pe = posenc.build(pe_id, head_dim=CFG.head_dim, num_heads=CFG.n_head, train_len=T // 4, **hp)
    model = Transformer(CFG, pe)
    tokens = torch.randint(0, 256, (1, T))
    return lambda: model(tokens, targets=tokens)[1]


def xtransformers_alibi(T: int) -> Callable[[], torch.Tensor]:
    from x_transformers import Decoder, TransformerWrapper

    torch.manual_seed(0)
    model = TransformerWrapper(
        num_tokens=256, max_seq_len=T, use_abs_pos_emb=False,
        attn_layers=Decoder(dim=CFG.d_model, depth=CFG.n_layer, heads=CFG.n_head, alibi_pos_bias=True),
    )
    tokens = torch.randint(0, 256, (1, T))

    def step() -> torch.Tensor:
        logits = model(tokens)
        return torch.nn.functional.cross_entropy(logits.view(-1, 256), tokens.view(-1))

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--methods", nargs="*", default=None, help="registry ids (default: all)")
    ap.add_argument("--out", type=Path, default=None, help="write the Markdown table here")
    ap.add_argument("--keep-denormals", action="store_true",
                    help="do not flush subnormal floats to zero (the experiments flush them)")
    args = ap.parse_args()
    # Bias methods push many logits to -80..-100, whose exp() is subnormal in float32; CPU arithmetic on
    # subnormals is slow (ALiBi's SDPA backward ran ~3x slower at 4k tokens). The experiments flush them too.
    ftz = (not args.keep_denormals) and torch.set_flush_denormal(True)

    ids = args.methods or posenc.available()
    rows: dict[str, dict[int, float]] = {}
    base: dict[int, float] = {}
    for T in args.lengths:  # the NoPE reference, timed before and after the sweep (the faster one counts)
        base[T] = time_fwd_bwd(ours("nope", T), args.repeats)
    for pe_id in ids:
        rows[pe_id] = {}
        for T in args.lengths:
            rows[pe_id][T] = time_fwd_bwd(ours(pe_id, T), args.repeats)
        print(pe_id, {T: f"{rows[pe_id][T] / base[T]:.2f}x" for T in args.lengths}, flush=True)
    for T in args.lengths:
        base[T] = min(base[T], time_fwd_bwd(ours("nope", T), args.repeats))

    lines = [
        f"Reference model {CFG.n_layer} layers, d={CFG.d_model}, {CFG.n_head} heads, batch 1; forward + backward, "
        f"median of {args.repeats}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}, subnormals flushed to zero: {'yes' if ftz else 'no'}.",
        "",
        "| method | path | " + " | ".join(f"{T} tokens (s) | ×NoPE @{T}" for T in args.lengths) + " |",
        "|---|---|" + "---|---|" * len(args.lengths),
        "| nope (SDPA) | sdpa | " + " | ".join(f"{base[T]:.3f} | 1.00" for T in args.lengths) + " |",
    ]
    for pe_id in ids:
        path = "explicit" if get_class(pe_id).overrides_logits() else "sdpa"
        cells = " | ".join(f"{rows[pe_id][T]:.3f} | {rows[pe_id][T] / base[T]:.2f}" for T in args.lengths)
        lines.append(f"| {pe_id} | {path} | {cells} |")

    lines += ["", "Side by side with x-transformers (ALiBi, same size), tokens/s (forward + backward):", "",
              "| length | posenc alibi | x-transformers alibi |", "|---|---|---|"]
    for T in args.lengths:
        a = time_fwd_bwd(ours("alibi", T), args.repeats)
        b = time_fwd_bwd(xtransformers_alibi(T), args.repeats)
        lines.append(f"| {T} | {T / a:,.0f} | {T / b:,.0f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
