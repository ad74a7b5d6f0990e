"""How long a sweep will take on a GPU, estimated on the CPU from counted work (the gpu sweep's dry run).

Nothing here needs a GPU. The work of one (method, seed) — what :func:`posenc.experiment.runner.run_seed`
trains and evaluates, listed by :func:`workload` — is measured once per method on the CPU: one training step
(forward, loss, backward) at batch 1 and 2, and one evaluation forward at batch 1 of every shape, run under a
dispatch mode that counts aten operators, the kernels among them (views, reshapes and bare allocations
excluded), their FLOPs (``torch.utils.flop_counter``) and the bytes each kernel reads and writes. FLOPs and
bytes at the real batch follow by linearity; operator counts do not depend on the batch (explicit-path
evaluation is measured with its chunk cap divided by the batch, so it is cut into the same chunks as at the
real batch).

A stated device model turns the counts into time (:class:`DeviceModel`). Two are used, both for one H100:
the **estimate** (:data:`NOMINAL`), a best guess from what was measured on an H100 of the kind this project
is lent (798 TFLOP/s on 8192³ bf16 products, 3.0 TB/s copy bandwidth), and a **bound**
(:data:`CONSERVATIVE`), which halves every rate again. Neither has been checked against a sweep on a GPU;
until one has, the truth is expected between them.

* **host**: every dispatched operator costs ``host_us`` of CPU time in its process (eager PyTorch's Python,
  dispatcher and launch overhead is typically 5–10 µs per operator on a server CPU; 12 µs is the estimate's
  figure, 20 µs the bound's);
* **device**: every kernel costs ``kernel_us`` (a launch-bound small kernel on an H100 takes 2–5 µs: 3 µs
  and 5 µs), plus its FLOPs at ``tflops`` and its bytes at ``tbps``, summed rather than overlapped. The
  estimate takes 200 TFLOP/s (a quarter of the measured bf16 rate: the products of a small model are far from
  the peak) and the measured 3.0 TB/s; the bound takes 100 TFLOP/s and 1.5 TB/s. Both count bytes in float32
  although the GPU runs bf16 autocast, a reserve of up to 2× on the tensors autocast narrows;
* **the optimiser** runs as CUDA's fused AdamW plus foreach gradient clipping, which the CPU cannot show:
  ``opt_kernels`` kernels and ``opt_ops`` operators per step are assumed;
* **sharing**: the workers are separate processes on one GPU without MPS, so their kernels time-slice and
  do not overlap; device time is summed over workers and multiplied by ``sharing`` for context switches.
  A worker goes at the pace of its host or its device work, whichever is slower, and all slow down
  together when their device demand exceeds the GPU (:func:`simulate`);
* **fixed costs**: each worker's start (interpreter, torch, CUDA context), each unit's I/O, each
  notebook (kernel start, imports, CUDA context, checkpoints, figures), and FlexAttention's compilation per
  distinct shape for methods that compute their bias in-kernel on CUDA.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import (
    DataDependentOutputException,
    DynamicOutputShapeException,
    FakeTensorMode,
    UnsupportedOperatorException,
)
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from posenc.experiment.evaluate import LENGTH_ERRORS
from posenc.experiment.presets import Arch, Preset
from posenc.experiment.runner import _is_sampler, is_base_model, tasks_for
from posenc.experiment.spec import RunSpec
from posenc.model import ModelConfig
from posenc.pe.base import PositionalEncoding
from posenc.tasks import answer_width, get_task

__all__ = ["Work", "Cost", "Measured", "DeviceModel", "NOMINAL", "CONSERVATIVE", "workload", "measure", "UnitCost",
           "unit_costs", "simulate", "Estimate", "estimate"]


# =========================================================================== the work of one unit
@dataclass(frozen=True)
class Work:
    """``calls`` training steps (``train``) or evaluation forwards of ``spec``'s PE on ``arch``, at
    (``batch``, ``length``). ``stage`` names where it happens (``lm``, ``lm-ft``, ``task``, ``task-ft``,
    ``eval``, ``task-eval``). An evaluation forward that scores only its final tokens computes the final
    layer for its ``last`` rows alone (``Transformer.forward(last=…)``); None: all rows."""

    stage: str
    arch: Arch
    batch: int
    length: int
    calls: int
    train: bool
    last: int | None = None


def _batches(n: int, batch: int) -> list[tuple[int, int]]:
    """(batch size, number of forwards) covering ``n`` rows in forwards of at most ``batch`` rows."""
    full, rest = divmod(n, batch)
    return [(b, c) for b, c in ((batch, full), (rest, 1 if rest else 0)) if c]


def _lm_eval(p: Preset, arch: Arch) -> list[Work]:
    """The forwards of :func:`posenc.experiment.evaluate.lm_curves` for one variant."""
    out = []
    for factor in p.eval_factors:
        length = factor * p.train_len
        batch = max(1, p.eval_batch_tokens // length)
        stride = max(1, length // 2)
        # Non-overlapping windows score every target; sliding ones only their last ``stride``.
        for n, last in ((p.eval_bytes // length, None), (p.eval_bytes // stride, stride if stride < length else None)):
            out += [Work("eval", arch, b, length, c, False, last) for b, c in _batches(n, batch)]
    return out


def _task_eval(p: Preset, task: str) -> list[Work]:
    """The forwards of :func:`posenc.experiment.evaluate.task_curve` for one task and variant."""
    arch = p.arch(task=True)
    out = []
    for f in p.eval_factors:
        length = f * p.train_len
        last = answer_width(get_task(task).eval_set(length, p.task_examples)[1])  # as task_curve finds it
        out += [Work("task-eval", arch, b, length, c, False, last)
                for b, c in _batches(p.task_examples, max(1, p.eval_batch_tokens // length))]
    return out


def _ft_factor(spec: RunSpec) -> int:
    """The fine-tune's length factor (1 for position samplers, as in :func:`runner.finetune`)."""
    p = spec.preset
    return 1 if _is_sampler(spec.pe(spec.finetune_scale()), p.train_len) else p.finetune_factor


def workload(spec: RunSpec) -> list[Work]:
    """What ``run_seed(spec)`` trains and evaluates when no checkpoint exists, except the base model of an
    applied method (trained by the base's own unit, which runs first). A test checks it against the
    steps, tokens and windows a run records."""
    p = spec.preset
    lm, task_arch = p.arch(), p.arch(task=True)
    tasks = tasks_for(spec.method) if spec.seed in p.task_seeds else []
    f = _ft_factor(spec) if spec.applies_to or is_base_model(spec.method) else 1
    lm_ft = Work("lm-ft", lm, max(1, p.batch_size // f), p.train_len * f, p.finetune_steps, True)
    task_ft = Work("task-ft", task_arch, max(1, p.task_batch // f), p.train_len * f, p.finetune_steps, True)
    if spec.applies_to:
        variants, control = 2, True  # zero-shot and fine-tuned
        out = [lm_ft] + [task_ft] * len(tasks)
    else:
        control = is_base_model(spec.method)
        variants = 2 if control else 1
        out = [Work("lm", lm, p.batch_size, p.train_len, p.steps, True)]
        out += [lm_ft] if control else []
        for _ in tasks:
            out += [Work("task", task_arch, p.task_batch, p.train_len, p.task_steps, True)]
            out += [task_ft] if control else []
    out += _lm_eval(p, lm) * variants
    for task in tasks:
        out += _task_eval(p, task) * variants
    return [w for w in out if w.calls > 0]


# =========================================================================== counting
@dataclass(frozen=True)
class Cost:
    """Counted work of one call: dispatched operators, kernels (non-view operators), FLOPs, bytes."""

    ops: float = 0.0
    kernels: float = 0.0
    flops: float = 0.0
    bytes: float = 0.0

    def __add__(self, o: Cost) -> Cost:
        return Cost(self.ops + o.ops, self.kernels + o.kernels, self.flops + o.flops, self.bytes + o.bytes)

    def times(self, n: float) -> Cost:
        return Cost(self.ops * n, self.kernels * n, self.flops * n, self.bytes * n)


def _nbytes(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(o) for o in obj)
    return 0


class _Counter(TorchDispatchMode):
    """Counts aten operators, the kernels among them and the bytes those read and write."""

    #: Operators that launch no kernel on a GPU: aliases and reshapes of the same storage (``_unsafe_view`` is
    #: the reshape autograd emits; it is not flagged as a view), and allocations without a fill.
    _FREE = {torch.ops.aten.detach.default, torch.ops.aten.lift_fresh.default, torch.ops.aten._unsafe_view.default,
             torch.ops.aten.empty.memory_format, torch.ops.aten.empty_strided.default,
             torch.ops.aten.empty_like.default}

    def __init__(self) -> None:
        super().__init__()
        self.ops = self.kernels = self.bytes = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if func.namespace == "prim":  # fake tensors' own bookkeeping (prim.device), no kernel on any device
            return out
        self.ops += 1
        if not (func.is_view or func in self._FREE):
            self.kernels += 1
            self.bytes += _nbytes(list(args)) + _nbytes(list((kwargs or {}).values())) + _nbytes(out)
        return out


def _call(spec: RunSpec, work: Work, batch: int, chunk_mb: float | None) -> Cost:
    """Count one call of ``work`` at ``batch`` (a fresh model; the explicit path's cap set to ``chunk_mb``)."""
    torch.manual_seed(0)
    model = spec.model(spec.finetune_scale(), work.arch)
    if chunk_mb is not None:
        model.cfg = dataclasses.replace(model.cfg, explicit_chunk_mb=chunk_mb)
    x = torch.randint(0, 256, (batch, work.length))
    y = torch.randint(0, 256, (batch, work.last or work.length))
    model.train(work.train)
    flops, counter = FlopCounterMode(display=False), _Counter()
    with torch.set_grad_enabled(work.train), flops, counter:
        logits, _ = model(x, last=work.last)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1))
        if work.train:
            loss.backward()
    return Cost(counter.ops, counter.kernels, flops.get_total_flops(), counter.bytes)


def _counted(spec: RunSpec, work: Work, batch: int, chunk_mb: float | None) -> Cost:
    """:func:`_call` on fake tensors (shapes only, no arithmetic: instant), or on real ones for PEs whose
    forward reads values (``.item()``, data-dependent shapes)."""
    try:
        with FakeTensorMode(allow_non_fake_inputs=True):
            return _call(spec, work, batch, chunk_mb)
    except (DataDependentOutputException, DynamicOutputShapeException, UnsupportedOperatorException):
        return _call(spec, work, batch, chunk_mb)


def _chunks(spec: RunSpec, work: Work) -> int:
    """Query chunks per layer of an explicit-path evaluation forward at the real batch (as
    :meth:`posenc.model.Transformer._chunk_rows` cuts them); 1 when the forward is not chunked."""
    if work.train or not spec.pe(spec.finetune_scale(), work.arch).overrides_logits():
        return 1
    per_row = work.batch * work.arch.n_head * work.length * 4
    rows = max(1, int(ModelConfig.explicit_chunk_mb * 2**20 // per_row))
    return 1 if rows >= work.length else math.ceil(work.length / rows)


@dataclass(frozen=True)
class Measured:
    """A call's cost as ``fixed + rows × per_row``: operators and kernels are fixed, FLOPs and bytes grow with
    the batch (the weights' share is in ``fixed``)."""

    fixed: Cost
    per_row: Cost

    def at(self, batch: int) -> Cost:
        return self.fixed + self.per_row.times(batch)


def measure(spec: RunSpec, work: Work) -> Measured:
    """The counted cost of a call of ``work``'s shape (see the module docstring).

    Training steps are counted at batch 1 and 2. Evaluation forwards are counted at batch 1; an explicit-path
    forward cut into n > 4 query chunks per layer is counted with 2 and with 4 chunks (quick) and its
    operators extrapolated linearly to n, with the FLOPs and bytes of the 4-chunk count (which exceed those
    of n chunks: a chunk also computes the masked keys up to its last row). An evaluation at a length the
    model cannot handle (positions past a learned table) costs nothing: the run records it as an error.
    """
    if not work.train:
        try:
            return _measure_eval(spec, work)
        except LENGTH_ERRORS:  # as in the run, the length is recorded as an error and nothing is computed
            return Measured(Cost(), Cost())
    one, two = _counted(spec, work, 1, None), _counted(spec, work, 2, None)
    per_row = Cost(0, 0, two.flops - one.flops, two.bytes - one.bytes)
    return Measured(Cost(one.ops, one.kernels, one.flops - per_row.flops, one.bytes - per_row.bytes), per_row)


def _measure_eval(spec: RunSpec, work: Work) -> Measured:
    """:func:`measure` of an evaluation forward."""
    n = _chunks(spec, work)
    if n <= 4:  # the cap divided by the batch: the same chunks at batch 1 as at the real batch
        one = _counted(spec, work, 1, ModelConfig.explicit_chunk_mb / work.batch)
        return Measured(Cost(one.ops, one.kernels), Cost(0, 0, one.flops, one.bytes))
    row_mb = work.arch.n_head * work.length * 4 / 2**20  # one float32 logits row at batch 1
    two = _counted(spec, work, 1, row_mb * math.ceil(work.length / 2))
    four = _counted(spec, work, 1, row_mb * math.ceil(work.length / 4))
    grow = (n - 4) / 2  # per two more chunks
    return Measured(Cost(four.ops + (four.ops - two.ops) * grow, four.kernels + (four.kernels - two.kernels) * grow),
                    Cost(0, 0, four.flops, four.bytes))


# =========================================================================== the device model
@dataclass(frozen=True)
class DeviceModel:
    """How counted work becomes time on one GPU shared by worker processes (see the module docstring)."""

    name: str = "one H100, conservative"
    host_us: float = 20.0
    kernel_us: float = 5.0
    tflops: float = 100.0
    tbps: float = 1.5
    sharing: float = 1.25
    opt_kernels: int = 24
    opt_ops: int = 40
    cores: int = 16
    worker_start_s: float = 30.0
    unit_s: float = 3.0
    notebook_s: float = 30.0
    flex_compile_s: float = 15.0

    def host_s(self, c: Cost) -> float:
        return c.ops * self.host_us * 1e-6

    def device_s(self, c: Cost) -> float:
        return c.kernels * self.kernel_us * 1e-6 + c.flops / (self.tflops * 1e12) + c.bytes / (self.tbps * 1e12)

    def describe(self) -> str:
        return (f"{self.name}: host {self.host_us:g} µs per operator; device {self.kernel_us:g} µs per kernel + "
                f"FLOPs at {self.tflops:g} TFLOP/s + bytes at {self.tbps:g} TB/s (summed), ×{self.sharing:g} "
                f"for sharing; optimiser {self.opt_kernels} kernels / {self.opt_ops} operators per step; "
                f"{self.worker_start_s:g} s per worker start, {self.unit_s:g} s per unit, {self.notebook_s:g} s "
                f"per notebook, {self.flex_compile_s:g} s per FlexAttention shape; {self.cores} CPU cores")


#: The estimate: a best guess for one H100 (see the module docstring).
#: Its fixed costs: a notebook whose runs are stored took 12.7–13.8 s on one core of the 2-core CPU machine
#: (smoke preset, checkpoints cached); 5 s more are allowed for its CUDA context, and 10 s for a worker's
#: interpreter, imports and CUDA context.
NOMINAL = DeviceModel(name="one H100, estimate", host_us=12.0, kernel_us=3.0, tflops=200.0, tbps=3.0,
                      worker_start_s=10.0, notebook_s=18.0)
#: The bound: every rate halved again, and 30 s for each notebook and each worker's start.
CONSERVATIVE = DeviceModel(name="one H100, conservative bound")


@dataclass(frozen=True)
class UnitCost:
    """One (method, seed): its host and device seconds and what it waits for."""

    method: str
    seed: int
    host_s: float
    device_s: float
    after: tuple[tuple[str, int], ...] = ()
    #: Device seconds by stage of :class:`Work` (``lm``, ``task-eval``, ...), sharing included.
    stages: tuple[tuple[str, float], ...] = ()

    @property
    def alone_s(self) -> float:
        """Its time on an otherwise idle GPU: host and device work overlap (asynchronous launches)."""
        return max(self.host_s, self.device_s)


def _flex_shapes(spec: RunSpec, works: Sequence[Work]) -> int:
    """Distinct training shapes (arch, batch, length), for methods that use FlexAttention on CUDA: each is
    compiled once per process, and evaluation takes the mask path (:func:`posenc.model.auto_flex`)."""
    if type(spec.pe(spec.finetune_scale())).score_mod is PositionalEncoding.score_mod:
        return 0
    return len({(w.arch, w.batch, w.length) for w in works if w.train})


def unit_costs(specs: Iterable[RunSpec], seeds: Sequence[int], model: DeviceModel,
               progress: Callable[[str], None] | None = None,
               cache: dict[tuple[Any, ...], Measured] | None = None) -> list[UnitCost]:
    """Every (method, seed) unit's cost; each shape is measured once per method (and once in all when the
    same ``cache`` is passed to several calls, e.g. for several device models)."""
    out: list[UnitCost] = []
    step = Cost(model.opt_ops, model.opt_kernels)  # the optimiser, per training step
    cache = {} if cache is None else cache
    for spec in specs:
        for s in seeds:
            works = workload(spec.with_seed(s))  # task work runs on the task seeds only
            host = model.unit_s + _flex_shapes(spec, works) * model.flex_compile_s
            stages: dict[str, float] = {}
            for w in works:
                # One count per shape: evaluation batches of one length differ only in FLOPs and bytes.
                key = (spec.key, w.arch, w.length, w.last, w.train, w.batch if w.train else _chunks(spec, w))
                if key not in cache:
                    cache[key] = measure(spec, w)
                c = cache[key].at(w.batch) + step if w.train else cache[key].at(w.batch)
                host += model.host_s(c) * w.calls
                stages[w.stage] = stages.get(w.stage, 0.0) + model.device_s(c) * w.calls * model.sharing
            after = ((spec.applies_to, s),) if spec.applies_to else ()
            out.append(UnitCost(spec.method, s, host, sum(stages.values()), after, tuple(stages.items())))
        if progress is not None:
            u = out[-len(seeds):]
            progress(f"{spec.method}: " + ", ".join(f"seed {x.seed} {x.host_s:.0f} s host / {x.device_s:.0f} s "
                                                    "device" for x in u))
    return out


# =========================================================================== the schedule
def simulate(units: Sequence[UnitCost], workers: int, model: DeviceModel, notebooks: Sequence[tuple[str, ...]] = (),
             notebook_slots: int = 1, order: Callable[[UnitCost], Any] | None = None) -> float:
    """Wall seconds of running ``units`` on ``workers`` processes sharing one GPU, then ``notebooks``.

    A fluid model: each running unit progresses at 1/alone_s per second while the summed device demand of the
    running units (device_s/alone_s each) is at most 1, and all slow down in proportion beyond it. A unit
    starts when a worker is free and the units it waits for are done, in ``order`` (default: as given).
    Each notebook (a tuple of the methods whose units it reads) starts when those are done and a slot is
    free, and costs ``notebook_s`` of host time and no device time.
    """
    pending = sorted(units, key=order) if order else list(units)
    done: set[tuple[str, int]] = set()
    finished_methods: dict[str, int] = {}
    seeds_of: dict[str, int] = {}
    for u in units:
        seeds_of[u.method] = seeds_of.get(u.method, 0) + 1
    running: dict[int, list[float]] = {}  # index in pending -> [remaining fraction]
    nb_wait = [set(n) for n in notebooks]
    nb_running: list[float] = []
    t = model.worker_start_s
    started: set[int] = set()
    while True:
        for i, u in enumerate(pending):
            if len(running) >= workers:
                break
            if i not in started and all(a in done for a in u.after):
                started.add(i)
                running[i] = [1.0]
        while len(nb_running) < notebook_slots and nb_wait:
            ready = next((j for j, need in enumerate(nb_wait)
                          if all(finished_methods.get(m, 0) >= seeds_of.get(m, 0) for m in need)), None)
            if ready is None:
                break
            nb_wait.pop(ready)
            nb_running.append(model.notebook_s)
        if not running and not nb_running:
            if len(started) < len(pending) or nb_wait:
                raise ValueError("the schedule cannot finish: a unit waits for one that is not planned")
            return t
        demand = sum(pending[i].device_s / max(pending[i].alone_s, 1e-9) for i in running)
        slow = max(1.0, demand)
        # The next event: a unit or a notebook finishes.
        dt_units = [rem[0] * pending[i].alone_s * slow for i, rem in running.items()]
        dt = min(dt_units + nb_running)
        t += dt
        for i in list(running):
            rem = running[i]
            rem[0] -= dt / (pending[i].alone_s * slow) if pending[i].alone_s > 0 else 1.0
            if rem[0] <= 1e-9:
                del running[i]
                done.add((pending[i].method, pending[i].seed))
                finished_methods[pending[i].method] = finished_methods.get(pending[i].method, 0) + 1
        nb_running = [r - dt for r in nb_running if r - dt > 1e-9]


# =========================================================================== the estimate
@dataclass(frozen=True)
class Estimate:
    """The dry run's answer for several worker counts."""

    units: list[UnitCost]
    by_workers: dict[int, float]
    model: DeviceModel

    @property
    def best(self) -> tuple[int, float]:
        return min(self.by_workers.items(), key=lambda kv: (kv[1], kv[0]))

    @property
    def host_s(self) -> float:
        return sum(u.host_s for u in self.units)

    @property
    def device_s(self) -> float:
        return sum(u.device_s for u in self.units)

    def by_stage(self) -> dict[str, float]:
        """Device seconds summed over the units, by stage of :class:`Work`."""
        out: dict[str, float] = {}
        for u in self.units:
            for stage, secs in u.stages:
                out[stage] = out.get(stage, 0.0) + secs
        return out


def estimate(specs: Sequence[RunSpec], seeds: Sequence[int], notebooks: Sequence[tuple[str, ...]],
             model: DeviceModel | None = None, workers: Iterable[int] = (2, 4, 6, 8, 10, 12),
             progress: Callable[[str], None] | None = None,
             cache: dict[tuple[Any, ...], Measured] | None = None) -> Estimate:
    """Measure every method's unit and simulate the sweep for each worker count (notebook slots: the cores
    the workers leave, less one for the scheduler). Pass the same ``cache`` to estimate under several device
    models from one set of counts."""
    model = model or NOMINAL
    units = unit_costs(specs, seeds, model, progress, cache)
    bases = {s.applies_to for s in specs} - {None}
    order = _order(bases)
    out = {k: simulate(units, k, model, notebooks, max(1, model.cores - k - 1), order=order)
           for k in workers if k < model.cores}
    return Estimate(units, out, model)


def _order(bases: set[str | None]) -> Callable[[UnitCost], Any]:
    """Bases first (everything applied waits for them), then the longest units first."""
    return lambda u: (u.method not in bases, -u.alone_s)
