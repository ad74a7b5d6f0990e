"""One method end to end: train (or load) its models, evaluate them, and store one result per seed.

* A method that trains itself is trained from scratch at ``train_len`` on text only (``scratch``).
* A method applied to a base model (``applies_to``, e.g. every RoPE scaling) uses the base model of the same
  seed: **zero-shot** (the policy :meth:`RunSpec.scale_for` gives its scale at each length) and after a
  **fine-tune** of ``finetune_steps`` at ``finetune_factor × train_len`` (same tokens per step).
* A base model that methods are applied to (RoPE) also stores the **control**: itself given the very same
  fine-tune (``finetuned``). A fine-tuned method is judged against it, and a zero-shot one against the
  base's own ``scratch`` curves on the same weights.
* Tasks (:mod:`posenc.tasks`) train their own models on the task seeds, with the same variants.

Models are cached as checkpoints keyed by a hash of everything that changes their weights, so a base is
trained once per seed and shared by every method applied to it.
"""

from __future__ import annotations

import platform
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from posenc import data as D
from posenc import paths
from posenc import tasks as T
from posenc.experiment import evaluate as EV
from posenc.experiment.checks import check_distinct
from posenc.experiment.presets import PROTOCOL_VERSION, Arch, resolve_device
from posenc.experiment.results import SCHEMA, Result, ResultError, read_result, write_json_atomic
from posenc.experiment.spec import BASELINES, RunSpec, config_hash
from posenc.experiment.train import (
    TrainLog,
    deterministic,
    load_checkpoint,
    pe_shift,
    save_checkpoint,
    train_loop,
    use_compile,
)
from posenc.model import Transformer
from posenc.pe import base as pe_base

__all__ = ["Trained", "run_seed", "train_lm", "finetune", "train_task", "load_model", "primary_variant",
           "comparison_ids", "ensure_results", "tasks_for",
           "is_base_model"]

Progress = Callable[[str], None] | None


@dataclass
class Trained:
    """A trained model, its loss curve and where it came from."""

    model: Transformer
    log: dict[str, Any]
    key: str
    from_cache: bool


def primary_variant(spec: RunSpec) -> str:
    """The variant the verdicts use: ``scratch``; for applied methods ``zero_shot`` when the card says the
    method needs no training (plug-and-play), else ``finetuned``."""
    if not spec.applies_to:
        return "scratch"
    from posenc.cards import card_path, load_card  # torch-free card store, read once per run

    needs = load_card(spec.method).get("needs") if card_path(spec.method).exists() else None
    return "zero_shot" if needs == "none" else "finetuned"


def tasks_for(method: str) -> list[str]:
    """The tasks trained for ``method``: the general ones, plus a task-specific one for the baselines and for
    the methods designed for it (e.g. addition for position coupling)."""
    designed = pe_base.spec(method).designed_for
    return [name for name, t in T.TASKS.items() if t.general or method in BASELINES or designed == name]


def is_base_model(method: str) -> bool:
    """True when some registered method is applied to models trained with ``method`` (it then stores the
    fine-tuned control)."""
    return any(pe_base.spec(m).applies_to == method for m in pe_base.available())


# =========================================================================== samplers
def _lm_sampler(stream: torch.Tensor, batch: int, length: int) -> Callable[[torch.Generator], tuple]:
    """Random windows of ``length`` + 1 bytes of the training stream, sampled on its device."""
    ar = torch.arange(length + 1, device=stream.device)

    def sample(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(0, stream.numel() - length - 1, (batch,), generator=g, device=stream.device)
        win = stream[starts[:, None] + ar].long()
        return win[:, :-1], win[:, 1:]

    return sample


def _set_sampler(x: np.ndarray, y: np.ndarray, batch: int, device: torch.device) -> Callable[[torch.Generator], tuple]:
    """Consecutive batches of a pre-generated example set (moved to the device once)."""
    xt, yt = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    state = {"i": 0}

    def sample(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        i = state["i"]
        state["i"] = (i + batch) % len(xt)
        return xt[i:i + batch], yt[i:i + batch]

    return sample


def _generator(device: torch.device, *seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(int(config_hash(list(seed), 8), 16))


def _is_sampler(pe: pe_base.PositionalEncoding, length: int) -> bool:
    """True when the PE's training positions are not ``arange`` (checked on a few draws, RNG restored)."""
    state = torch.random.get_rng_state()
    try:
        ref = torch.arange(length, dtype=torch.float32)
        return any(not torch.equal(pe.positions(length, training=True).float().cpu(), ref) for _ in range(3))
    finally:
        torch.random.set_rng_state(state)


# =========================================================================== training stages
def _ckpt_key(stage: str, spec: RunSpec, corpus_sha: str, base: str | None = None, task: str | None = None) -> str:
    p = spec.preset.fields()
    for name in ("eval_factors", "eval_bytes", "eval_batch_tokens", "position_bins", "task_examples", "seeds",
                 "name", "log_every"):
        p.pop(name)  # evaluation and bookkeeping fields do not change the weights
    return config_hash({"stage": stage, "method": spec.method, "hparams": dict(spec.hparams), "preset": p,
                        "seed": spec.seed, "corpus": corpus_sha, "base": base, "task": task,
                        "torch": torch.__version__, "protocol": PROTOCOL_VERSION})


def _cached(key: str, spec: RunSpec, model: Transformer, device: torch.device) -> Trained | None:
    ckpt = load_checkpoint(paths.checkpoint_dir() / f"{spec.method}-{key}.pt", method=spec.method, key=key)
    if ckpt is None:
        return None
    model.load_state_dict(ckpt["state_dict"])
    return Trained(model.to(device).eval(), ckpt["meta"]["log"], key, True)


def _store(key: str, spec: RunSpec, model: Transformer, log: dict[str, Any]) -> None:
    save_checkpoint(paths.checkpoint_dir() / f"{spec.method}-{key}.pt", model,
                    {"method": spec.method, "key": key, "log": log})


def _fit(spec: RunSpec, model: Transformer, key: str, device: torch.device, *, sample: Callable, steps: int,
         lr: float, warmup: int, gen_seed: tuple[int, ...], label: str,
         loss_fn: Callable | None = None) -> Trained:
    """Train ``model`` (from the cache when its key is there) and record its loss and PE movement."""
    cached = _cached(key, spec, model, device)
    if cached is not None:
        return cached
    model.to(device)
    initial = {n: q.detach().clone() for n, q in model.pe.named_parameters()}
    t0 = time.perf_counter()
    with deterministic(spec.seed, device) as det:
        tl: TrainLog = train_loop(model, sample, steps=steps, lr=lr, p=spec.preset, device=device,
                                  generator=_generator(device, *gen_seed), label=label, warmup=warmup,
                                  loss_fn=loss_fn, compile=use_compile(spec.compile, device), det=det)
    log = {"loss": tl.loss, "steps": tl.steps, "tokens": tl.tokens, "precision": tl.precision,
           "compile": tl.compile, "wall_s": round(time.perf_counter() - t0, 3), "pe_shift": pe_shift(initial, model),
           **det.info}
    _store(key, spec, model, log)
    return Trained(model.eval(), log, key, False)


def train_lm(spec: RunSpec, corpus: D.Corpus, device: torch.device) -> Trained:
    """The method's language model trained from scratch at ``train_len`` (cached)."""
    p = spec.preset
    key = _ckpt_key("lm", spec, corpus.sha256)
    torch.manual_seed(spec.seed)
    model = spec.model()
    stream = torch.from_numpy(corpus.train).to(device)
    return _fit(spec, model, key, device, sample=_lm_sampler(stream, p.batch_size, p.train_len), steps=p.steps,
                lr=p.lr, warmup=p.warmup, gen_seed=(spec.seed, 0), label=f"{spec.method} [{p.name}]")


def transplant(base: Transformer, spec: RunSpec, scale: float | None) -> Transformer:
    """``base``'s weights (all but its PE) under ``spec``'s PE at ``scale``: the zero-shot model."""
    model = spec.model(scale, Arch(base.cfg.n_layer, base.cfg.n_head, base.cfg.d_model))
    own = {k: v for k, v in base.state_dict().items() if not k.startswith("pe.")}
    missing, unexpected = model.load_state_dict(own, strict=False)
    bad = [k for k in missing if not k.startswith("pe.")] + list(unexpected)
    if bad:
        raise ValueError(f"{spec.method}: cannot transplant the base weights (mismatched keys {bad[:5]})")
    return model.to(next(base.parameters()).device).eval()


def finetune(spec: RunSpec, base: Trained, device: torch.device, *, stage: str,
             sample_for: Callable[[int, int], Callable], loss_fn: Callable | None = None,
             task: str | None = None) -> Trained:
    """``spec``'s PE on ``base``'s weights, fine-tuned ``finetune_steps`` at ``finetune_factor × train_len``
    with the same tokens per step (batch divided by the factor). Position samplers (PoSE ...) exist to reach
    the target length while training short, so they fine-tune at ``train_len`` with their sampled positions.
    ``sample_for(batch, length)`` gives the batch sampler."""
    p = spec.preset
    key = _ckpt_key(stage, spec, "", base.key, task)
    torch.manual_seed(spec.seed + 1)
    model = transplant(base.model, spec, spec.finetune_scale())
    factor = 1 if _is_sampler(model.pe, p.train_len) else p.finetune_factor
    batch = max(1, (p.task_batch if task else p.batch_size) // factor)
    lr = p.task_lr if task else p.lr
    return _fit(spec, model, key, device, sample=sample_for(batch, p.train_len * factor), steps=p.finetune_steps,
                lr=lr, warmup=min(p.warmup, p.finetune_steps // 5), gen_seed=(spec.seed, 1),
                label=f"{spec.method} fine-tune [{p.name}]{' ' + task if task else ''}", loss_fn=loss_fn)


def train_task(spec: RunSpec, task: T.Task, device: torch.device) -> Trained:
    """A fresh model with ``spec``'s PE trained on ``task`` alone at ``train_len`` (cached)."""
    p = spec.preset
    key = _ckpt_key("task", spec, "", task=task.name)
    torch.manual_seed(spec.seed)
    model = spec.model(arch=p.arch(task=True))
    x, y = task.train_set(p.task_steps * p.task_batch, p.train_len, spec.seed)
    return _fit(spec, model, key, device, sample=_set_sampler(x, y, p.task_batch, device), steps=p.task_steps,
                lr=p.task_lr, warmup=p.warmup, gen_seed=(spec.seed, 2), label=f"{spec.method} [{p.name}] {task.name}")


def _task_ft_sampler(task: T.Task, spec: RunSpec, device: torch.device) -> Callable[[int, int], Callable]:
    def make(batch: int, length: int) -> Callable:
        x, y = task.train_set(spec.preset.finetune_steps * batch, length, spec.seed + 1)
        return _set_sampler(x, y, batch, device)
    return make


# =========================================================================== one seed
def git_commit() -> str:
    """The checkout's HEAD commit, or 'unknown' outside a git checkout (as results record it)."""
    return paths.git_commit() or "unknown"


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def _existing(path: Path, key: str) -> Result | None:
    """A complete result with this configuration key, or None (an unreadable one is moved aside)."""
    if not path.exists():
        return None
    try:
        res = read_result(path)
    except ResultError as e:
        aside = path.with_name(path.name + ".corrupt")
        path.replace(aside)
        print(f"{e}; moved aside to {aside.name}, computing it again", file=sys.stderr)
        return None
    return res if res.complete and res.key == key else None


def _execution(train: dict[str, Any], tasks: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What the training stages behind a result did: ``compile`` ("on", "off", "failed: <reason>" when any
    stage failed to compile, "mixed" when stages differ, e.g. a cached base model trained elsewhere) and
    ``bitwise_reproducible`` (false when any stage used a non-deterministic kernel)."""
    logs = [v for k, v in train.items() if k.endswith("log")]
    logs += [log for t in tasks.values() for log in t.get("logs", {}).values()]
    modes = {str(log.get("compile", "off")) for log in logs}
    failed = sorted(m for m in modes if m.startswith("failed"))
    mode = failed[0] if failed else modes.pop() if len(modes) == 1 else "mixed" if modes else "off"
    return {"compile": mode, "bitwise_reproducible": all(log.get("bitwise_reproducible") is True for log in logs)}


def _set_aside(path: Path, key: str) -> None:
    """A readable result of another configuration at ``path`` (written under an older protocol or preset
    definition) is renamed to ``<name>.key-<its key>`` before the new one is written: never replaced."""
    try:
        old = read_result(path) if path.exists() else None
    except ResultError:
        return
    if old is not None and old.key != key:
        aside = path.with_name(f"{path.name}.key-{old.key}")
        path.replace(aside)
        print(f"{paths.relative(path)}: holds configuration {old.key}, not {key}; kept as {aside.name}",
              file=sys.stderr)


def run_seed(spec: RunSpec, *, results_dir: str | Path | None = None, force: bool = False,
             corpus: D.Corpus | None = None, progress: Progress = None) -> Result:
    """Train, evaluate and store ``spec`` for its seed; a complete result with the same key is reused."""
    path = spec.result_path(results_dir)
    if not force and (old := _existing(path, spec.key)) is not None:
        return old
    check_distinct(spec)  # a degenerate configuration is an error, not a result
    # Bias methods push many logits far below zero, whose exp() is subnormal in float32; CPU arithmetic on
    # subnormals is several times slower, and flushing them to zero changes no probability above 1e-38.
    torch.set_flush_denormal(True)
    dev = resolve_device(spec.device)
    corpus = corpus or D.load_corpus()
    p = spec.preset
    t0 = time.perf_counter()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    say = progress or (lambda _msg: None)
    primary = primary_variant(spec)
    tasks = {name: T.TASKS[name] for name in tasks_for(spec.method)} if spec.seed in p.task_seeds else {}
    train: dict[str, Any] = {}
    task_out: dict[str, dict[str, Any]] = {}
    stream = torch.from_numpy(corpus.train).to(dev)

    def lm_sample(batch: int, length: int) -> Callable:
        return _lm_sampler(stream, batch, length)

    if spec.applies_to:
        base_spec = RunSpec.create(spec.applies_to, p, spec.seed, device=spec.device, compile=spec.compile)
        say(f"{spec.applies_to} base model")
        base = train_lm(base_spec, corpus, dev)
        say("fine-tune")
        ft = finetune(spec, base, dev, stage="lm-ft", sample_for=lm_sample)
        models: dict[str, Callable[[int], Transformer]] = {
            "zero_shot": lambda length: transplant(base.model, spec, spec.scale_for(length)),
            "finetuned": lambda length: ft.model,
        }
        train = {"base": spec.applies_to, "base_log": base.log, "finetune_log": ft.log}
        for name, task in tasks.items():
            say(f"task {name}")
            tb = train_task(base_spec, task, dev)
            tft = finetune(spec, tb, dev, stage="task-ft", sample_for=_task_ft_sampler(task, spec, dev), task=name)
            task_out[name] = {
                "zero_shot": EV.task_curve(lambda length, m=tb.model: transplant(m, spec, spec.scale_for(length)),
                                           task, p, dev),
                "finetuned": EV.task_curve(lambda length, m=tft.model: m, task, p, dev),
                "logs": {"base": tb.log, "finetune": tft.log},
            }
    else:
        say("train")
        tr = train_lm(spec, corpus, dev)
        models = {"scratch": lambda length: tr.model}
        train = {"log": tr.log}
        control = is_base_model(spec.method)
        if control:  # the control: the base given the fine-tune its applied methods get
            say("control fine-tune")
            ctl = finetune(spec, tr, dev, stage="lm-ft", sample_for=lm_sample)
            models["finetuned"] = lambda length: ctl.model
            train["finetune_log"] = ctl.log
        for name, task in tasks.items():
            say(f"task {name}")
            tt = train_task(spec, task, dev)
            task_out[name] = {"scratch": EV.task_curve(lambda length, m=tt.model: m, task, p, dev),
                              "logs": {"train": tt.log}}
            if control:
                tft = finetune(spec, tt, dev, stage="task-ft", sample_for=_task_ft_sampler(task, spec, dev),
                               task=name)
                task_out[name]["finetuned"] = EV.task_curve(lambda length, m=tft.model: m, task, p, dev)
                task_out[name]["logs"]["finetune"] = tft.log
    variants = {}
    for name, model_for in models.items():
        say(f"evaluate {name}")
        variants[name] = EV.lm_curves(model_for, p, corpus, dev)
    result = {
        "schema": SCHEMA, "protocol": PROTOCOL_VERSION, "complete": True, "method": spec.method, "preset": p.name,
        "seed": spec.seed, "tag": spec.tag, "key": spec.key,
        "kind": "applied" if spec.applies_to else "scratch", "applies_to": spec.applies_to, "primary": primary,
        "hyperparameters": {**pe_base.hyperparameters(spec.method), **dict(spec.hparams)},
        "user_hparams": dict(spec.user_hparams), "overrides": dict(spec.overrides), "config": p.fields(),
        "metadata": {
            "device": dev.type, "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda"
            else platform.processor() or platform.machine(),
            "torch": torch.__version__, "python": platform.python_version(), "git_commit": git_commit(),
            "corpus": corpus.name, "corpus_sha256": corpus.sha256, "split": corpus.split_info(),
            "wall_time_s": round(time.perf_counter() - t0, 3), "peak_memory_mb": round(_peak_memory_mb(dev), 1),
            "threads": torch.get_num_threads(), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **_execution(train, task_out),
        },
        "train": train, "variants": variants, "tasks": task_out,
    }
    _set_aside(path, spec.key)
    write_json_atomic(path, result)
    return Result.from_json(result, path)


def load_model(spec: RunSpec, corpus: D.Corpus | None = None, variant: str | None = None) -> Transformer:
    """The model whose numbers ``run_seed`` stores for ``variant`` (default: the primary one), through the
    same caches and the same :class:`RunSpec` — so a notebook's figures show the measured model. Zero-shot
    variants are returned at the fine-tune length's scale."""
    dev = resolve_device(spec.device)
    corpus = corpus or D.load_corpus()
    variant = variant or primary_variant(spec)
    stream = torch.from_numpy(corpus.train).to(dev)
    if not spec.applies_to:
        tr = train_lm(spec, corpus, dev)
        if variant == "finetuned":
            return finetune(spec, tr, dev, stage="lm-ft",
                            sample_for=lambda b, length: _lm_sampler(stream, b, length)).model
        return tr.model
    base_spec = RunSpec.create(spec.applies_to, spec.preset, spec.seed, device=spec.device, compile=spec.compile)
    base = train_lm(base_spec, corpus, dev)
    if variant == "zero_shot":
        return transplant(base.model, spec, spec.scale_for(spec.preset.finetune_factor * spec.preset.train_len))
    return finetune(spec, base, dev, stage="lm-ft", sample_for=lambda b, length: _lm_sampler(stream, b, length)).model


def comparison_ids(spec: RunSpec) -> list[str]:
    """Every method a figure or verdict of ``spec``'s method needs: the baselines, its base model and the
    comparators its card's tests name (``control`` is the base model's own variants)."""
    from posenc.cards import find_card  # torch-free card store
    from posenc.experiment.claims import comparators

    card = find_card(spec.method)
    ids = set(BASELINES) | (comparators(card) - {"control"} if card is not None else set())
    if spec.applies_to:
        ids.add(spec.applies_to)
    ids.discard(spec.method)
    return sorted(i for i in ids if i in pe_base.available())


def ensure_results(ids: list[str], spec: RunSpec, seeds: list[int], *, results_dir: str | Path | None = None,
                   progress: Progress = None) -> dict[str, list[Result]]:
    """The canonical results of ``ids`` at ``spec``'s preset (and overrides) for ``seeds``: stored ones are
    read, missing ones are computed now through the same caches, saying so."""
    say = progress or print
    out: dict[str, list[Result]] = {}
    for m in ids:
        other = RunSpec.create(m, spec.preset, seeds[0], overrides=dict(spec.overrides), device=spec.device,
                               compile=spec.compile)
        rs = []
        for s in seeds:
            path = other.result_path(results_dir, s)
            if _existing(path, other.key) is None:
                say(f"{m} (seed {s}) has no result at this preset yet: running it first")
            rs.append(run_seed(other.with_seed(s), results_dir=results_dir))
        out[m] = rs
    return out
