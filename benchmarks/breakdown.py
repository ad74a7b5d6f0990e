"""Where one cpu-preset training run spends its time, and whether its loop waits on the host (a script, not a test).

The run is RoPE's language model at the ``cpu`` preset, trained by the experiments' own loop
(:func:`posenc.experiment.train.train_loop`, with the runner's sampler, optimiser, schedule and clipping) for
``--steps`` steps (the preset trains 600; fewer keep the script short, and a step costs the same throughout),
then evaluated by the experiments' own evaluation (:func:`posenc.experiment.evaluate.lm_curves`: every length,
both protocols, the loss against position). Nothing is re-implemented: the components are timed by wrapping
what the loop calls (the sampler, the model's forward, the loss, ``Tensor.backward``, gradient clipping and
``Optimizer.step``); the rest of the loop (learning-rate schedule, zero_grad, loss accumulation) is *other*.
On the CPU every operator finishes before it returns, so wall-clock intervals are the components' own times.

Host syncs: a second, shorter pass runs the same loop under a dispatch mode that records every operator that
needs its result on the host on a GPU (``aten._local_scalar_dense`` — what ``.item()``, ``float()``,
``int()`` and ``bool()`` of a tensor run — and the data-dependent ``nonzero``, ``masked_select`` and
``unique``), plus Python-level ``.cpu()``, ``.numpy()`` and ``.tolist()``, each attributed to the step it
happened in. The loop reads its loss once per ``log_every`` steps; any read at another step is a per-step
sync. Reads made inside torch's optimiser are listed apart: the unfused AdamW used on the CPU keeps its step
counter on the host by design and reads it every step (also on a GPU, where that waits for nothing); on CUDA
the loop uses the fused AdamW, which keeps the counter on the device and reads nothing. The counter is first
shown to catch a deliberate ``.item()`` per step.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/breakdown.py --out benchmarks/breakdown.md
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook
from torch.utils._python_dispatch import TorchDispatchMode

import posenc
from posenc import data as D
from posenc.experiment import evaluate as EV
from posenc.experiment import runner as RN
from posenc.experiment import train as TR
from posenc.experiment.checks import check_distinct
from posenc.experiment.spec import RunSpec

METHOD = "rope"
DELIBERATE_STEPS = 4
COMPONENTS = ("data", "forward", "loss", "backward", "grad clip", "optimizer step")


# =========================================================================== timing
class Timers:
    """Seconds per component, summed over the calls made while :meth:`installed` is active."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: Counter[str] = Counter()
        #: When each step began (the loop samples its batch first thing), and the totals when step 1 began.
        self.step_starts: list[float] = []
        self.at_step1: dict[str, float] = {}

    def sampler(self, sample: TR.Sampler) -> TR.Sampler:
        timed = self.wrap("data", sample)

        def call(g: torch.Generator) -> tuple[Tensor, Tensor]:
            self.step_starts.append(time.perf_counter())
            if len(self.step_starts) == 2:
                self.at_step1 = dict(self.seconds)
            return timed(g)
        return call

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kw)
            finally:
                self.seconds[name] += time.perf_counter() - t0
                self.calls[name] += 1
        return timed

    @contextlib.contextmanager
    def installed(self, model: nn.Module) -> Iterator[None]:
        """Time the model's forward (hooks), the loss, backward, clipping and every optimiser step."""
        start: list[float] = []
        marks: dict[str, float] = {}

        def pre_forward(*_: Any) -> None:
            start.append(time.perf_counter())

        def post_forward(*_: Any) -> None:
            self.seconds["forward"] += time.perf_counter() - start.pop()
            self.calls["forward"] += 1

        def pre_step(*_: Any) -> None:
            marks["step"] = time.perf_counter()

        def post_step(*_: Any) -> None:
            self.seconds["optimizer step"] += time.perf_counter() - marks.pop("step")
            self.calls["optimizer step"] += 1

        handles = [model.register_forward_pre_hook(pre_forward), model.register_forward_hook(post_forward),
                   register_optimizer_step_pre_hook(pre_step), register_optimizer_step_post_hook(post_step)]
        saved = (nn.functional.cross_entropy, Tensor.backward, nn.utils.clip_grad_norm_)
        nn.functional.cross_entropy = self.wrap("loss", saved[0])  # type: ignore[assignment]
        Tensor.backward = self.wrap("backward", saved[1])  # type: ignore[method-assign]
        nn.utils.clip_grad_norm_ = self.wrap("grad clip", saved[2])  # type: ignore[assignment]
        try:
            yield
        finally:
            for h in handles:
                h.remove()
            nn.functional.cross_entropy, Tensor.backward, nn.utils.clip_grad_norm_ = saved  # type: ignore[misc]


# =========================================================================== host syncs
class HostReads(TorchDispatchMode):
    """Operators whose result a GPU would have to send to the host, by the step they happen in."""

    OPS = {"aten::_local_scalar_dense", "aten::nonzero", "aten::masked_select", "aten::_unique2",
           "aten::unique_consecutive", "aten::unique_dim"}

    def __init__(self) -> None:
        super().__init__()
        self.step = -1
        self.reads: list[tuple[int, str]] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func._schema.name in self.OPS:
            self.reads.append((self.step, func._schema.name.split("::")[1] + _in_optimizer()))
        return func(*args, **(kwargs or {}))


def _in_optimizer() -> str:
    """" (optimizer)" when torch's optimiser is on the stack: the unfused AdamW used on the CPU reads its step
    counter, which it keeps on the host by design (also on a GPU); the fused CUDA AdamW the loop uses there
    keeps it on the device and reads nothing."""
    frame = sys._getframe(2)
    while frame is not None:
        if f"{os.sep}torch{os.sep}optim{os.sep}" in frame.f_code.co_filename:
            return " (optimizer)"
        frame = frame.f_back
    return ""


@contextlib.contextmanager
def python_reads(counter: HostReads) -> Iterator[None]:
    """Also record ``.cpu()``, ``.numpy()`` and ``.tolist()``: no-ops or plain reads on a CPU tensor (so the
    dispatcher never sees them), copies to the host on a GPU. (``.to(device)`` is not counted: in a CPU run its
    target is the run's device, which on a GPU is the GPU.)"""
    saved = {name: getattr(Tensor, name) for name in ("cpu", "numpy", "tolist")}

    def record(name: str) -> Callable[..., Any]:
        def call(self: Tensor, *args: Any, **kw: Any) -> Any:
            counter.reads.append((counter.step, f".{name}()"))
            return saved[name](self, *args, **kw)
        return call

    for name in saved:
        setattr(Tensor, name, record(name))
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(Tensor, name, fn)


def counted_loop(spec: RunSpec, sample: TR.Sampler, steps: int, *, item_each_step: bool = False) -> HostReads:
    """The training loop for ``steps`` steps of a fresh model, every host read recorded with its step."""
    p = spec.preset
    counter = HostReads()
    torch.manual_seed(spec.seed)
    model = spec.model()

    def stepping(g: torch.Generator) -> tuple[Tensor, Tensor]:
        counter.step += 1  # the loop samples once per step, first thing
        return sample(g)

    def loss_fn(logits: Tensor, y: Tensor) -> Tensor:
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
        if item_each_step:
            loss.item()  # the deliberate per-step sync the counter must catch
        return loss

    with counter, python_reads(counter):
        TR.train_loop(model, stepping, steps=steps, lr=p.lr, p=p, device=torch.device("cpu"),
                      generator=torch.Generator().manual_seed(0), label="breakdown",
                      loss_fn=loss_fn if item_each_step else None)
    return counter


# =========================================================================== the report
def run(steps: int, check_steps: int) -> dict[str, Any]:
    torch.set_flush_denormal(True)  # as run_seed does
    device = torch.device("cpu")
    spec = RunSpec.create(METHOD, "cpu", 0, device="cpu", compile="off")
    p = spec.preset
    t0 = time.perf_counter()
    corpus = D.load_corpus()
    stream = torch.from_numpy(corpus.train).to(device)
    sample = RN._lm_sampler(stream, p.batch_size, p.train_len)  # the runner's own sampler
    t_corpus = time.perf_counter() - t0
    checks = []
    for _ in range(2):  # the local-window check that every run makes first, cold then warm
        t0 = time.perf_counter()
        check_distinct(spec)
        checks.append(time.perf_counter() - t0)

    torch.manual_seed(spec.seed)
    model = spec.model()
    timers = Timers()
    t0 = time.perf_counter()
    with timers.installed(model):
        log = TR.train_loop(model, timers.sampler(sample), steps=steps, lr=p.lr, p=p, device=device,
                            generator=torch.Generator().manual_seed(0), label="breakdown")
    end = time.perf_counter()
    timers.step_starts.append(end)
    loop = {"setup": timers.step_starts[0] - t0, "first step": timers.step_starts[1] - timers.step_starts[0],
            "steady": end - timers.step_starts[1]}
    t0 = time.perf_counter()
    curves = EV.lm_curves(lambda _length: model, p, corpus, device)
    eval_s = time.perf_counter() - t0
    bad = [pt for pt in curves["lm"] if "error" in pt]
    if bad:
        raise RuntimeError(f"evaluation failed: {bad}")

    deliberate = counted_loop(spec, sample, DELIBERATE_STEPS, item_each_step=True)
    clean = counted_loop(spec, sample, check_steps)
    return {"spec": spec, "steps": steps, "loop": loop, "timers": timers, "eval_s": eval_s, "log": log,
            "corpus_s": t_corpus, "checks": checks, "deliberate": deliberate, "clean": clean,
            "check_steps": check_steps, "deliberate_steps": DELIBERATE_STEPS, "eval_ppl_1x": curves["lm"][0]["ppl"]}


def render(r: dict[str, Any], command: str) -> str:
    spec, steps, timers, loop = r["spec"], r["steps"], r["timers"], r["loop"]
    p = spec.preset
    n = steps - 1  # the steady steps: all but the first
    parts = {name: timers.seconds[name] - timers.at_step1.get(name, 0.0) for name in COMPONENTS}
    steady = loop["steady"]
    rows = [*parts.items(), ("other (schedule, zero_grad, loss accumulation, hooks)", steady - sum(parts.values()))]
    per_step = steady / n
    full_train = loop["setup"] + loop["first step"] + per_step * (p.steps - 1)
    out = [
        "# Time breakdown of one cpu-preset run",
        "",
        f"Command: `{command}`",
        "",
        f"RoPE, `cpu` preset: {p.n_layer} layers, d={p.d_model}, {p.n_head} heads, batch {p.batch_size} × "
        f"{p.train_len} bytes; {steps} of the preset's {p.steps} training steps of the experiments' own loop, "
        "then the preset's whole language-model evaluation (lengths "
        f"{', '.join(str(f * p.train_len) for f in p.eval_factors)}, both protocols and the loss against "
        f"position). posenc {posenc.__version__}, torch {torch.__version__}, {torch.get_num_threads()} compute "
        f"thread(s) (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}), {platform.machine()}, fp32, "
        "eager, subnormals flushed. **The machine's two cores were shared with a running experiment sweep while "
        "this ran, so the absolute times are pessimistic; the shares are what to read.**",
        "",
        f"## Training loop: the steady steps (2 to {steps})",
        "",
        "| component | seconds | ms per step | share |",
        "|---|---|---|---|",
    ]
    for name, secs in rows:
        out.append(f"| {name} | {secs:.2f} | {1000 * secs / n:.1f} | {100 * secs / steady:.1f}% |")
    out += [
        f"| **total** | **{steady:.2f}** | **{1000 * per_step:.1f}** | 100% |",
        "",
        f"{p.batch_size * p.train_len / per_step:,.0f} tokens per second in the steady steps.",
        "",
        "## The rest of the run",
        "",
        "| part | seconds |",
        "|---|---|",
        f"| the loop's setup: building AdamW (its first use in a process imports torch's compiler stack) | "
        f"{loop['setup']:.2f} |",
        f"| the first step | {loop['first step']:.2f} |",
        f"| evaluation (all {len(p.eval_factors)} lengths, both protocols, loss against position) | "
        f"{r['eval_s']:.2f} |",
        f"| corpus load and training stream | {r['corpus_s']:.2f} |",
        f"| local-window check (once per run), first / second call | {r['checks'][0]:.2f} / {r['checks'][1]:.2f} |",
        "",
        f"Projected to the preset's {p.steps} steps, training takes about {full_train:.0f} s and evaluation is "
        f"{100 * r['eval_s'] / (r['eval_s'] + full_train):.0f}% of the language model's train-and-evaluate time. "
        f"(The model after {steps} steps scores perplexity {r['eval_ppl_1x']:.2f} per byte at 1×.)",
        "",
        "## Host syncs in the training loop",
        "",
    ]
    clean, deliberate = r["clean"], r["deliberate"]
    own = [(step, name) for step, name in clean.reads if not name.endswith("(optimizer)")]
    caught = [(step, name) for step, name in deliberate.reads if not name.endswith("(optimizer)")]
    opt_steps = sorted({step for step, name in clean.reads if name.endswith("(optimizer)")})
    by_step = sorted({step for step, _ in own})
    log_steps = [s for s in range(r["check_steps"]) if (s + 1) % p.log_every == 0 or s == r["check_steps"] - 1]
    stray = [s for s in by_step if s not in log_steps]
    out += [
        f"The counter catches a deliberate `.item()` of the loss at every step: {len(caught)} reads outside the "
        f"optimiser in {r['deliberate_steps']} steps, at steps {[s for s, _ in caught]}.",
        "",
        f"The loop itself, {r['check_steps']} steps with `log_every` = {p.log_every}: {len(own)} host read(s) "
        f"outside the optimiser ({', '.join(sorted({name for _, name in own})) or 'none'}), at step(s) "
        f"{by_step}; the log lines fall at steps {log_steps}. "
        + ("**No per-step host sync**: the loop reads the loss once per log line and at its end."
           if not stray else f"**Per-step host reads at steps {stray[:10]}**: the loop waits on the host."),
        "",
        f"Inside the optimiser: {len(clean.reads) - len(own)} reads at {len(opt_steps)} of {r['check_steps']} "
        "steps: the unfused CPU AdamW reads its step counter, a host tensor by design (PyTorch keeps it on the "
        "host when the optimiser is neither fused nor capturable, also on a GPU, so reading it waits for "
        "nothing); on CUDA the loop builds the fused AdamW, whose counter stays on the device.",
        "",
    ]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=150, help="training steps timed (default 150 of the preset's 600)")
    ap.add_argument("--check-steps", type=int, default=100,
                    help="steps of the host-sync pass (default 100: two log lines at the cpu preset)")
    ap.add_argument("--out", help="write the report (Markdown) here as well")
    args = ap.parse_args()
    if args.steps < 2 or args.check_steps < 1:
        ap.error("--steps must be >= 2 (the first step is reported apart) and --check-steps >= 1")
    flags = (f" --steps {args.steps}" if args.steps != 150 else "") + (
        f" --check-steps {args.check_steps}" if args.check_steps != 100 else "") + (
        f" --out {args.out}" if args.out else "")
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    command = f"OMP_NUM_THREADS={threads} .venv/bin/python benchmarks/breakdown.py{flags}"
    text = render(run(args.steps, args.check_steps), command)
    print(text)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
