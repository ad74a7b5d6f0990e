"""Training: the optimiser, the schedule, a device-side loop with no per-step host sync, and checkpoints.

The loop keeps the device busy: the training stream lives on the device and batches are sampled there with a
seeded generator; losses are accumulated on the device and read every ``log_every`` steps (one sync per log
line, none per step). Mixed precision follows the device: bf16 autocast where supported, else fp16 with a
gradient scaler on CUDA, else fp32 (always on CPU). On CUDA the optimiser is the fused AdamW.

``torch.compile`` is an execution choice (:attr:`posenc.experiment.spec.RunSpec.compile`: ``auto`` compiles on
CUDA only). The model is compiled for training only (evaluation runs many lengths, each a recompile); when
compiling fails, the first step is retried eagerly from the same batch and random state, and the log says
``compile: "failed: <reason>"`` instead of ``"on"``.

On CUDA, deterministic algorithms are requested strictly; a kernel without a deterministic implementation
raises at its first use, the step is retried with that kernel allowed, and the log records
``bitwise_reproducible: false`` with the kernel's name (:class:`Determinism`).

The PE's own parameters (bias tables, slopes, MLPs, CLEX's ODE) get their own optimiser group with learning
rate ``pe_lr_mult × lr`` and no weight decay: at the model's learning rate a T5 bias table moves at most ~0.2
from its initial values in a cpu-preset run, so learned biases would be judged at their initialisation.
Each run records how far the PE's parameters moved (:func:`pe_shift`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from posenc.experiment.presets import Preset
from posenc.experiment.results import write_bytes_atomic

__all__ = [
    "TrainLog",
    "Precision",
    "precision_for",
    "COMPILE_CHOICES",
    "use_compile",
    "Determinism",
    "deterministic",
    "lr_at",
    "make_optimizer",
    "train_loop",
    "pe_shift",
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
]

#: A batch sampler: ``(generator) -> (x (B, T) int64, y (B, T) int64)`` on the training device.
Sampler = Callable[[torch.Generator], tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class Precision:
    """The autocast dtype (None: fp32) and whether a gradient scaler is needed (fp16)."""

    dtype: torch.dtype | None
    scaler: bool

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]


def precision_for(device: torch.device) -> Precision:
    """bf16 where the device supports it, else fp16 with a grad scaler (pre-Ampere CUDA), else fp32 (CPU)."""
    if device.type != "cuda":
        return Precision(None, False)
    if torch.cuda.is_bf16_supported():
        return Precision(torch.bfloat16, False)
    return Precision(torch.float16, True)


#: Values of :attr:`posenc.experiment.spec.RunSpec.compile`.
COMPILE_CHOICES = ("auto", "on", "off")


def use_compile(choice: str, device: torch.device) -> bool:
    """Whether training compiles the model: ``on``, ``off``, or ``auto`` (on CUDA only: on CPU compiling
    costs more than a short run gains)."""
    if choice not in COMPILE_CHOICES:
        raise ValueError(f"'compile' must be one of {', '.join(COMPILE_CHOICES)}, got {choice!r}")
    return choice == "on" or (choice == "auto" and device.type == "cuda")


class Determinism:
    """What a run may promise about reruns, kept up to date while it trains (``info`` goes in its log).

    ``strict``: deterministic algorithms are required, so a kernel without a deterministic implementation
    raises; :meth:`relax` then allows it (warn only) and records that reruns may differ.
    """

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.info: dict[str, Any] = {"bitwise_reproducible": True}

    @staticmethod
    def is_alert(e: BaseException) -> bool:
        """True for PyTorch's error about a kernel that has no deterministic implementation."""
        return isinstance(e, RuntimeError) and "does not have a deterministic implementation" in str(e)

    def relax(self, e: BaseException) -> None:
        torch.use_deterministic_algorithms(True, warn_only=True)
        self.strict = False
        kernels = self.info.get("nondeterministic", [])
        self.info = {"bitwise_reproducible": False, "nondeterministic": [*kernels, str(e).split(" does not")[0]]}


@contextlib.contextmanager
def deterministic(seed: int, device: torch.device) -> Iterator[Determinism]:
    """Seed torch and ask for deterministic kernels; yields the :class:`Determinism` of the run.

    On CPU the kernels used here are deterministic, so two runs with one seed give identical numbers (a
    test keeps it so) without switching on ``use_deterministic_algorithms`` (which imports the compiler
    stack, about a second per run). On CUDA, deterministic algorithms are required (cuBLAS gets the workspace
    setting it needs); the training loop relaxes the requirement for a kernel that has no deterministic
    version and records it, instead of promising equality.
    """
    torch.manual_seed(seed)
    if device.type != "cuda":
        yield Determinism(strict=False)
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # required by deterministic cuBLAS
    prev = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield Determinism(strict=True)
    finally:
        torch.use_deterministic_algorithms(prev, warn_only=prev_warn)


def lr_at(step: int, steps: int, lr: float, warmup: int, min_lr_frac: float) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_frac × lr``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return lr * (min_lr_frac + (1 - min_lr_frac) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def make_optimizer(model: nn.Module, p: Preset, lr: float) -> torch.optim.Optimizer:
    """AdamW with three groups: matrices (weight decay), other model parameters, and the PE's parameters
    (``pe_lr_mult × lr``, no decay). Each group remembers its base learning rate as ``base_lr``."""
    pe_ids = {id(q) for q in model.pe.parameters()} if hasattr(model, "pe") else set()
    decay, no_decay, pe = [], [], []
    for q in model.parameters():
        if not q.requires_grad:
            continue
        (pe if id(q) in pe_ids else decay if q.dim() >= 2 else no_decay).append(q)
    groups = [{"params": decay, "weight_decay": p.weight_decay, "base_lr": lr},
              {"params": no_decay, "weight_decay": 0.0, "base_lr": lr}]
    if pe:
        groups.append({"params": pe, "weight_decay": 0.0, "base_lr": lr * p.pe_lr_mult})
    fused = next(model.parameters()).is_cuda  # one kernel for all parameters instead of several per tensor
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=(0.9, 0.95), fused=fused or None)


@dataclass
class TrainLog:
    """Loss curve (``[{"step", "loss"}]``, read every ``log_every`` steps) and the run's facts: precision,
    and ``compile`` ("on", "off" or "failed: <reason>")."""

    loss: list[dict[str, float]]
    steps: int
    tokens: int
    precision: str
    compile: str = "off"


def _rng_state(device: torch.device) -> tuple[Tensor, Tensor | None]:
    return torch.random.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def _set_rng_state(device: torch.device, state: tuple[Tensor, Tensor | None]) -> None:
    torch.random.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:200]


def train_loop(model: nn.Module, sample: Sampler, *, steps: int, lr: float, p: Preset, device: torch.device,
               generator: torch.Generator, label: str, warmup: int | None = None,
               loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
               progress: Callable[[int, float], None] | None = None, compile: bool = False,
               det: Determinism | None = None) -> TrainLog:
    """Train ``model`` for ``steps`` steps on batches from ``sample``; returns the loss curve.

    ``loss_fn(logits, y)`` defaults to the mean cross-entropy over targets (``-100`` ignored). Raises
    ``FloatingPointError`` naming ``label`` and the step when a logged loss is not finite (the loss is also
    checked at the last step, so a NaN run never produces a result). ``compile``: train the
    ``torch.compile``'d model, falling back to eager (and saying so) when compiling fails. ``det``: the
    run's :class:`Determinism`, relaxed for a kernel that has no deterministic implementation.
    """
    prec = precision_for(device)
    opt = make_optimizer(model, p, lr)
    scaler = torch.amp.GradScaler("cuda") if prec.scaler else None
    warm = p.warmup if warmup is None else warmup
    acc = torch.zeros((), device=device)
    n_acc = 0
    curve: list[dict[str, float]] = []
    tokens = 0
    forward: Callable[..., Any] = torch.compile(model, dynamic=False) if compile else model
    compiled = "on" if compile else "off"
    model.train()

    def forward_backward(x: Tensor, y: Tensor) -> Tensor:
        with torch.autocast(device.type, dtype=prec.dtype or torch.float32, enabled=prec.dtype is not None):
            logits, _ = forward(x)
        logits = logits.float()
        loss = (loss_fn(logits, y) if loss_fn is not None else
                nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), ignore_index=-100))
        opt.zero_grad(set_to_none=True)
        (scaler.scale(loss) if scaler is not None else loss).backward()
        return loss

    for step in range(steps):
        x, y = sample(generator)
        tokens += x.numel()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, g["base_lr"], warm, p.min_lr_frac)
        while True:  # at most once more per fallback: compiling fails, or a kernel is not deterministic
            retry = (compiled == "on" and step == 0) or (det is not None and det.strict)
            state = _rng_state(device) if retry else None
            try:
                loss = forward_backward(x, y)
                break
            except Exception as e:
                if state is None:
                    raise
                if det is not None and det.strict and Determinism.is_alert(e):
                    det.relax(e)
                elif compiled == "on" and step == 0 and not Determinism.is_alert(e):
                    compiled, forward = f"failed: {_first_line(e)}", model
                else:
                    raise
                _set_rng_state(device, state)  # the retried step draws what the failed one drew
        if scaler is not None:
            scaler.unscale_(opt)
        if p.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), p.grad_clip)
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        acc += loss.detach()
        n_acc += 1
        if (step + 1) % p.log_every == 0 or step == steps - 1:
            value = float(acc.item()) / n_acc  # the only host sync: once per log line
            if not math.isfinite(value):
                raise FloatingPointError(f"{label}: loss is {value} around step {step}; training stopped")
            curve.append({"step": step, "loss": value})
            acc.zero_()
            n_acc = 0
            if progress is not None:
                progress(step + 1, value)
    model.eval()
    return TrainLog(curve, steps, tokens, prec.name, compiled)


def pe_shift(initial: dict[str, Tensor], model: nn.Module) -> dict[str, Any]:
    """How far the PE's learned parameters moved from their initial values.

    Per parameter: the largest absolute change and the relative L2 change ‖θ − θ₀‖/max(‖θ₀‖, 1e-8).
    ``moved`` is False when no parameter changed by 1 % or more (relative) — a learned PE that stayed at its
    initialisation, which the book flags. Empty when the PE has no learned parameters.
    """
    out: dict[str, Any] = {}
    for name, q in model.pe.named_parameters():
        if not q.requires_grad or name not in initial:
            continue
        q0 = initial[name].to(q.device, torch.float32)
        d = q.detach().float() - q0
        out[name] = {"max_abs": float(d.abs().max()) if d.numel() else 0.0,
                     "relative_l2": float(d.norm() / max(float(q0.norm()), 1e-8))}
    if not out:
        return {}
    return {"parameters": out, "moved": any(v["relative_l2"] >= 0.01 for v in out.values())}


# =========================================================================== checkpoints
class CheckpointError(ValueError):
    """A checkpoint that does not hold what its key says (another method or configuration, a bad checksum)."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(path: Path, model: nn.Module, meta: dict[str, Any]) -> None:
    """Write the weights and ``meta`` (method, configuration key, loss ...) atomically, then a sidecar with
    the file's sha256.

    The checkpoint is serialised in memory first, so that a failed write (e.g. a full disk) is an ``OSError``
    naming ``path`` rather than an error of torch's zip writer; the temporary file is removed.
    """
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    buf = io.BytesIO()
    torch.save({"state_dict": state, "meta": meta}, buf)
    data = buf.getvalue()
    write_bytes_atomic(path, data)
    side = path.with_suffix(path.suffix + ".sha256")
    write_bytes_atomic(side, (json.dumps({"sha256": hashlib.sha256(data).hexdigest(), "key": meta.get("key")})
                              + "\n").encode("utf-8"))


def load_checkpoint(path: Path, *, method: str, key: str) -> dict[str, Any] | None:
    """The checkpoint at ``path`` when it exists and holds ``method`` under configuration ``key``.

    None when absent. A truncated file or one whose checksum differs from its sidecar is moved aside to
    ``<name>.corrupt`` (kept for inspection, then retrained); a readable checkpoint of another method or
    configuration raises :class:`CheckpointError` naming both, since it cannot have got there by accident.
    """
    side = path.with_suffix(path.suffix + ".sha256")
    if not path.exists():
        return None
    try:
        expected = json.loads(side.read_text(encoding="utf-8"))["sha256"]
        ok = _sha256(path) == expected
        ckpt = torch.load(path, map_location="cpu", weights_only=True) if ok else None
    except (OSError, ValueError, KeyError, RuntimeError, EOFError):
        ok, ckpt = False, None
    if not ok or not isinstance(ckpt, dict) or "meta" not in ckpt:
        aside = path.with_name(path.name + ".corrupt")
        path.replace(aside)
        print(f"checkpoint {path}: unreadable or its checksum differs; moved aside to {aside.name}, training again",
              file=sys.stderr)
        return None
    meta = ckpt["meta"]
    if meta.get("method") != method or meta.get("key") != key:
        raise CheckpointError(f"checkpoint {path} holds method {meta.get('method')!r} with configuration "
                              f"{meta.get('key')!r}, not {method!r} with {key!r}; remove it")
    return ckpt
