"""Train, evaluate and compare positional encodings: presets, checkpoint cache, results store, verdicts.

One experiment = one (method, preset, seed). A byte-level model (:class:`posenc.model.Transformer`) is
trained at ``train_len`` on a mixture of the default corpus (language modelling) and the two synthetic
tasks of :mod:`posenc.data` (arithmetic chain, passkey); the task losses are averaged over their answer
tokens only. It is then evaluated at ``factor × train_len`` for every factor of the preset:

* ``lm_nonoverlap``: perplexity and bits per byte on non-overlapping validation windows;
* ``lm_sliding``: windows of the evaluation length whose last ``stride`` tokens only are scored
  (stride = ``train_len // 2`` unless set), so every scored token has at least ``length − stride`` context;
* ``arithmetic``: accuracy of the answer after ``=`` on chains of exactly that many bytes (chance 10%);
* ``passkey``: exact retrieval of the 5-digit key (greedy decoding = all five argmaxes right).

Methods whose PE class sets ``applies_to`` (RoPE scalings: PI, NTK, YaRN, ...) are applied to the cached
model trained with that base PE, **zero-shot** (for each evaluation length, the PE is rebuilt with
``scale = length / train_len`` when it has a ``scale`` hyperparameter) and after a short **fine-tune** at
``finetune_factor × train_len`` with ``scale = finetune_factor`` (evaluated with that fixed scale). Every
other method trains from scratch, with its own position sampler (``positions(training=True)``).

Results are one JSON per (method, preset, seed) at ``results/<preset>/<method>-seed<seed>.json``, written
atomically. Schema (``"schema": 1``): ``method``, ``preset``, ``seed``, ``complete``, ``kind`` ("scratch"
or "applied"), ``applies_to``, ``primary`` (the variant the verdicts use), ``hyperparameters``, ``config``
(the preset's fields), ``metadata`` (device, torch, python, git commit, corpus name and sha256, wall time,
peak memory, checkpoint keys), ``train`` (``loss`` and, for applied methods, ``finetune_loss``: lists of
``{"step", "loss", "lm", "arithmetic", "passkey"}``), ``variants`` (``{name: {"curves": ...}}``),
``curves`` (the primary variant's), ``local_window`` (the arithmetic check) and ``claims`` (each card
claim with ``measured`` and ``verdict``). Curves are lists of points: ``{"length", "factor", "ppl",
"bpb", "nll", "tokens"}`` for the LM protocols, ``{"length", "factor", "accuracy", "n"}`` for the tasks;
a length the PE cannot handle (e.g. a learned table) has ``"error"`` and null values.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from posenc import data as D
from posenc.cards import Card, find_card, parse_expect

if TYPE_CHECKING:
    import torch
    from torch import nn

    from posenc.model import Transformer

__all__ = [
    "Preset",
    "PRESETS",
    "BASELINES",
    "VERDICTS",
    "get_preset",
    "resolve_device",
    "repo_root",
    "results_root",
    "checkpoint_dir",
    "result_path",
    "load_card",
    "method_info",
    "validate",
    "TrainResult",
    "train",
    "evaluate",
    "run_method",
    "load_result",
    "ensure_result",
    "sweep",
    "claim_verdict",
    "judge_claims",
    "write_json_atomic",
    "leaderboard",
    "local_window_check",
]

BASELINES: tuple[str, ...] = ("sinusoidal", "rope", "alibi", "nope")
VERDICTS = ("reproduced", "not reproduced at this scale", "not applicable")
SCHEMA = 1


# =========================================================================== presets
@dataclass(frozen=True)
class Preset:
    """Model size, training budget and evaluation budget of one scale of experiment."""

    name: str
    n_layer: int
    n_head: int
    d_model: int
    train_len: int
    steps: int
    batch_size: int
    lr: float = 1e-3
    warmup: int = 30
    min_lr_frac: float = 0.1
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    #: Arithmetic and passkey windows in every training batch (each; part of batch_size, the rest is text).
    task_batch: int = 4
    #: Evaluation lengths, as multiples of train_len.
    eval_factors: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    #: Tokens forwarded per length and LM protocol (caps the number of windows; at least one window).
    eval_tokens: int = 8192
    #: Sliding-window stride; None means train_len // 2.
    sliding_stride: int | None = None
    #: Examples per length for each synthetic task, at most; long lengths get ``task_tokens // length``
    #: examples (but at least 16) so that evaluation time stays bounded.
    task_examples: int = 64
    task_tokens: int = 32768
    #: Tokens per evaluation forward batch.
    eval_batch_tokens: int = 8192
    #: Fine-tuning of applied methods: length factor, number of steps (batch keeps tokens per step).
    finetune_factor: int = 4
    finetune_steps: int = 60
    log_every: int = 10

    def __post_init__(self) -> None:
        ints = ("n_layer", "n_head", "d_model", "train_len", "steps", "batch_size", "eval_tokens",
                "task_examples", "task_tokens", "eval_batch_tokens", "finetune_factor", "log_every")
        for name in ints:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"preset {self.name!r}: '{name}' must be a positive int, got {v!r}")
        for name in ("warmup", "task_batch", "finetune_steps"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"preset {self.name!r}: '{name}' must be a non-negative int, got {v!r}")
        for name in ("lr", "weight_decay", "grad_clip", "min_lr_frac"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 or (name == "lr" and v == 0):
                raise ValueError(f"preset {self.name!r}: '{name}' must be a finite number >= 0 (lr > 0), got {v!r}")
        if self.d_model % self.n_head or (self.d_model // self.n_head) % 2:
            raise ValueError(f"preset {self.name!r}: 'd_model' ({self.d_model}) / 'n_head' ({self.n_head}) must "
                             "be an even integer head dimension")
        if not self.eval_factors or any(not isinstance(f, int) or f <= 0 for f in self.eval_factors):
            raise ValueError(f"preset {self.name!r}: 'eval_factors' must be positive ints, got {self.eval_factors!r}")
        if self.eval_factors[0] != 1:
            raise ValueError(f"preset {self.name!r}: 'eval_factors' must start at 1 (ratios are taken vs 1x)")
        if self.sliding_stride is not None and not 0 < self.sliding_stride <= self.train_len:
            raise ValueError(f"preset {self.name!r}: 'sliding_stride' must be in 1..train_len, "
                             f"got {self.sliding_stride}")
        if self.batch_size <= 2 * self.task_batch:
            raise ValueError(f"preset {self.name!r}: 'batch_size' ({self.batch_size}) must exceed 2 × 'task_batch' "
                             f"({self.task_batch}): task windows are part of the batch")
        min_len = len(D.PASSKEY_NEEDLE.format(key="00000")) + len(D.PASSKEY_QUERY) + 5
        if self.task_batch and self.train_len < min_len:
            raise ValueError(f"preset {self.name!r}: 'train_len' must be >= {min_len} for the passkey task")

    @property
    def stride(self) -> int:
        return self.sliding_stride or max(1, self.train_len // 2)

    def lengths(self) -> list[int]:
        return [f * self.train_len for f in self.eval_factors]

    def fields(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["eval_factors"] = list(self.eval_factors)
        return d


PRESETS: dict[str, Preset] = {
    # CI: seconds per notebook on one CPU core.
    "smoke": Preset("smoke", n_layer=1, n_head=2, d_model=32, train_len=64, steps=30, batch_size=8, lr=3e-3,
                    warmup=5, task_batch=2, eval_factors=(1, 2, 4), eval_tokens=512, task_examples=16,
                    eval_batch_tokens=2048, finetune_steps=6, log_every=2),
    # The design's CPU scale: the whole sweep in about 30 minutes on 2 cores.
    "cpu": Preset("cpu", n_layer=2, n_head=4, d_model=128, train_len=64, steps=600, batch_size=32, lr=1e-3,
                  warmup=30, task_batch=4, eval_tokens=4096, task_examples=64, task_tokens=16384,
                  eval_batch_tokens=8192,
                  finetune_steps=60, log_every=10),
    # One H100: a bigger model, longer training, evaluation to 32x.
    "gpu": Preset("gpu", n_layer=4, n_head=8, d_model=256, train_len=128, steps=3000, batch_size=64, lr=6e-4,
                  warmup=100, task_batch=8, eval_tokens=65536, task_examples=256, task_tokens=262144,
                  eval_batch_tokens=65536, finetune_steps=300, log_every=25),
}


def get_preset(preset: str | Preset, **overrides: Any) -> Preset:
    """A preset by name (``smoke``, ``cpu``, ``gpu``), with fields overridden; bad names/values are named."""
    if isinstance(preset, Preset):
        base = preset
    elif preset in PRESETS:
        base = PRESETS[preset]
    else:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    known = {f.name for f in dataclasses.fields(Preset)} - {"name"}
    bad = sorted(set(overrides) - known)
    if bad:
        raise ValueError(f"unknown preset field(s) {', '.join(bad)}; known: {', '.join(sorted(known))}")
    if "eval_factors" in overrides:
        overrides["eval_factors"] = tuple(overrides["eval_factors"])
    return dataclasses.replace(base, **overrides) if overrides else base


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` → CUDA when present, else CPU; ``cpu``; ``cuda`` / ``cuda:N`` (must be available)."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, str) or not (device == "cpu" or device.split(":")[0] == "cuda"):
        raise ValueError(f"unknown device {device!r}; choose auto, cpu or cuda[:N]")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return dev


# =========================================================================== paths, cards, metadata
def repo_root() -> Path:
    """The checkout holding this package (src layout), else the working directory."""
    here = Path(__file__).resolve().parents[2]
    return here if (here / "pyproject.toml").exists() else Path.cwd()


def results_root(results_dir: str | Path | None = None) -> Path:
    return Path(results_dir) if results_dir is not None else repo_root() / "results"


def checkpoint_dir() -> Path:
    """``$POSENC_CACHE/checkpoints`` when set, else ``<repo>/.cache/posenc/checkpoints`` (git-ignored)."""
    root = os.environ.get("POSENC_CACHE")
    return (Path(root) if root else repo_root() / ".cache" / "posenc") / "checkpoints"


def result_path(method: str, preset: str, seed: int, results_dir: str | Path | None = None) -> Path:
    return results_root(results_dir) / preset / f"{method}-seed{seed}.json"


#: The card ``taxonomy/methods/<method>.yaml`` (a :class:`posenc.cards.Card`), or None when there is none.
load_card = find_card


def method_info(method: str) -> dict[str, Any]:
    """Registry facts about ``method``: its class, ``applies_to``, hyperparameters, card ``needs``."""
    from posenc.pe.base import get_class, hyperparameters

    cls = get_class(method)  # ValueError naming the id when unknown
    card = load_card(method)
    needs = card.get("needs") if card else None
    return {
        "cls": cls,
        "applies_to": getattr(cls, "applies_to", None),
        "dynamic": bool(getattr(cls, "dynamic", False)),
        "hparams": hyperparameters(method),
        "needs": needs,
        # Plug-and-play methods are judged zero-shot, the others after their fine-tune.
        "primary": "zero_shot" if needs == "none" else "finetuned",
    }


def protocol_hparams(method: str, p: Preset) -> dict[str, Any]:
    """Hyperparameters the protocol sets for a method, where its paper's own protocol needs them.

    * ``randomized``: Ruoss et al. sample ordered positions from the large range at test time too.
    * ``irope``: a NoPE layer every 4 layers (Llama 4) needs at least 4 layers; smaller presets make the
      last of their layers the NoPE one.
    * ``ssmax``: one learned s per layer and head, as in the paper.
    """
    table: dict[str, dict[str, Any]] = {
        "randomized": {"sample_at_eval": True},
        "irope": {"nope_every": min(4, p.n_layer)},
        "ssmax": {"num_layers": p.n_layer},
    }
    return dict(table.get(method, {}))


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo_root(), capture_output=True, text=True,
                             timeout=10)
        return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _peak_memory_mb(device: torch.device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Write JSON to ``path`` through a temporary file in the same directory and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=1, default=_json_default)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (tuple, set)):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


# =========================================================================== validation
def validate(method: str, preset: str | Preset = "smoke", device: str = "auto",
             hparams: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None
             ) -> tuple[Preset, torch.device, dict[str, Any]]:
    """Check every parameter before any training; errors name the parameter. Returns the resolved ones."""
    p = get_preset(preset, **(overrides or {}))
    dev = resolve_device(device)
    info = method_info(method)
    hp = dict(hparams or {})
    # Building once checks names and values (the PE raises ValueError naming the hyperparameter).
    _build_pe(method, p, hp)
    if info["applies_to"]:
        _build_pe(method, p, _with_scale(method, hp, float(p.finetune_factor)))
    return p, dev, info


def _with_scale(method: str, hp: dict[str, Any], scale: float) -> dict[str, Any]:
    """``hp`` plus ``scale`` when the PE has that hyperparameter and the caller did not fix it."""
    from posenc.pe.base import hyperparameters

    if "scale" in hyperparameters(method) and "scale" not in hp:
        return {**hp, "scale": scale}
    return hp


def _build_pe(method: str, p: Preset, hp: dict[str, Any]) -> Any:
    from posenc.pe.base import build

    return build(method, head_dim=p.d_model // p.n_head, num_heads=p.n_head, train_len=p.train_len, **hp)


def _build_model(method: str, p: Preset, hp: dict[str, Any]) -> Transformer:
    from posenc.model import ModelConfig, Transformer

    cfg = ModelConfig(n_layer=p.n_layer, n_head=p.n_head, d_model=p.d_model)
    return Transformer(cfg, _build_pe(method, p, hp))


# =========================================================================== training
@dataclass
class TrainResult:
    """A trained model and its loss curve (from training or from the checkpoint cache)."""

    model: Transformer
    loss: list[dict[str, float]]
    wall_s: float
    from_cache: bool
    key: str
    hparams: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def _deterministic(seed: int) -> Iterator[None]:
    """Seed torch and switch on deterministic algorithms (restored afterwards)."""
    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # required by deterministic cuBLAS
    prev = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev, warn_only=prev_warn)


def _lr_at(step: int, steps: int, p: Preset, warmup: int) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_frac × lr``."""
    if step < warmup:
        return p.lr * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return p.lr * (p.min_lr_frac + (1 - p.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def _batch(corpus: D.Corpus, p: Preset, batch: int, length: int, rng: np.random.Generator
           ) -> tuple[np.ndarray, np.ndarray, int, int]:
    """``batch`` rows: text windows, then ``task_batch`` arithmetic and ``task_batch`` passkey windows (at
    least one of each when the batch is shrunk for fine-tuning). Returns x, y, n_lm, n_task."""
    n_task = 0 if not p.task_batch else max(1, round(p.task_batch * batch / p.batch_size))
    n_lm = max(1, batch - 2 * n_task)
    starts = rng.integers(0, corpus.train.size - length - 1, size=n_lm)
    win = corpus.train[starts[:, None] + np.arange(length + 1)].astype(np.int64)
    xs, ys = [win[:, :-1]], [win[:, 1:]]
    if n_task:
        for make in (D.arithmetic_batch, D.passkey_train_batch):
            x, y = make(n_task, length, rng)
            xs.append(x)
            ys.append(y)
    return np.concatenate(xs), np.concatenate(ys), n_lm, n_task


def _train_loop(model: Transformer, *, label: str, p: Preset, steps: int, batch: int, length: int,
                corpus: D.Corpus, rng: np.random.Generator, device: torch.device, warmup: int,
                progress: bool | None) -> list[dict[str, float]]:
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    decay = [q for n, q in model.named_parameters() if q.dim() >= 2 and q.requires_grad]
    no_decay = [q for n, q in model.named_parameters() if q.dim() < 2 and q.requires_grad]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": p.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=p.lr, betas=(0.9, 0.95))
    amp = device.type == "cuda"
    curve: list[dict[str, float]] = []
    model.train()
    bar = tqdm(range(steps), desc=label, disable=None if progress is None else not progress, leave=False)
    for step in bar:
        x, y, n_lm, n_task = _batch(corpus, p, batch, length, rng)
        x_t = torch.from_numpy(x).to(device)
        y_t = torch.from_numpy(y).to(device)
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, steps, p, warmup)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            logits, _ = model(x_t)
        tok = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y_t.reshape(-1),
                              ignore_index=D.IGNORE, reduction="none").view(y_t.shape)
        mask = (y_t != D.IGNORE).float()
        parts = {"lm": tok[:n_lm].mean()}
        if n_task:
            for name, sl in (("arithmetic", slice(n_lm, n_lm + n_task)), ("passkey", slice(n_lm + n_task, None))):
                parts[name] = (tok[sl] * mask[sl]).sum() / mask[sl].sum().clamp_min(1.0)
        loss = sum(parts.values())
        value = float(loss.item())
        if not math.isfinite(value):
            raise FloatingPointError(f"{label}: loss is {value} at step {step}; training stopped")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if p.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), p.grad_clip)
        opt.step()
        if step % p.log_every == 0 or step == steps - 1:
            curve.append({"step": step, "loss": value, **{k: float(v.item()) for k, v in parts.items()}})
            bar.set_postfix(loss=f"{value:.3f}")
    model.eval()
    return curve


def _train_key(method: str, p: Preset, seed: int, hp: dict[str, Any], corpus_sha: str, stage: str,
               base_key: str | None = None) -> str:
    import torch

    fields = p.fields()
    for name in ("eval_factors", "eval_tokens", "sliding_stride", "task_examples", "eval_batch_tokens", "name"):
        fields.pop(name)  # evaluation settings do not change the weights
    if stage == "train":
        fields.pop("finetune_factor")
        fields.pop("finetune_steps")
    return _hash({"method": method, "hparams": hp, "preset": fields, "seed": seed, "corpus": corpus_sha,
                  "torch": torch.__version__, "stage": stage, "base": base_key, "v": SCHEMA})


def _save_checkpoint(path: Path, model: nn.Module, loss: list[dict[str, float]], wall: float, meta: dict) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "loss": loss, "wall_s": wall, "meta": meta}, tmp)
    os.replace(tmp, path)


def _load_checkpoint(path: Path) -> dict[str, Any] | None:
    import torch

    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a truncated or foreign file is retrained, never trusted
        return None


def train(method: str, preset: str | Preset = "smoke", seed: int = 0, *, device: str = "auto",
          hparams: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None,
          corpus: D.Corpus | None = None, cache: bool = True, progress: bool | None = None) -> TrainResult:
    """Train ``method`` from scratch at ``train_len`` (or load it from the checkpoint cache).

    The cache key hashes the method, its hyperparameters, the preset's training fields, the seed, the
    corpus sha256 and the torch version. Raises ``FloatingPointError`` naming the method and step when the
    loss is not finite, and ``ValueError`` naming any bad parameter before training starts.
    """
    p, dev, _ = validate(method, preset, device, hparams, overrides)
    corpus = corpus or D.load_corpus()
    hp = dict(hparams or {})
    key = _train_key(method, p, seed, hp, corpus.sha256, "train")
    path = checkpoint_dir() / f"{method}-{key}.pt"
    with _deterministic(seed):
        model = _build_model(method, p, hp)
    cached = _from_cache(path, model, dev, key, hp) if cache else None
    if cached is not None:
        return cached
    model.to(dev)
    t0 = time.perf_counter()
    with _deterministic(seed):
        rng = np.random.default_rng([seed, 0])
        loss = _train_loop(model, label=f"{method} [{p.name}]", p=p, steps=p.steps, batch=p.batch_size,
                           length=p.train_len, corpus=corpus, rng=rng, device=dev, warmup=p.warmup,
                           progress=progress)
    wall = time.perf_counter() - t0
    if cache:
        _save_checkpoint(path, model, loss, wall, {"method": method, "preset": p.fields(), "seed": seed})
    return TrainResult(model, loss, wall, False, key, hp)


def _from_cache(path: Path, model: Transformer, dev: Any, key: str, hp: dict[str, Any]) -> TrainResult | None:
    """The checkpoint at ``path`` loaded into ``model`` as a :class:`TrainResult`, or None when absent."""
    ckpt = _load_checkpoint(path)
    if ckpt is None:
        return None
    model.load_state_dict(ckpt["state_dict"])
    return TrainResult(model.to(dev).eval(), ckpt["loss"], ckpt["wall_s"], True, key, hp)


def _transplant(base: Transformer, method: str, p: Preset, hp: dict[str, Any]) -> Transformer:
    """A copy of ``base``'s weights with ``method``'s PE (built with ``hp``) in place of the base PE."""
    model = _build_model(method, p, hp)
    own = {k: v for k, v in base.state_dict().items() if not k.startswith("pe.")}
    missing, unexpected = model.load_state_dict(own, strict=False)
    bad = [k for k in missing if not k.startswith("pe.")] + list(unexpected)
    if bad:
        raise ValueError(f"{method}: cannot transplant the base weights (mismatched keys {bad[:5]})")
    return model.to(next(base.parameters()).device).eval()


def finetune(method: str, base: TrainResult, preset: str | Preset = "smoke", seed: int = 0, *,
             device: str = "auto", hparams: dict[str, Any] | None = None,
             overrides: dict[str, Any] | None = None, corpus: D.Corpus | None = None, cache: bool = True,
             progress: bool | None = None) -> TrainResult:
    """Fine-tune an applied method: base weights, the method's PE at ``scale = finetune_factor``, trained
    ``finetune_steps`` at ``finetune_factor × train_len`` (batch divided by the factor: same tokens/step)."""
    p, dev, _ = validate(method, preset, device, hparams, overrides)
    corpus = corpus or D.load_corpus()
    hp = _with_scale(method, dict(hparams or {}), float(p.finetune_factor))
    key = _train_key(method, p, seed, hp, corpus.sha256, "finetune", base.key)
    path = checkpoint_dir() / f"{method}-ft-{key}.pt"
    model = _transplant(base.model, method, p, hp)
    # Position samplers (PoSE ...) exist to reach the target length while training short: they fine-tune at
    # train_len with their sampled positions; the others fine-tune on windows of the target length.
    ff = 1 if _is_sampler(model.pe, p.train_len) else p.finetune_factor
    cached = _from_cache(path, model, dev, key, hp) if cache else None
    if cached is not None:
        return cached
    model.to(dev)
    t0 = time.perf_counter()
    with _deterministic(seed + 1):
        rng = np.random.default_rng([seed, 1])
        loss = _train_loop(model, label=f"{method} fine-tune [{p.name}]", p=p, steps=p.finetune_steps,
                           batch=max(1, p.batch_size // ff), length=p.train_len * ff,
                           corpus=corpus, rng=rng, device=dev, warmup=min(p.warmup, p.finetune_steps // 5),
                           progress=progress)
    wall = time.perf_counter() - t0
    if cache:
        _save_checkpoint(path, model, loss, wall, {"method": method, "stage": "finetune", "seed": seed})
    return TrainResult(model, loss, wall, False, key, hp)


def _is_sampler(pe: Any, length: int) -> bool:
    """True when the PE's training positions are not ``arange`` (checked on a few draws)."""
    import torch

    state = torch.random.get_rng_state()
    try:
        ref = torch.arange(length, dtype=torch.float32)
        return any(not torch.equal(pe.positions(length, training=True).float().cpu(), ref) for _ in range(3))
    finally:
        torch.random.set_rng_state(state)


# =========================================================================== evaluation
def _spread(n_avail: int, n: int) -> np.ndarray:
    """``n`` indices evenly spread over ``range(n_avail)`` (all of them when n >= n_avail)."""
    if n >= n_avail:
        return np.arange(n_avail)
    return np.unique(np.linspace(0, n_avail - 1, n).round().astype(int))


def _forward_logits(model: Transformer, x: np.ndarray, device: torch.device) -> torch.Tensor:
    import torch

    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
        logits, _ = model(torch.from_numpy(x.astype(np.int64)).to(device))
    return logits.float()


def _lm_point(model: Transformer, valid: np.ndarray, length: int, scored: int, p: Preset,
              device: torch.device) -> dict[str, Any]:
    """Mean NLL of the last ``scored`` tokens of windows of ``length`` tokens (scored parts disjoint)."""
    import torch.nn.functional as F

    n_avail = (valid.size - length - 1) // scored + 1
    if n_avail < 1:
        raise ValueError(f"validation split ({valid.size} bytes) is shorter than a window of {length}")
    n = max(1, p.eval_tokens // length)
    # Window k covers [k*scored, k*scored + length]: the last `scored` targets do not overlap between k's.
    starts = _spread(n_avail, n) * scored
    bs = max(1, p.eval_batch_tokens // length)
    total, count = 0.0, 0
    for i in range(0, len(starts), bs):
        win = valid[starts[i:i + bs, None] + np.arange(length + 1)]
        logits = _forward_logits(model, win[:, :-1], device)[:, -scored:]
        import torch

        y = torch.from_numpy(win[:, -scored:].astype(np.int64)).to(device)
        nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="sum")
        total += float(nll.item())
        count += y.numel()
    mean = total / count
    return {"ppl": _finite_or_none(math.exp(min(mean, 700.0))), "bpb": _finite_or_none(mean / math.log(2)),
            "nll": _finite_or_none(mean), "tokens": count, "windows": int(len(starts))}


def _task_point(model: Transformer, task: str, length: int, p: Preset, seed: int,
                device: torch.device) -> dict[str, Any]:
    bs = max(1, p.eval_batch_tokens // length)
    n = min(p.task_examples, max(16, p.task_tokens // length))
    correct = 0
    if task == "arithmetic":
        x, ans = D.arithmetic_eval_set(length, n, seed)
        for i in range(0, len(x), bs):
            pred = _forward_logits(model, x[i:i + bs], device)[:, -1].argmax(-1).cpu().numpy()
            correct += int((pred == ans[i:i + bs]).sum())
    else:
        x, keys = D.passkey_eval_set(length, n, seed)
        for i in range(0, len(x), bs):
            logits = _forward_logits(model, x[i:i + bs, :-1], device)[:, -5:]
            pred = logits.argmax(-1).cpu().numpy()
            correct += int((pred == keys[i:i + bs]).all(axis=1).sum())
    return {"accuracy": correct / len(x), "n": int(len(x))}


def evaluate(model_for: Callable[[int], Transformer] | Transformer, preset: str | Preset = "smoke", *,
             seed: int = 0, device: str | torch.device = "auto", corpus: D.Corpus | None = None,
             progress: bool | None = None, label: str = "eval") -> dict[str, list[dict[str, Any]]]:
    """Curves at every evaluation length of the preset.

    ``model_for(factor)`` returns the model to evaluate at ``factor × train_len`` (applied methods rebuild
    their PE per factor); a plain model is used at every length. A length the model cannot handle (e.g. a
    learned position table) gives points with ``"error"`` and null values instead of stopping the sweep.
    """
    from tqdm import tqdm

    p = get_preset(preset)
    dev = device if not isinstance(device, str) else resolve_device(device)
    corpus = corpus or D.load_corpus()
    get = model_for if callable(model_for) and not hasattr(model_for, "state_dict") else (lambda f: model_for)
    curves: dict[str, list[dict[str, Any]]] = {"lm_nonoverlap": [], "lm_sliding": [], "arithmetic": [],
                                                "passkey": []}
    for factor in tqdm(p.eval_factors, desc=label, disable=None if progress is None else not progress, leave=False):
        L = factor * p.train_len
        base = {"length": L, "factor": factor}
        jobs: list[tuple[str, Callable[[Transformer], dict[str, Any]]]] = [
            ("lm_nonoverlap", lambda m, L=L: _lm_point(m, corpus.valid, L, L, p, dev)),
            ("lm_sliding", lambda m, L=L: _lm_point(m, corpus.valid, L, min(p.stride, L), p, dev)),
        ]
        if p.task_batch:
            jobs += [(t, lambda m, t=t, L=L: _task_point(m, t, L, p, seed, dev)) for t in ("arithmetic", "passkey")]
        try:
            model = get(factor)
        except (ValueError, IndexError, RuntimeError) as e:
            model, err = None, f"{type(e).__name__}: {e}"
        for name, job in jobs:
            if model is None:
                curves[name].append({**base, "error": err})
                continue
            try:
                curves[name].append({**base, **job(model)})
            except (ValueError, IndexError, RuntimeError) as e:  # e.g. positions past a learned table
                curves[name].append({**base, "error": f"{type(e).__name__}: {e}"})
    return curves


def local_window_check(preset: str | Preset, seed: int = 0, n: int = 1000) -> list[dict[str, Any]]:
    """Accuracy of the best last-k-bytes predictor on the arithmetic task (k = train_len // 2), per length.

    Unbounded chains must give ≈ 10% at every length; the bounded variant is shown beside it as the
    shortcut this benchmark avoids.
    """
    p = get_preset(preset)
    k = max(1, p.train_len // 2)
    out = []
    for L in p.lengths():
        x, y = D.arithmetic_eval_set(L, n, seed)
        xb, yb = D.arithmetic_eval_set(L, n, seed, bounded=True)
        out.append({"length": L, "k": k, "accuracy": D.local_window_accuracy(x, y, k),
                    "bounded_accuracy": D.local_window_accuracy(xb, yb, k, bounded=True)})
    return out


# =========================================================================== claims
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}


def _point(curve: list[dict[str, Any]], factor: float, key: str) -> float | None:
    """The value at ``factor``; a point with an error counts as +inf (perplexity) / 0 (accuracy)."""
    for pt in curve:
        if pt.get("factor") == factor:
            if pt.get("error") or pt.get(key) is None:
                return math.inf if key == "ppl" else 0.0
            return float(pt[key])
    return None


def claim_verdict(expect: dict[str, Any] | None, curves: dict[str, list[dict[str, Any]]] | None,
                  baseline_curves: dict[str, list[dict[str, Any]]] | None = None, *, where: str = "claim"
                  ) -> dict[str, Any]:
    """Verdict of one claim's ``expect`` against measured curves.

    ``ppl_ratio``: ppl(at×L) / ppl(1×L), non-overlapping protocol. ``ppl_vs_baseline``: ppl(at×L) / the
    baseline's ppl(at×L). ``accuracy``: arithmetic accuracy at at×L. Returns ``{"verdict", "measured",
    "reason"}``; "not applicable" when ``expect`` is null or the needed points were not measured.
    """
    if parse_expect(expect, where) is None:
        return {"verdict": "not applicable", "measured": None, "reason": "no testable expectation at this scale"}
    if not curves:
        return {"verdict": "not applicable", "measured": None, "reason": "nothing measured"}
    at, metric = expect["at"], expect["metric"]
    if metric == "accuracy":
        measured = _point(curves.get("arithmetic", []), at, "accuracy")
    else:
        num = _point(curves.get("lm_nonoverlap", []), at, "ppl")
        if metric == "ppl_ratio":
            den = _point(curves.get("lm_nonoverlap", []), 1, "ppl")
        else:
            if baseline_curves is None:
                return {"verdict": "not applicable", "measured": None,
                        "reason": f"baseline {expect['baseline']!r} not measured at this preset"}
            den = _point(baseline_curves.get("lm_nonoverlap", []), at, "ppl")
        measured = None if num is None or den is None else (math.inf if math.isinf(num) else num / den)
    if measured is None:
        return {"verdict": "not applicable", "measured": None, "reason": f"{at}x train length not evaluated"}
    ok = _OPS[expect["op"]](measured, float(expect["value"]))
    return {"verdict": "reproduced" if ok else "not reproduced at this scale",
            "measured": _finite_or_none(measured),
            "reason": f"{metric} at {at}x = {measured:.4g} {'satisfies' if ok else 'fails'} "
                      f"{expect['op']} {expect['value']}"}


def judge_claims(card: Mapping[str, Any] | None, curves: dict[str, list[dict[str, Any]]] | None,
                 baseline_curves: Callable[[str], dict[str, Any] | None] = lambda _: None,
                 variants: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Every claim of ``card`` with its verdict; ``baseline_curves(id)`` gives a baseline's curves or None.

    An optional ``expect.variant`` (``zero_shot``, ``finetuned`` or ``scratch``) judges an applied method's claim on
    that variant's curves instead of the primary ones (``variants`` maps names to ``{"curves": ...}``).
    """
    if not card:
        return []
    out = []
    claims = card.get("claims") or []
    source = card.file if isinstance(card, Card) else card.get("_path", "card")
    if not isinstance(claims, list):
        raise ValueError(f"{source}: 'claims' must be a list")
    for i, c in enumerate(claims):
        where = f"{source}: claims[{i}]"
        if not isinstance(c, dict):
            raise ValueError(f"{where} must be a mapping")
        expect = c.get("expect")
        parsed = parse_expect(expect, where)  # TaxonomyError (a ValueError) naming file and field
        base = None
        if parsed is not None and parsed.metric == "ppl_vs_baseline" and parsed.baseline:
            base = baseline_curves(parsed.baseline)
        own = curves
        if parsed is not None and parsed.variant is not None:
            name = parsed.variant
            own = (variants or {}).get(name, {}).get("curves")
            if own is None:
                out.append({k: c.get(k) for k in ("id", "source", "statement", "dataset", "metric",
                                                  "train_length", "points", "expect")}
                           | {"verdict": "not applicable", "measured": None,
                              "reason": f"variant {name!r} not measured for this method"})
                continue
        v = claim_verdict(expect, own, base, where=where)
        out.append({k: c.get(k) for k in ("id", "source", "statement", "dataset", "metric", "train_length",
                                          "points", "expect")} | v)
    return out


# =========================================================================== one method, end to end
def load_result(method: str, preset: str, seed: int = 0, results_dir: str | Path | None = None
                ) -> dict[str, Any] | None:
    """The stored result JSON, or None when absent, unreadable or incomplete."""
    path = result_path(method, preset, seed, results_dir)
    try:
        with open(path, encoding="utf-8") as f:
            res = json.load(f)
    except (OSError, json.JSONDecodeError):
        return None
    return res if isinstance(res, dict) and res.get("complete") else None


def _config_key(method: str, p: Preset, hp: dict[str, Any], corpus_sha: str) -> str:
    import torch

    return _hash({"method": method, "preset": p.fields(), "hparams": hp, "corpus": corpus_sha,
                  "torch": torch.__version__, "v": SCHEMA})


def run_method(method: str, preset: str | Preset = "smoke", seed: int = 0, *, device: str = "auto",
               results_dir: str | Path | None = None, hparams: dict[str, Any] | None = None,
               overrides: dict[str, Any] | None = None, force: bool = False, progress: bool | None = None,
               baselines: bool = True, _depth: int = 0) -> dict[str, Any]:
    """Train (or load), evaluate, judge the card's claims and store the result JSON; return the result.

    A complete JSON with the same configuration is reused unless ``force``. ``baselines`` lets
    ``ppl_vs_baseline`` claims train their baseline (through the same caches) when its JSON is missing.
    """
    import torch

    # Bias methods push many logits far below zero, whose exp() is subnormal in float32; CPU arithmetic on
    # subnormals is several times slower, and flushing them to zero changes no probability above 1e-38.
    torch.set_flush_denormal(True)
    p = get_preset(preset, **(overrides or {}))
    hparams = {**protocol_hparams(method, p), **(hparams or {})}
    p, dev, info = validate(method, preset, device, hparams, overrides)
    corpus = D.load_corpus()
    hp = dict(hparams)
    ckey = _config_key(method, p, hp, corpus.sha256)
    path = result_path(method, p.name, seed, results_dir)
    if not force:
        old = load_result(method, p.name, seed, results_dir)
        if old is not None and old.get("metadata", {}).get("config_key") == ckey:
            return old
    t0 = time.perf_counter()
    if dev.type == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats(dev)
    kw = dict(device=str(dev), overrides=overrides, corpus=corpus, progress=progress)
    train_meta: dict[str, Any] = {}
    if info["applies_to"]:
        base_id = info["applies_to"]
        base = train(base_id, p, seed, **kw)
        ft = finetune(method, base, p, seed, hparams=hp, **kw)

        def zero_shot(factor: int) -> Transformer:
            # Static scalings are set for each evaluation length (s = l/L); dynamic ones keep the configured
            # factor of the target length and adapt to l themselves.
            s = float(p.finetune_factor) if info["dynamic"] else float(max(1, factor))
            return _transplant(base.model, method, p, _with_scale(method, hp, s))

        variants = {
            "zero_shot": {"curves": evaluate(zero_shot, p, seed=seed, device=dev, corpus=corpus,
                                             progress=progress, label=f"{method} zero-shot")},
            "finetuned": {"curves": evaluate(ft.model, p, seed=seed, device=dev, corpus=corpus,
                                             progress=progress, label=f"{method} fine-tuned")},
        }
        primary = info["primary"]
        train_rec = {"loss": base.loss, "finetune_loss": ft.loss, "base": base_id}
        train_meta = {"base_checkpoint": base.key, "finetune_checkpoint": ft.key, "base_from_cache": base.from_cache,
                      "finetune_from_cache": ft.from_cache, "train_wall_s": base.wall_s,
                      "finetune_wall_s": ft.wall_s, "finetune_hyperparameters": ft.hparams}
    else:
        tr = train(method, p, seed, hparams=hp, **kw)
        variants = {"scratch": {"curves": evaluate(tr.model, p, seed=seed, device=dev, corpus=corpus,
                                                   progress=progress, label=f"{method} eval")}}
        primary = "scratch"
        train_rec = {"loss": tr.loss}
        train_meta = {"checkpoint": tr.key, "from_cache": tr.from_cache, "train_wall_s": tr.wall_s}
    curves = variants[primary]["curves"]

    def baseline_curves(bid: str) -> dict[str, Any] | None:
        if bid == method:
            return curves
        res = load_result(bid, p.name, seed, results_dir)
        if res is None and baselines and _depth < 2:
            try:
                res = run_method(bid, p, seed, device=str(dev), results_dir=results_dir, overrides=overrides,
                                 progress=progress, _depth=_depth + 1)
            except ValueError:  # the baseline has no implementation yet
                res = None
        return res.get("curves") if res else None

    import torch

    claims = judge_claims(load_card(method), curves, baseline_curves, variants)
    result = {
        "schema": SCHEMA, "complete": True, "method": method, "preset": p.name, "seed": seed,
        "kind": "applied" if info["applies_to"] else "scratch", "applies_to": info["applies_to"],
        "primary": primary, "hyperparameters": {**{k: v for k, v in info["hparams"].items()}, **hp},
        "config": p.fields(),
        "metadata": {
            "device": str(dev), "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda"
            else platform.processor() or platform.machine(),
            "torch": torch.__version__, "python": platform.python_version(), "git_commit": _git_commit(),
            "corpus": corpus.name, "corpus_sha256": corpus.sha256, "seed": seed,
            "wall_time_s": round(time.perf_counter() - t0, 3), "peak_memory_mb": round(_peak_memory_mb(dev), 1),
            "threads": torch.get_num_threads(), "config_key": ckey,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **train_meta,
        },
        "train": train_rec, "variants": variants, "curves": curves,
        "local_window": local_window_check(p, seed, n=200),
        "claims": claims,
    }
    write_json_atomic(path, result)
    return result


def ensure_result(method: str, preset: str | Preset = "smoke", seed: int = 0, **kw: Any) -> dict[str, Any] | None:
    """The method's result (stored or computed); None when the method has no implementation."""
    from posenc.pe.base import available

    if method not in available():
        return None
    return run_method(method, preset, seed, **kw)


def load_model(method: str, preset: str | Preset = "smoke", seed: int = 0, *, device: str = "auto",
               hparams: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None) -> Transformer:
    """The trained model of ``method`` (scratch) or its fine-tuned model (applied), through the cache."""
    p, _, info = validate(method, preset, device, hparams, overrides)
    if info["applies_to"]:
        base = train(info["applies_to"], p, seed, device=device, overrides=overrides)
        return finetune(method, base, p, seed, device=device, hparams=hparams, overrides=overrides).model
    return train(method, p, seed, device=device, hparams=hparams, overrides=overrides).model


def sweep(methods: Iterable[str], preset: str | Preset = "cpu", seeds: Iterable[int] = (0,), *,
          device: str = "auto", results_dir: str | Path | None = None, force: bool = False,
          overrides: dict[str, Any] | None = None, progress: bool | None = None) -> list[Path]:
    """Run every (method, seed); complete JSONs are skipped, so a killed sweep resumes where it stopped."""
    from tqdm import tqdm

    p = get_preset(preset, **(overrides or {}))
    jobs = [(m, s) for m in methods for s in seeds]
    for m, _ in jobs:
        method_info(m)  # unknown ids fail before any training
    done = []
    for m, s in tqdm(jobs, desc=f"sweep [{p.name}]", disable=None if progress is None else not progress):
        run_method(m, preset, s, device=device, results_dir=results_dir, force=force, overrides=overrides,
                   progress=progress)
        done.append(result_path(m, p.name, s, results_dir))
    return done


# =========================================================================== leaderboard
def leaderboard(preset: str = "cpu", results_dir: str | Path | None = None, *, write: bool = True) -> Any:
    """Table of every stored result of ``preset``: perplexity ratio at 4×, 16×, 32× vs 1×, task accuracy at
    each length and claim verdicts. Writes ``leaderboard.csv``, ``.md`` and ``.png`` beside the JSONs."""
    import pandas as pd

    folder = results_root(results_dir) / preset
    rows = []
    for path in sorted(folder.glob("*-seed*.json")):
        try:
            res = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if not res.get("complete"):
            continue
        c = res["curves"]
        ppl1 = _point(c.get("lm_nonoverlap", []), 1, "ppl")
        row: dict[str, Any] = {"method": res["method"], "seed": res["seed"], "variant": res.get("primary"),
                               "ppl@1x": ppl1, "bpb@1x": _point(c.get("lm_nonoverlap", []), 1, "bpb")}
        for f in (4, 16, 32):
            v = _point(c.get("lm_nonoverlap", []), f, "ppl")
            row[f"ppl_ratio@{f}x"] = None if v is None or not ppl1 else v / ppl1
        for task in ("arithmetic", "passkey"):
            for pt in c.get(task, []):
                row[f"{task}@{pt['factor']}x"] = pt.get("accuracy")
        verdicts = [cl["verdict"] for cl in res.get("claims", [])]
        row["claims_reproduced"] = sum(v == "reproduced" for v in verdicts)
        row["claims_not_reproduced"] = sum(v == "not reproduced at this scale" for v in verdicts)
        row["claims_not_applicable"] = sum(v == "not applicable" for v in verdicts)
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        raise ValueError(f"no complete results under {folder}")
    num = [c for c in df.columns if c not in ("method", "variant", "seed")]
    df = df.groupby(["method", "variant"], as_index=False, dropna=False)[num].mean()  # mean over seeds
    sort_col = next((c for c in ("ppl_ratio@32x", "ppl_ratio@16x", "ppl_ratio@4x") if df[c].notna().any()), "ppl@1x")
    df = df.sort_values(sort_col, na_position="last").reset_index(drop=True)
    if write:
        folder.mkdir(parents=True, exist_ok=True)
        df.to_csv(folder / "leaderboard.csv", index=False, float_format="%.4g")
        (folder / "leaderboard.md").write_text(df.to_markdown(index=False, floatfmt=".3g") + "\n", encoding="utf-8")
        _leaderboard_png(folder, preset)
    return df


#: Panels of the leaderboard figure: (title, category prefixes); one panel per family keeps it readable.
LEADERBOARD_PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Absolute", ("extrapolatable_pe/ape",)),
    ("RoPE family", ("extrapolatable_pe/rpe/rope_family",)),
    ("Bias family and other relative", ("extrapolatable_pe/rpe",)),
    ("Position interpolation and remapping", ("llm_era/position_interpolation",)),
    ("Randomized", ("llm_era/randomized_pe",)),
    ("Beyond the PE", ("beyond_pe",)),
)


def _panel_of(category: str) -> int:
    """Index of the first panel whose prefix the category starts with."""
    for i, (_, prefixes) in enumerate(LEADERBOARD_PANELS):
        if any(category == pre or category.startswith(pre + "/") for pre in prefixes):
            return i
    return len(LEADERBOARD_PANELS) - 1


def _leaderboard_png(folder: Path, preset: str) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(16, 8.5), sharex=True, sharey=True)
    flat = axes.ravel()
    for path in sorted(folder.glob("*-seed0.json")):
        res = json.loads(path.read_text(encoding="utf-8"))
        pts = [pt for pt in res["curves"].get("lm_nonoverlap", []) if pt.get("ppl")]
        if pts and pts[0]["factor"] == 1:
            card = load_card(res["method"]) or {}
            ax = flat[_panel_of(str(card.get("category", "")))]
            ax.plot([pt["factor"] for pt in pts], [pt["ppl"] / pts[0]["ppl"] for pt in pts], marker="o", ms=3,
                    label=f"{res['method']} ({res['primary']})" if res.get("kind") == "applied" else res["method"])
    for ax, (title, _) in zip(flat, LEADERBOARD_PANELS, strict=True):
        ax.set(xscale="log", yscale="log", title=title)
        ax.axhline(1.0, color="k", lw=0.5)
        ax.grid(alpha=0.3, which="both")
        if any(not line.get_label().startswith("_") for line in ax.lines):
            ax.legend(fontsize=7, ncol=2, loc="upper left")
    for ax in axes[1]:
        ax.set_xlabel("evaluation length / train length")
    for ax in axes[:, 0]:
        ax.set_ylabel("perplexity / perplexity at 1x")
    fig.suptitle(f"Length extrapolation, {preset} preset (non-overlapping windows)")
    fig.tight_layout()
    fig.savefig(folder / "leaderboard.png", dpi=110)
    plt.close(fig)


# =========================================================================== figures (notebooks)
def plot_positional_signal(method: str, preset: str | Preset = "smoke", model: Transformer | None = None,
                           corpus: D.Corpus | None = None, ax: Any = None) -> Any:
    """The method's positional signal: logit bias vs distance (bias methods), RoPE wavelengths (rotary
    family), sampled training positions (samplers), else the trained model's first-layer attention."""
    import matplotlib.pyplot as plt
    import torch

    p = get_preset(preset)
    info = method_info(method)
    pe = model.pe if model is not None else _build_pe(method, p, _with_scale(method, {}, float(p.finetune_factor))
                                                      if info["applies_to"] else {})
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 3.8))
    T = min(4 * p.train_len, 512)
    pos = torch.arange(T, dtype=torch.float32)
    with torch.no_grad():
        try:
            b = pe.bias(pos, pos)
        except Exception:  # token-dependent biases need a forward scope
            b = None
        if b is not None:
            b = b[0] if b.dim() == 4 else b
            dist = np.arange(T)
            for h in range(b.shape[0]):
                ax.plot(dist, b[h, T - 1, :].flip(0).cpu().numpy(), lw=1, label=f"head {h}")
            ax.axvline(p.train_len, color="k", ls=":", lw=1, label="train length")
            ax.set(xlabel="distance i − j", ylabel="logit bias", title=f"{method}: bias vs distance")
            ax.legend(fontsize=7, ncol=2)
            return ax
        if hasattr(pe, "inv_freq"):
            from posenc.pe.base import build

            inv = pe.inv_freq(p.train_len * p.finetune_factor).cpu().numpy()
            scale = getattr(pe, "scale", None)
            tag = f" (s = {float(scale):g})" if isinstance(scale, (int, float)) and not isinstance(scale, bool) else ""
            # Zero frequencies (p-RoPE, truncated bases) do not rotate: no finite wavelength to draw.
            wl = np.full(inv.shape, np.nan)
            np.divide(2 * np.pi, inv, out=wl, where=inv > 0)
            ax.plot(wl, marker=".", label=method + tag)
            if method != "rope":
                ref = build("rope", head_dim=pe.head_dim, num_heads=pe.num_heads, train_len=p.train_len)
                ax.plot(2 * np.pi / ref.inv_freq(p.train_len).cpu().numpy(), ls="--", label="rope")
            ax.axhline(p.train_len, color="k", ls=":", lw=1, label="train length")
            ax.set(yscale="log", xlabel="frequency index i", ylabel="wavelength 2π/θ_i (tokens)",
                   title=f"{method}: rotation wavelengths")
            ax.legend(fontsize=8)
            return ax
        torch.manual_seed(0)
        draws = [pe.positions(p.train_len, training=True) for _ in range(4)]
        if any(not torch.equal(d, torch.arange(p.train_len, dtype=d.dtype)) for d in draws):
            for i, d in enumerate(draws):
                ax.plot(d.cpu().numpy(), marker=".", ms=2, lw=0.8, label=f"draw {i}")
            ax.plot(np.arange(p.train_len), color="k", ls=":", label="arange")
            ax.set(xlabel="token index", ylabel="position", title=f"{method}: sampled training positions")
            ax.legend(fontsize=8)
            return ax
    if model is None:
        ax.text(0.5, 0.5, "identity positional signal (no model given)", ha="center", transform=ax.transAxes)
        return ax
    length = 2 * p.train_len
    try:
        att = attention_map(model, corpus or D.load_corpus(), length)
    except (ValueError, IndexError, RuntimeError):  # e.g. a learned table that stops at train_len
        length = p.train_len
        att = attention_map(model, corpus or D.load_corpus(), length)
    from matplotlib.colors import LogNorm

    # A log scale: early rows (few keys) would otherwise saturate the colour map.
    im = ax.imshow(np.clip(att, 1e-4, 1.0), cmap="viridis", aspect="auto", norm=LogNorm(vmin=1e-4, vmax=1.0))
    ax.axvline(p.train_len, color="w", ls=":", lw=1)
    ax.set(xlabel="key position", ylabel="query position",
           title=f"{method}: layer-0 attention (mean over heads), {length} tokens")
    plt.colorbar(im, ax=ax)
    return ax


def attention_map(model: Transformer, corpus: D.Corpus, length: int, n: int = 4) -> np.ndarray:
    """First-layer attention probabilities (T, T), averaged over heads and ``n`` validation windows."""
    import torch

    from posenc.pe.base import causal_mask

    dev = next(model.parameters()).device
    x = torch.from_numpy(corpus.valid[np.arange(n)[:, None] * length + np.arange(length)].astype(np.int64)).to(dev)
    blk = model.blocks[0]
    with torch.no_grad():
        pos = model.pe.positions(length, training=False, device=dev)
        with model.pe.scope(x):
            h = blk.ln1(model.pe.embed(model.wte(x), pos))
            B, T, C = h.shape
            H = model.cfg.n_head
            q, k, _ = blk.attn.qkv(h).split(C, dim=2)
            q, k = (t.view(B, T, H, C // H).transpose(1, 2) for t in (q, k))
            att = model.pe.logits(q, k, pos, pos).float().masked_fill(~causal_mask(pos, pos), float("-inf"))
    return att.softmax(-1).mean(dim=(0, 1)).cpu().numpy()


def plot_loss(result: dict[str, Any], ax: Any = None) -> Any:
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 3.5))
    tr = result["train"]
    for key, label in (("loss", "total"), ("lm", "language model"), ("arithmetic", "arithmetic answer"),
                       ("passkey", "passkey digits")):
        pts = [(r["step"], r[key]) for r in tr["loss"] if key in r]
        if pts:
            suffix = f" ({tr['base']} base)" if tr.get("base") and key == "loss" else ""
            ax.plot(*zip(*pts, strict=True), label=label + suffix)
    if tr.get("finetune_loss"):
        off = tr["loss"][-1]["step"] + 1
        pts = [(off + r["step"], r["loss"]) for r in tr["finetune_loss"]]
        ax.plot(*zip(*pts, strict=True), color="k", label=f"fine-tune ({result['method']})")
    ax.set(xlabel="step", ylabel="cross-entropy (nats)", title=f"{result['method']}: training loss")
    ax.legend(fontsize=8)
    return ax


_PANELS = (("lm_nonoverlap", "ppl", "perplexity (non-overlapping)"), ("lm_sliding", "ppl", "perplexity (sliding)"),
           ("arithmetic", "accuracy", "arithmetic accuracy"), ("passkey", "accuracy", "passkey accuracy"))


def plot_curves(result: dict[str, Any], baselines: dict[str, dict[str, Any]] | None = None,
                local_window: list[dict[str, Any]] | None = None) -> Any:
    """2×2 panels: both perplexity protocols and both tasks against length, with the baselines."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    train_len = result["config"]["train_len"]
    series = []
    for name, var in result["variants"].items():
        series.append((f"{result['method']} ({name})" if name != "scratch" else result["method"],
                       var["curves"], dict(lw=2.2, ls="-" if name == result["primary"] else "--")))
    for bid, res in (baselines or {}).items():
        if res and bid != result["method"]:
            series.append((bid, res["curves"], dict(lw=1, alpha=0.75)))
    for ax, (key, metric, title) in zip(axes.flat, _PANELS, strict=True):
        for label, curves, style in series:
            pts = [(pt["length"], pt[metric]) for pt in curves.get(key, []) if pt.get(metric) is not None]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", ms=3, label=label, **style)
        ax.axvline(train_len, color="k", ls=":", lw=1)
        ax.set(xscale="log", xlabel="evaluation length (bytes)", title=title)
        if metric == "ppl":
            ax.set(yscale="log", ylabel="perplexity")
        else:
            ax.set(ylabel="accuracy", ylim=(-0.03, 1.03))
    axes[1, 0].axhline(0.1, color="gray", ls="--", lw=1, label="chance (10%)")
    if local_window:
        axes[1, 0].plot([r["length"] for r in local_window], [r["accuracy"] for r in local_window], color="gray",
                        ls=":", marker="x", label=f"last-{local_window[0]['k']}-bytes predictor")
    for ax in axes.flat:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def claims_frame(result: dict[str, Any]) -> Any:
    """The card's claims beside what we measured, as a DataFrame."""
    import pandas as pd

    rows = []
    for c in result.get("claims", []):
        pts = ", ".join(f"{p['length']}: {p['value']}" for p in c.get("points") or [])
        e = c.get("expect")
        exp = (f"{e['metric']}{'(' + e['baseline'] + ')' if e.get('baseline') else ''} at {e['at']}x "
               f"{e['op']} {e['value']}") if e else "—"
        rows.append({"claim": c.get("id"), "source": c.get("source"), "statement": c.get("statement"),
                     "paper points": pts, "expect": exp,
                     "measured": None if c.get("measured") is None else round(c["measured"], 4),
                     "verdict": c["verdict"]})
    return pd.DataFrame(rows, columns=["claim", "source", "statement", "paper points", "expect", "measured",
                                       "verdict"])
