"""Presets: model size, training budget, evaluation budget and seeds of one scale of experiment.

A preset is the whole protocol at one scale (see the book's Protocol page for the reason behind each field):
the byte-level language model and its training, the evaluation on identical text at every length, the fine-tune
given to methods applied to a RoPE model (and to their RoPE control), the synthetic tasks, and the seeds.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["PROTOCOL_VERSION", "Arch", "Preset", "PRESETS", "get_preset", "resolve_device"]

#: Version of the experimental protocol. Results record it; the book refuses results of another version.
PROTOCOL_VERSION = 2


@dataclass(frozen=True)
class Arch:
    """A model's shape: layers, heads and width."""

    n_layer: int
    n_head: int
    d_model: int

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head


@dataclass(frozen=True)
class Preset:
    """One scale of experiment. Every field is validated on construction, naming the field."""

    name: str
    # ---- the model (the same architecture for every method; position enters only through the PE)
    n_layer: int
    n_head: int
    d_model: int
    train_len: int
    # ---- language-model training (text only: the synthetic tasks train their own models)
    steps: int
    batch_size: int
    lr: float = 1e-3
    #: Learning rate of the PE's own parameters (bias tables, slopes, MLPs, CLEX's ODE), as a multiple of lr.
    #: At lr the T5 table moves at most ~0.2 in 600 steps, so learned biases would stay at their init.
    pe_lr_mult: float = 10.0
    warmup: int = 30
    min_lr_frac: float = 0.1
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    # ---- evaluation: the same validation bytes scored at every length
    eval_factors: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    #: Scored bytes at every length (a multiple of the longest evaluation length).
    eval_bytes: int = 16384
    #: Tokens per evaluation forward batch.
    eval_batch_tokens: int = 16384
    #: Bins of the loss-against-position curve within the longest window.
    position_bins: int = 64
    # ---- fine-tune of methods applied to a RoPE model (and the same fine-tune of RoPE itself, the control)
    finetune_factor: int = 4
    finetune_steps: int = 60
    # ---- synthetic tasks: one small model per method and task, trained at train_len on the task alone.
    #: The task model keeps the LM's layers and head dimension (so each PE sees the same head size).
    task_d_model: int = 64
    task_steps: int = 300
    task_batch: int = 32
    task_lr: float = 3e-3
    #: Examples per evaluation length and task (the same examples for every method).
    task_examples: int = 200
    # ---- seeds and logging
    seeds: tuple[int, ...] = (0, 1, 2)
    #: Seeds on which the tasks are trained (their intervals are Wilson intervals over examples).
    task_seeds: tuple[int, ...] = (0,)
    log_every: int = 50

    def __post_init__(self) -> None:
        pos_ints = ("n_layer", "n_head", "d_model", "train_len", "steps", "batch_size", "eval_bytes",
                    "eval_batch_tokens", "position_bins", "finetune_factor", "task_d_model", "task_steps", "task_batch",
                    "task_examples", "log_every")
        for name in pos_ints:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"preset {self.name!r}: '{name}' must be a positive int, got {v!r}")
        for name in ("warmup", "finetune_steps"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"preset {self.name!r}: '{name}' must be a non-negative int, got {v!r}")
        for name in ("lr", "pe_lr_mult", "task_lr", "weight_decay", "grad_clip", "min_lr_frac"):
            v = getattr(self, name)
            positive = name in ("lr", "pe_lr_mult", "task_lr")
            if (not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0
                    or (positive and v == 0)):
                raise ValueError(f"preset {self.name!r}: '{name}' must be a finite number "
                                 f"{'> 0' if positive else '>= 0'}, got {v!r}")
        if self.d_model % self.n_head or (self.d_model // self.n_head) % 2:
            raise ValueError(f"preset {self.name!r}: 'd_model' ({self.d_model}) / 'n_head' ({self.n_head}) must "
                             "be an even integer head dimension")
        if self.task_d_model % self.head_dim:
            raise ValueError(f"preset {self.name!r}: 'task_d_model' ({self.task_d_model}) must be a multiple of the "
                             f"head dimension ({self.head_dim})")
        if (not isinstance(self.eval_factors, tuple) or not self.eval_factors
                or any(not isinstance(f, int) or isinstance(f, bool) or f <= 0 for f in self.eval_factors)):
            raise ValueError(f"preset {self.name!r}: 'eval_factors' must be positive ints, got {self.eval_factors!r}")
        if self.eval_factors[0] != 1 or list(self.eval_factors) != sorted(set(self.eval_factors)):
            raise ValueError(f"preset {self.name!r}: 'eval_factors' must start at 1 and increase (ratios are taken "
                             f"against 1x), got {self.eval_factors!r}")
        if self.eval_bytes % self.max_len:
            raise ValueError(f"preset {self.name!r}: 'eval_bytes' ({self.eval_bytes}) must be a multiple of the "
                             f"longest evaluation length ({self.max_len}) so that every length scores the same bytes")
        if any(self.max_len % (f * self.train_len) for f in self.eval_factors):
            raise ValueError(f"preset {self.name!r}: every evaluation length must divide the longest one "
                             f"({self.max_len}), got factors {self.eval_factors!r}")
        if (not isinstance(self.seeds, tuple) or not self.seeds or len(set(self.seeds)) != len(self.seeds)
                or any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in self.seeds)):
            raise ValueError(f"preset {self.name!r}: 'seeds' must be distinct ints >= 0, got {self.seeds!r}")
        if not isinstance(self.task_seeds, tuple) or not set(self.task_seeds) <= set(self.seeds):
            raise ValueError(f"preset {self.name!r}: 'task_seeds' must be a subset of 'seeds', got {self.task_seeds!r}")
        if self.finetune_factor not in self.eval_factors:
            raise ValueError(f"preset {self.name!r}: 'finetune_factor' ({self.finetune_factor}) must be one of the "
                             f"evaluation factors {self.eval_factors!r}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    def arch(self, task: bool = False) -> Arch:
        """The language model's architecture, or the (narrower) task model's: same layers and head size."""
        if task:
            return Arch(self.n_layer, self.task_d_model // self.head_dim, self.task_d_model)
        return Arch(self.n_layer, self.n_head, self.d_model)

    @property
    def max_len(self) -> int:
        return self.eval_factors[-1] * self.train_len

    def lengths(self) -> list[int]:
        return [f * self.train_len for f in self.eval_factors]

    def fields(self) -> dict[str, Any]:
        """The preset as plain JSON values (tuples as lists)."""
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


PRESETS: dict[str, Preset] = {
    # CI: seconds per notebook on one CPU core; it checks the machinery, not the methods.
    "smoke": Preset("smoke", n_layer=1, n_head=2, d_model=32, train_len=32, steps=30, batch_size=8, lr=3e-3,
                    warmup=5, eval_factors=(1, 2, 4), eval_bytes=512, eval_batch_tokens=2048, position_bins=8,
                    finetune_steps=6, task_d_model=32, task_steps=30, task_batch=8, task_examples=16, seeds=(0,),
                    log_every=5),
    # The 2-core machine: a 0.4M-parameter byte model and three seeds (the sweep's wall time: results/cpu/sweep.json).
    "cpu": Preset("cpu", n_layer=2, n_head=4, d_model=128, train_len=64, steps=600, batch_size=32),
    # One H100/H200 in one device session (scripts/gpu_sweep.py; its dry run prints the estimate): an 8x larger
    # model (4 layers, d=256, 3.2M parameters) trained at twice the length and evaluated to 32x (4,096 bytes).
    # Steps, batches, fine-tunes, task models and scored bytes are the cpu preset's, so that all 67 entries x 3
    # seeds fit one session of device time; training then reads 2.5M bytes, about 1.8 passes over the default
    # corpus's 1.34 MB training split (the GPU machine has no network, so no larger corpus).
    "gpu": Preset("gpu", n_layer=4, n_head=8, d_model=256, train_len=128, steps=600, batch_size=32, lr=6e-4,
                  warmup=30, eval_batch_tokens=131072, position_bins=128, finetune_steps=60, task_d_model=128,
                  log_every=50),
}


def get_preset(preset: str | Preset, **overrides: Any) -> Preset:
    """A preset by name, with fields overridden. Unknown names, fields and bad values are named."""
    if isinstance(preset, Preset):
        base = preset
    elif isinstance(preset, str) and preset in PRESETS:
        base = PRESETS[preset]
    else:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    known = {f.name for f in dataclasses.fields(Preset)} - {"name"}
    bad = sorted(set(overrides) - known)
    if bad:
        raise ValueError(f"unknown preset field(s) {', '.join(bad)}; known: {', '.join(sorted(known))}")
    fixed = {k: tuple(v) if k in ("eval_factors", "seeds", "task_seeds") and isinstance(v, list) else v
             for k, v in overrides.items()}
    return dataclasses.replace(base, **fixed) if fixed else base


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` → CUDA when present, else CPU; ``cpu``; ``cuda`` / ``cuda:N`` (must be available)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, str) or not (device == "cpu" or device.split(":")[0] == "cuda"):
        raise ValueError(f"unknown device {device!r}; choose auto, cpu or cuda[:N]")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"unknown device {device!r}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return dev
