"""The pretrained-model protocol behind ``posenc eval-hf`` and ``notebooks/pretrained.ipynb``.

A checkpoint read from a local folder (never downloaded) gets a posenc method (:func:`posenc.hf.apply`), then:

* **perplexity at every length on the same scored text**, as in the experiments
  (:mod:`posenc.experiment.evaluate`): the text is tokenised with the model's tokenizer and
  :func:`posenc.data.eval_span` fixes one span of ``eval_tokens`` targets (default: the longest length),
  preceded by ``max(lengths)`` tokens of context. At each length l the span is cut into non-overlapping windows
  of l tokens, every target scored once; when l does not divide the span, the last window is moved back to end
  at the span's end and scores only its new targets (its earlier tokens are context). Every length scores
  exactly the same tokens.
* **passkey retrieval** (optional, :mod:`posenc.hf.passkey`): accuracy with the key at several depths of the
  prompt, at every length (the "needle" heat map).

Default text: posenc's embedded corpus (:func:`posenc.data.load_corpus`, offline), whole: nothing is trained
here, so its training split is as unseen by the checkpoint as its validation split. ``corpus`` reads a UTF-8
text file instead. Results: one JSON (written atomically, last) and a figure beside it. Each length's numbers
are cached as soon as they are computed, under a key of everything that determines them, so an interrupted
run resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from posenc import __version__, paths
from posenc import data as D
from posenc.experiment.presets import resolve_device
from posenc.experiment.results import read_json, write_json_atomic
from posenc.experiment.runner import git_commit
from posenc.hf import passkey as PK
from posenc.hf.rotary import PosencRotaryEmbedding, apply, config_dims, rotary_owner
from posenc.hf.support import check_supported, supported_methods
from posenc.hf.tiny import progress_bars
from posenc.pe import spec

__all__ = ["PROTOCOL", "DEFAULT_DEPTHS", "EvalSpec", "load", "corpus_tokens", "score_windows", "token_nll",
           "lm_point", "passkey_correct", "passkey_cells", "memory_estimate", "run_eval", "figure", "default_out"]

PROTOCOL = 1
DEFAULT_DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_HEAD_CHUNK_MB = 256  # cap of one float32 (rows, vocab) logits chunk when scoring


@dataclass(frozen=True)
class EvalSpec:
    """One evaluation. Field errors name the command-line flag (``lengths`` is ``--lengths`` ...)."""

    model_dir: str
    method: str
    lengths: tuple[int, ...]
    hparams: dict[str, Any] = field(default_factory=dict)
    corpus: str | None = None
    passkey: bool = False
    depths: tuple[float, ...] = DEFAULT_DEPTHS
    passkey_trials: int = 5
    eval_tokens: int | None = None
    device: str = "auto"
    dtype: str = "auto"
    chunk_mb: float = 256.0
    seed: int = 0
    train_len: int | None = None

    def __post_init__(self) -> None:
        def need(ok: bool, flag: str, what: str, value: Any) -> None:
            if not ok:
                raise ValueError(f"{flag} must be {what}, got {value!r}")

        def pos_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool) and v > 0

        md = Path(self.model_dir)
        need(md.is_dir() and (md / "config.json").is_file(), "MODEL_DIR", "a local folder with a config.json",
             self.model_dir)
        need(isinstance(self.method, str) and self.method in supported_methods(), "--method",
             f"a supported method ({', '.join(supported_methods())})", self.method)
        need(isinstance(self.hparams, dict), "--hp", "NAME=VALUE pairs", self.hparams)
        unknown = sorted(set(self.hparams) - set(spec(self.method).hyperparameters))
        need(not unknown, "--hp", f"hyperparameters of {self.method} "
             f"({', '.join(sorted(spec(self.method).hyperparameters)) or 'none'})", ", ".join(unknown))
        need(len(self.lengths) > 0 and all(pos_int(n) for n in self.lengths)
             and len(set(self.lengths)) == len(self.lengths), "--lengths", "distinct positive ints", self.lengths)
        need(self.corpus is None or Path(self.corpus).is_file(), "--corpus", "an existing text file", self.corpus)
        need(len(self.depths) > 0 and all(isinstance(d, (int, float)) and 0 <= d <= 1 for d in self.depths),
             "--depths", "numbers in [0, 1]", self.depths)
        need(pos_int(self.passkey_trials), "--passkey-trials", "a positive int", self.passkey_trials)
        need(self.eval_tokens is None or pos_int(self.eval_tokens), "--eval-tokens", "a positive int",
             self.eval_tokens)
        try:
            resolve_device(self.device)
        except ValueError as e:
            raise ValueError(f"--device: {e}") from None
        need(self.dtype == "auto" or self.dtype in _DTYPES, "--dtype", f"auto or {', '.join(_DTYPES)}", self.dtype)
        need(isinstance(self.chunk_mb, (int, float)) and self.chunk_mb > 0, "--chunk-mb", "a number > 0",
             self.chunk_mb)
        need(isinstance(self.seed, int) and self.seed >= 0, "--seed", "an int >= 0", self.seed)
        need(self.train_len is None or pos_int(self.train_len), "--train-len", "a positive int", self.train_len)
        object.__setattr__(self, "lengths", tuple(sorted(self.lengths)))
        object.__setattr__(self, "depths", tuple(float(d) for d in self.depths))

    @property
    def scored(self) -> int:
        """Targets scored at every length (``eval_tokens``, default the longest length)."""
        return self.eval_tokens or max(self.lengths)


# ---------------------------------------------------------------------- model and text
def _dtype(name: str, device: torch.device) -> torch.dtype:
    if name != "auto":
        return _DTYPES[name]
    return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32


def load(model_dir: str | Path, device: torch.device, dtype: torch.dtype, progress: bool = True
         ) -> tuple[nn.Module, Any]:
    """The causal LM (eval mode, SDPA attention) and its tokenizer from a local folder; nothing is downloaded.
    ``progress=False`` silences transformers' loading bar."""
    from transformers import AutoModelForCausalLM, AutoTokenizer  # lazy: transformers is an optional dependency

    with contextlib.nullcontext() if progress else progress_bars(False):
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype, attn_implementation="sdpa",
                                                     local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    return model.to(device).eval(), tokenizer


def _encode(tokenizer: Any, text: str) -> np.ndarray:
    ids = tokenizer(text, add_special_tokens=False, return_attention_mask=False, verbose=False)["input_ids"]
    return np.asarray(ids, dtype=np.int64)


def corpus_tokens(tokenizer: Any, corpus: str | None, need: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Token ids of the evaluation text (at least ``need`` of them when the text has them) and its record.

    Only a prefix of the text is tokenised when it suffices (about 8 characters per needed token, grown until
    enough tokens or the whole text)."""
    if corpus is None:
        raw, name = D.default_corpus_bytes(), "default (whole)"
    else:
        raw, name = Path(corpus).read_bytes(), Path(corpus).name
    text = raw.decode("utf-8", errors="replace")
    chars = 8 * need
    while True:
        ids = _encode(tokenizer, text[:chars])
        if ids.size >= need or chars >= len(text):
            break
        chars *= 2
    return ids, {"name": name, "sha256": hashlib.sha256(raw).hexdigest(), "characters_tokenised": min(chars, len(text))}


def score_windows(start: int, scored: int, length: int) -> list[tuple[int, int]]:
    """``(window start, targets scored at its end)`` covering targets ``start + 1 .. start + scored`` of the
    stream with windows of ``length`` inputs (see the module docstring)."""
    out, pos = [], start
    while pos < start + scored:
        if pos + length <= start + scored:
            out.append((pos, length))
            pos += length
        else:
            out.append((start + scored - length, start + scored - pos))
            pos = start + scored
    return out


def token_nll(model: nn.Module, ids: Tensor) -> Tensor:
    """Per-token negative log-likelihood (T − 1,) float32 of ``ids`` (T,) under the model, computing the
    vocabulary logits in row chunks (a 16k-token window with a 128k vocabulary would need 8 GiB at once)."""
    hidden = model.get_decoder()(input_ids=ids[None, :-1], use_cache=False).last_hidden_state[0]  # (T-1, C)
    head = model.get_output_embeddings()
    rows = max(1, _HEAD_CHUNK_MB * 2**20 // (4 * head.out_features))
    out = [F.cross_entropy(head(hidden[i:i + rows]).float(), ids[1 + i:1 + i + rows], reduction="none")
           for i in range(0, hidden.size(0), rows)]
    return torch.cat(out)


def lm_point(model: nn.Module, stream: Tensor, windows: list[tuple[int, int]], length: int, *, train_len: int,
             tick: Callable[[int], Any] = lambda n: None) -> dict[str, Any]:
    """Mean NLL and perplexity at ``length`` over the targets the ``windows`` (:func:`score_windows`) score."""
    t = time.perf_counter()
    total = torch.zeros((), dtype=torch.float64, device=stream.device)
    count = 0
    for a, keep in windows:
        total += token_nll(model, stream[a:a + length + 1])[length - keep:].double().sum()
        count += keep
        tick(1)
    nll = float(total.item()) / count
    return {"length": length, "factor": length / train_len, "nll": nll, "ppl": math.exp(min(nll, 700.0)),
            "tokens": count, "windows": len(windows), "seconds": round(time.perf_counter() - t, 3)}


def passkey_correct(model: nn.Module, ex: PK.PasskeyExample) -> bool:
    """True when the most likely next token is the answer's at every answer position (one teacher-forced
    forward: the greedy continuation of the question is the key)."""
    x = torch.from_numpy(ex.tokens).to(next(model.parameters()).device)
    hidden = model.get_decoder()(input_ids=x[None, :-1], use_cache=False).last_hidden_state
    pred = model.get_output_embeddings()(hidden[0, ex.answer_start - 1:]).argmax(-1)
    return bool(torch.equal(pred, x[ex.answer_start:]))


def passkey_cells(model: nn.Module, tokenizer: Any, length: int, depths: Sequence[float], trials: int, seed: int,
                  filler: Sequence[int] | None = None, tick: Callable[[int], Any] = lambda n: None
                  ) -> list[dict[str, Any]]:
    """Passkey accuracy at ``length`` for each depth, over ``trials`` keys (:func:`posenc.hf.passkey.passkey_key`)."""
    rows = []
    for j, depth in enumerate(depths):
        correct = 0
        for trial in range(trials):
            ex = PK.passkey_example(tokenizer, length, depth, PK.passkey_key(seed, length, j, trial), filler)
            correct += passkey_correct(model, ex)
            tick(1)
        rows.append({"length": length, "depth": depth, "correct": correct, "n": trials, "accuracy": correct / trials})
    return rows


# ---------------------------------------------------------------------- memory
def memory_estimate(config: Any, n_params: int, dtype: torch.dtype, length: int, kind: str,
                    chunk_mb: float) -> dict[str, float]:
    """Rough peak memory (GiB) of one forward of ``length`` tokens without a cache: the weights, per-layer
    activations (hidden states, q/k/v, MLP), on the posenc attention path its score chunks (several score
    tensors at once), and the scoring head's logits chunk. Computed from the config, before loading weights."""
    b = torch.empty((), dtype=dtype).element_size()
    heads = config.num_attention_heads
    d = getattr(config, "head_dim", None) or config.hidden_size // heads
    act = length * (6 * config.hidden_size + 3 * config.intermediate_size + 6 * heads * d) * b
    scores = 5 * min(chunk_mb * 2**20, heads * length * length * 4) if kind == "attention" else 0
    head_rows = max(1, _HEAD_CHUNK_MB * 2**20 // (4 * config.vocab_size))
    logits = 3 * min(length, head_rows) * config.vocab_size * 4
    gib = 2.0**30
    return {"weights": n_params * b / gib, "activations": (act + scores + logits) / gib,
            "peak": (n_params * b + act + scores + logits) / gib}


def _size(gib: float) -> str:
    return f"{gib:.2f} GiB" if gib >= 1 else f"{gib * 1024:.1f} MiB"


def _peak_mb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


# ---------------------------------------------------------------------- the protocol
def _fingerprint(model_dir: Path) -> dict[str, Any]:
    """What identifies the checkpoint for the cache: its config's sha256 and its weight files' sizes/times."""
    files = sorted(p for p in model_dir.iterdir() if p.suffix in (".safetensors", ".bin", ".pt", ".json"))
    return {"config_sha256": hashlib.sha256((model_dir / "config.json").read_bytes()).hexdigest(),
            "files": [[p.name, p.stat().st_size, int(p.stat().st_mtime)] for p in files]}


def default_out(s: EvalSpec) -> Path:
    """``results/hf/<model folder>/<method>[@<hash of --hp>].json``."""
    tag = ""
    if s.hparams:
        tag = "@" + hashlib.sha256(json.dumps(s.hparams, sort_keys=True).encode()).hexdigest()[:8]
    return paths.results_dir() / "hf" / Path(s.model_dir).resolve().name / f"{s.method}{tag}.json"


def _cached(folder: Path, name: str, compute: Callable[[], dict[str, Any]], force: bool) -> tuple[dict[str, Any], bool]:
    path = folder / f"{name}.json"
    if path.exists() and not force:
        try:
            return read_json(path), True
        except ValueError:
            path.replace(path.with_name(path.name + ".corrupt"))  # kept for inspection, recomputed
    out = compute()
    write_json_atomic(path, out)
    return out, False


def run_eval(s: EvalSpec, *, out: str | Path | None = None, cache: str | Path | None = None, force: bool = False,
             progress: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the protocol; write the result JSON (atomically, last) and its figure (same name, ``.png``).

    ``cache``: folder of the per-length cache (default ``<posenc cache>/hf/<key>``); ``force``: recompute
    cached lengths. ``log`` receives the memory estimate and a line per length. Returns the result.
    """
    t0 = time.perf_counter()
    device = resolve_device(s.device)
    dtype = _dtype(s.dtype, device)
    out_path = Path(out) if out is not None else default_out(s)
    config, kind, n_params = _check_before_loading(s)
    est = {n: memory_estimate(config, n_params, dtype, n, kind, s.chunk_mb) for n in s.lengths}
    top = est[max(s.lengths)]
    log(f"memory estimate: weights {_size(top['weights'])}; at {max(s.lengths)} tokens about {_size(top['peak'])} "
        f"in all ({_size(top['activations'])} of activations; {kind} path) on {device.type}")
    model, tokenizer = load(s.model_dir, device, dtype, progress)
    apply(model, s.method, train_len=s.train_len, chunk_mb=s.chunk_mb, **s.hparams)
    rot = rotary_owner(model).rotary_emb
    assert isinstance(rot, PosencRotaryEmbedding)
    L0 = rot.pe.train_len
    context, scored = max(s.lengths), s.scored
    ids, corpus = corpus_tokens(tokenizer, s.corpus, context + scored + 1)
    flag = "--corpus" if s.corpus else "the default corpus"
    try:
        stream_np, start = D.eval_span(ids, scored, context)
    except ValueError:
        raise ValueError(f"{flag} has {ids.size} tokens; --lengths up to {context} and --eval-tokens {scored} need "
                         f"{context + scored + 1} (lower them or give a longer --corpus)") from None
    if s.passkey and min(s.lengths) <= PK.min_length(tokenizer):
        raise ValueError(f"--lengths: {min(s.lengths)} is too short for a passkey prompt (at least "
                         f"{PK.min_length(tokenizer) + 1} tokens with this tokenizer)")
    corpus.update({"tokens_scored": scored, "context": context,
                   "span_sha256": hashlib.sha256(stream_np.tobytes()).hexdigest()})
    stream = torch.from_numpy(stream_np).to(device)
    key_obj = {"protocol": PROTOCOL, "model": _fingerprint(Path(s.model_dir)), "method": s.method,
               "hparams": rot.hparams, "dtype": str(dtype), "device": device.type, "corpus": corpus,
               "passkey": [s.depths, s.passkey_trials, s.seed] if s.passkey else None, "chunk_mb": s.chunk_mb}
    key = hashlib.sha256(json.dumps(key_obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
    folder = Path(cache) if cache is not None else paths.cache_dir() / "hf" / key

    windows = {n: score_windows(start, scored, n) for n in s.lengths}
    n_pk = len(s.depths) * s.passkey_trials if s.passkey else 0
    bar = tqdm(total=sum(len(w) + n_pk for w in windows.values()), disable=not progress, unit="fwd",
               desc=f"{s.method} on {Path(s.model_dir).name}")
    lm, cells, peaks = [], [], {}
    filler = PK.filler_for(tokenizer, max(s.lengths)) if s.passkey else []
    with torch.no_grad():
        for n in s.lengths:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)

            point, cached = _cached(folder, f"lm-{n}", lambda n=n: lm_point(
                model, stream, windows[n], n, train_len=L0, tick=bar.update), force)
            if cached:
                bar.update(len(windows[n]))
            lm.append(point)
            line = f"{n} tokens ({n / L0:g}x): ppl {point['ppl']:.4g}"
            if s.passkey:
                pk, hit = _cached(folder, f"passkey-{n}", lambda n=n: {"cells": passkey_cells(
                    model, tokenizer, n, s.depths, s.passkey_trials, s.seed, filler, tick=bar.update)}, force)
                cached = cached and hit
                if hit:
                    bar.update(n_pk)
                cells += pk["cells"]
                acc = sum(c["correct"] for c in pk["cells"]) / sum(c["n"] for c in pk["cells"])
                line += f", passkey {acc:.0%}"
            peaks[n] = None if cached else _peak_mb(device)
            log(line + (" (cached)" if cached else ""))
    bar.close()

    result = {
        "schema": "posenc.eval_hf/1", "protocol": PROTOCOL, "complete": True, "key": key,
        "model": {"name": Path(s.model_dir).resolve().name, "model_type": model.config.model_type,
                  "class": type(model).__name__, "parameters": sum(p.numel() for p in model.parameters()),
                  "dtype": str(dtype).removeprefix("torch."), "train_len": L0,
                  "rope_theta": model.config.rope_parameters["rope_theta"], **_fingerprint(Path(s.model_dir))},
        "method": {"id": s.method, "kind": rot.kind, "hyperparameters": rot.hparams, "user_hparams": s.hparams},
        "lengths": list(s.lengths), "corpus": corpus, "lm": lm,
        "passkey": None if not s.passkey else {"depths": list(s.depths), "trials": s.passkey_trials, "seed": s.seed,
                                               "cells": cells},
        "memory": {"estimate_gib": {str(n): v for n, v in est.items()},
                   "measured_peak_mb": {str(n): v for n, v in peaks.items()}},
        "spec": {k: v for k, v in asdict(s).items() if k not in ("model_dir", "corpus")},
        "metadata": _metadata(device, t0),
    }
    figure(result, out_path.with_suffix(".png"))
    write_json_atomic(out_path, result)
    log(f"wrote {paths.relative(out_path)} and {paths.relative(out_path.with_suffix('.png'))}")
    return result


def _check_before_loading(s: EvalSpec) -> tuple[Any, str, int]:
    """Fail on an unsupported architecture or a bad hyperparameter value before reading any weights; returns
    the config, the method's kind and the parameter count (of a weightless model on the meta device)."""
    from transformers import AutoConfig, AutoModelForCausalLM  # lazy: transformers is an optional dependency

    config = AutoConfig.from_pretrained(s.model_dir, local_files_only=True)
    dims = config_dims(config)
    try:
        pe = spec(s.method).build(head_dim=dims["head_dim"], num_heads=dims["num_heads"],
                                  train_len=s.train_len or dims["train_len"], **s.hparams)
    except ValueError as e:
        raise ValueError(f"--hp: {e}") from None
    with torch.device("meta"):
        n_params = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
    return config, check_supported(s.method, pe), n_params


def _metadata(device: torch.device, t0: float) -> dict[str, Any]:
    import transformers  # lazy: transformers is an optional dependency

    return {"device": device.type,
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
            "torch": torch.__version__, "transformers": transformers.__version__, "posenc": __version__,
            "python": platform.python_version(), "git_commit": git_commit(),
            "wall_time_s": round(time.perf_counter() - t0, 1), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


# ---------------------------------------------------------------------- the figure
def figure(result: dict[str, Any], path: str | Path | None = None) -> Any:
    """Perplexity against length (the original context marked) and, with passkey results, the accuracy
    heat map (depth × length). Saved to ``path`` when given; returns the matplotlib figure."""
    import matplotlib  # lazy: only when a figure is drawn

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    pk = result.get("passkey")
    fig, axes = plt.subplots(1, 2 if pk else 1, figsize=(11 if pk else 5.5, 4), squeeze=False)
    ax = axes[0, 0]
    lm = result["lm"]
    ax.plot([p["length"] for p in lm], [p["ppl"] for p in lm], "o-", color="#d62728", label=result["method"]["id"])
    ax.axvline(result["model"]["train_len"], color="grey", ls="--", lw=1, label="original context")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("evaluation length (tokens)")
    ax.set_ylabel(f"perplexity ({result['corpus']['tokens_scored']} scored tokens)")
    ax.set_title(f"{result['model']['name']} + {result['method']['id']}")
    ax.legend()
    if pk:
        _heatmap(axes[0, 1], pk, result["lengths"])
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    plt.close(fig)
    return fig


def _heatmap(ax: Any, pk: dict[str, Any], lengths: Sequence[int]) -> None:
    depths = pk["depths"]
    acc = np.full((len(depths), len(lengths)), np.nan)
    for c in pk["cells"]:
        acc[depths.index(c["depth"]), list(lengths).index(c["length"])] = c["accuracy"]
    im = ax.imshow(acc, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
    ax.set_xticks(range(len(lengths)), [str(n) for n in lengths])
    ax.set_yticks(range(len(depths)), [f"{d:.0%}" for d in depths])
    for i in range(len(depths)):
        for j in range(len(lengths)):
            ax.text(j, i, f"{acc[i, j]:.0%}", ha="center", va="center", fontsize=8)
    ax.set_xlabel("evaluation length (tokens)")
    ax.set_ylabel("needle depth")
    ax.set_title(f"passkey retrieval ({pk['trials']} trials per cell)")
    ax.figure.colorbar(im, ax=ax, label="accuracy")

