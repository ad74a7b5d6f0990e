"""`posenc eval-hf`: apply a posenc method to a local Hugging Face checkpoint and measure its extrapolation.

Perplexity at every length on the same scored tokens, and optionally passkey retrieval with the key at several
depths; one result JSON and a figure (posenc.hf.evaluate). The checkpoint is read from MODEL_DIR only (nothing
is downloaded); needs the hf extra: pip install 'posenc[hf]' (transformers >= 5).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from posenc.commands import examples
from posenc.commands.run import parse_assignments


def add_parsers(sub: Any) -> None:  # argparse's private _SubParsersAction type
    """Register ``eval-hf`` on ``sub``."""
    p = sub.add_parser("eval-hf", help="apply a method to a local Hugging Face causal LM; perplexity and passkey "
                                       "accuracy against length",
                       description=__doc__.split("\n\n")[1] if __doc__ else None,
                       **examples("posenc eval-hf ./Llama-3.2-1B --method yarn --hp scale=4 --lengths 1024,2048",
                                  "posenc eval-hf ./Llama-3.2-1B --method ntk_aware --hp scale=4 --lengths 2048 "
                                  "--passkey --depths 0,0.5,1 --passkey-trials 2"))
    p.add_argument("model_dir", metavar="MODEL_DIR", help="local folder of the checkpoint (config.json, weights, "
                                                          "tokenizer)")
    p.add_argument("--method", required=True, help="posenc registry id, e.g. yarn (see the support table)")
    p.add_argument("--hp", action="append", default=[], metavar="NAME=VALUE", dest="hparams",
                   help="a hyperparameter of the method (repeatable), e.g. --hp scale=4")
    p.add_argument("--lengths", required=True, help="comma-separated evaluation lengths in tokens, e.g. 4096,8192")
    p.add_argument("--corpus", help="UTF-8 text file to score (default: posenc's embedded corpus)")
    p.add_argument("--eval-tokens", type=int, help="tokens scored at every length (default: the longest length)")
    p.add_argument("--passkey", action="store_true", help="also measure passkey retrieval accuracy")
    p.add_argument("--depths", help="needle depths in [0, 1] for --passkey (default 0,0.25,0.5,0.75,1)")
    p.add_argument("--passkey-trials", type=int, default=5, help="trials per (length, depth) cell (default 5)")
    p.add_argument("--train-len", type=int, help="the checkpoint's original context (default: from its config)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--dtype", default="auto", help="auto (bfloat16 on CUDA, float32 on CPU), float32, bfloat16, "
                                                   "float16")
    p.add_argument("--chunk-mb", type=float, default=256.0,
                   help="memory cap (MiB) of one attention-logits chunk for attention-changing methods")
    p.add_argument("--out", help="result JSON (default results/hf/<model folder>/<method>[@hash].json); the figure "
                                 "is written beside it (.png)")
    p.add_argument("--cache", help="per-length cache folder (default: under the posenc cache)")
    p.add_argument("--force", action="store_true", help="recompute lengths found in the cache")
    p.add_argument("--seed", type=int, default=0, help="seed of the passkeys (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=_eval_hf)


def parse_lengths(text: str) -> tuple[int, ...]:
    try:
        out = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise ValueError(f"--lengths expects comma-separated positive ints, got {text!r}") from None
    if not out:
        raise ValueError(f"--lengths expects comma-separated positive ints, got {text!r}")
    return out


def parse_depths(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise ValueError(f"--depths expects comma-separated numbers in [0, 1], got {text!r}") from None


def _eval_hf(args: argparse.Namespace) -> int:
    # torch and transformers load only when an evaluation is asked for.
    try:
        from posenc.hf import evaluate as E
        from posenc.hf.support import UnsupportedError
    except ImportError as e:
        print(f"posenc eval-hf: needs the hf extra (pip install 'posenc[hf]'): {e}", file=sys.stderr)
        return 2
    try:
        depths = parse_depths(args.depths)
        spec = E.EvalSpec(model_dir=args.model_dir, method=args.method, lengths=parse_lengths(args.lengths),
                          hparams=parse_assignments(args.hparams, "--hp"), corpus=args.corpus,
                          passkey=args.passkey, passkey_trials=args.passkey_trials, eval_tokens=args.eval_tokens,
                          device=args.device, dtype=args.dtype, chunk_mb=args.chunk_mb, seed=args.seed,
                          train_len=args.train_len, **({} if depths is None else {"depths": depths}))
        E.run_eval(spec, out=Path(args.out) if args.out else None, cache=args.cache, force=args.force,
                   progress=not args.no_progress)
    except (ValueError, UnsupportedError) as e:
        print(f"posenc eval-hf: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nposenc eval-hf: interrupted; finished lengths are cached, rerun to resume", file=sys.stderr)
        return 130
    return 0
