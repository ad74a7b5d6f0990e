"""Synthetic results for the aggregation, claims and leaderboard tests (no training)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from posenc.experiment.presets import PROTOCOL_VERSION, get_preset
from posenc.experiment.results import SCHEMA, Result

FACTORS = (1, 2, 4, 8, 16, 32)


def lm_curve(ppl: Mapping[int, float], train_len: int = 64) -> list[dict[str, Any]]:
    return [{"length": f * train_len, "factor": f, "ppl": v, "nll": math.log(v), "bpb": math.log2(v),
             "tokens": 16384, "windows": 16384 // (f * train_len)} for f, v in ppl.items()]


def task_curve(acc: Mapping[int, float], n: int = 200, train_len: int = 64) -> list[dict[str, Any]]:
    return [{"length": f * train_len, "factor": f, "accuracy": round(a * n) / n, "correct": round(a * n), "n": n}
            for f, a in acc.items()]


def make_result(method: str, seed: int, variants: Mapping[str, Mapping[int, float]], *, primary: str | None = None,
                applies_to: str | None = None, tasks: Mapping[str, Mapping[str, Mapping[int, float]]] | None = None,
                protocol: int = PROTOCOL_VERSION, moved: bool | None = None) -> Result:
    cfg = get_preset("cpu").fields()
    primary = primary or next(iter(variants))
    log: dict[str, Any] = {"loss": [{"step": 0, "loss": 5.0}]}
    if moved is not None:
        log["pe_shift"] = {"parameters": {"table": {"max_abs": 1.0, "relative_l2": 0.5 if moved else 0.0}},
                           "moved": moved}
    data = {
        "schema": SCHEMA, "protocol": protocol, "complete": True, "method": method, "preset": "cpu", "seed": seed,
        "tag": "", "key": f"key-{method}", "kind": "applied" if applies_to else "scratch", "applies_to": applies_to,
        "primary": primary, "hyperparameters": {}, "user_hparams": {}, "overrides": {}, "config": cfg,
        "metadata": {"device": "cpu", "git_commit": "0" * 40, "wall_time_s": 1.0},
        "train": {"log": log},
        "variants": {v: {"lm": lm_curve(c), "lm_sliding": lm_curve(c), "position": []} for v, c in variants.items()},
        "tasks": {t: {v: task_curve(c) for v, c in per.items()} for t, per in (tasks or {}).items()},
    }
    return Result.from_json(data)
