"""Evaluation: language modelling on identical text at every length, the loss against position, and tasks.

Every length scores the same validation bytes (:func:`posenc.data.eval_span`): a fixed span of
``eval_bytes`` targets, preceded by ``max_len`` bytes of context.

* ``lm``: the span split into non-overlapping windows of the evaluation length; every target is scored, so
  a window's first tokens see little context (the usual non-overlapping protocol).
* ``lm_sliding``: windows of the evaluation length with stride length/2, scoring only their last half: every
  scored byte has at least length/2 bytes of context. The scored bytes are the same span as ``lm``.
* ``position``: at the longest length, the mean loss at each position of the window (log-spaced bins):
  where a method breaks shows up as a rise past the training length.
* tasks: exact-match accuracy on the same examples for every method (:mod:`posenc.tasks`), with a Wilson
  interval.

``model_for(length)`` returns the model to run at that length, so a zero-shot method gets the scale the
policy gives it for that length (:meth:`posenc.experiment.spec.RunSpec.scale_for`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from posenc import data as D
from posenc import tasks as T
from posenc.experiment.presets import Preset
from posenc.experiment.stats import wilson
from posenc.experiment.train import precision_for
from posenc.model import Transformer

__all__ = ["ModelFor", "lm_curves", "task_curve", "position_bins"]

ModelFor = Callable[[int], Transformer]
#: Exceptions a model may raise at a length it cannot handle (e.g. positions past a learned table).
LENGTH_ERRORS = (ValueError, IndexError, RuntimeError)


def _nll(model: Transformer, x: Tensor, y: Tensor, device: torch.device, last: int | None = None) -> Tensor:
    """Per-token negative log-likelihood (B, T) in float32, under the device's autocast; of the last ``last``
    targets only (B, last) when given (the model then computes only those rows in its final layer)."""
    prec = precision_for(device)
    with torch.no_grad(), torch.autocast(device.type, dtype=prec.dtype or torch.float32,
                                         enabled=prec.dtype is not None):
        logits, _ = model(x, last=last)
    return F.cross_entropy(logits.float().transpose(1, 2), y if last is None else y[:, -last:], reduction="none")


def position_bins(max_len: int, bins: int) -> list[tuple[int, int]]:
    """Log-spaced ``[start, end)`` bins over positions 0..max_len−1 (the first bin starts at 0)."""
    edges = np.unique(np.round(np.geomspace(1, max_len, bins + 1)).astype(int))
    edges[0] = 0
    edges[-1] = max_len
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]


def _windows(stream: Tensor, starts: list[int], length: int) -> tuple[Tensor, Tensor]:
    idx = torch.as_tensor(starts, device=stream.device)[:, None] + torch.arange(length + 1, device=stream.device)
    win = stream[idx]
    return win[:, :-1], win[:, 1:]


def _score(model: Transformer, stream: Tensor, starts: list[int], length: int, keep: int, batch: int,
           device: torch.device, per_position: bool = False) -> tuple[float, int, Tensor | None]:
    """Sum of NLL over the last ``keep`` targets of each window, their count, and optionally the per-position
    sum over windows (length,). One host sync per call."""
    total = torch.zeros((), dtype=torch.float64, device=device)
    pos_sum = torch.zeros(length, dtype=torch.float64, device=device) if per_position else None
    for i in range(0, len(starts), batch):
        x, y = _windows(stream, starts[i:i + batch], length)
        nll = _nll(model, x, y, device, None if per_position or keep == length else keep)
        total += nll[:, nll.size(1) - keep:].double().sum()
        if pos_sum is not None:
            pos_sum += nll.double().sum(0)
    return float(total.item()), len(starts) * keep, pos_sum


def _point(total: float, count: int, windows: int) -> dict[str, Any]:
    mean = total / count
    return {"nll": mean, "ppl": math.exp(min(mean, 700.0)), "bpb": mean / math.log(2), "tokens": count,
            "windows": windows}


def lm_curves(model_for: ModelFor, p: Preset, corpus: D.Corpus, device: torch.device,
              progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """``{"lm": [...], "lm_sliding": [...], "position": [...]}`` at every evaluation length.

    Points are ``{"length", "factor", "nll", "ppl", "bpb", "tokens", "windows"}``; a length the model cannot
    handle gives ``{"length", "factor", "error"}``.
    """
    span, start = D.eval_span(corpus.valid, p.eval_bytes, p.max_len)
    stream = torch.from_numpy(span.astype(np.int64)).to(device)
    out: dict[str, Any] = {"lm": [], "lm_sliding": [], "position": []}
    for factor in p.eval_factors:
        length = factor * p.train_len
        base = {"length": length, "factor": factor}
        batch = max(1, p.eval_batch_tokens // length)
        # Methods that sample positions at evaluation (randomized PE) draw the same positions whatever ran
        # before: every evaluation of a length starts from one seed.
        torch.manual_seed(T.EVAL_SEED + length)
        try:
            model = model_for(length)
            starts = list(range(start, start + p.eval_bytes, length))
            last = factor == p.eval_factors[-1]
            total, count, pos_sum = _score(model, stream, starts, length, length, batch, device, per_position=last)
            out["lm"].append({**base, **_point(total, count, len(starts))})
            stride = max(1, length // 2)
            # Window j ends at the j-th scored block's end; its start reaches back into the context.
            ends = range(start + stride, start + p.eval_bytes + 1, stride)
            s_starts = [e - length for e in ends]
            total, count, _ = _score(model, stream, s_starts, length, stride, batch, device)
            out["lm_sliding"].append({**base, **_point(total, count, len(s_starts))})
            if pos_sum is not None:
                per_pos = (pos_sum / len(starts)).cpu().numpy()
                out["position"] = [{"start": a, "end": b, "nll": float(per_pos[a:b].mean())}
                                   for a, b in position_bins(length, p.position_bins)]
        except LENGTH_ERRORS as e:
            err = f"{type(e).__name__}: {e}"
            out["lm"].append({**base, "error": err})
            out["lm_sliding"].append({**base, "error": err})
        if progress is not None:
            progress(f"{length} tokens")
    return out


def task_curve(model_for: ModelFor, task: T.Task, p: Preset, device: torch.device) -> list[dict[str, Any]]:
    """Exact-match accuracy on ``task`` at every evaluation length, with its Wilson 95% interval.

    The examples depend only on the task, the length and :data:`posenc.tasks.EVAL_SEED`: every method and
    seed answers the same questions.
    """
    out = []
    for factor in p.eval_factors:
        length = factor * p.train_len
        base = {"length": length, "factor": factor}
        torch.manual_seed(T.EVAL_SEED + length)  # as in lm_curves
        try:
            model = model_for(length)
            x_np, y_np = task.eval_set(length, p.task_examples)
            x = torch.from_numpy(x_np).to(device)
            y = torch.from_numpy(y_np).to(device)
            batch = max(1, p.eval_batch_tokens // length)
            answer = T.answer_width(y_np)  # the model computes only these final rows in its last layer
            correct = torch.zeros((), dtype=torch.long, device=device)
            prec = precision_for(device)
            for i in range(0, len(x), batch):
                with torch.no_grad(), torch.autocast(device.type, dtype=prec.dtype or torch.float32,
                                                     enabled=prec.dtype is not None):
                    logits, _ = model(x[i:i + batch], last=answer)
                yy = y[i:i + batch, length - answer:]
                hit = (logits.argmax(-1) == yy) | (yy == T.IGNORE)
                correct += hit.all(dim=1).sum()
            k, n = int(correct.item()), int(len(x))
            lo, hi = wilson(k, n)
            out.append({**base, "accuracy": k / n, "correct": k, "n": n, "ci": [lo, hi]})
        except LENGTH_ERRORS as e:
            out.append({**base, "error": f"{type(e).__name__}: {e}"})
    return out
