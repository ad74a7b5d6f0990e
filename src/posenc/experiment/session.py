"""A whole sweep on one machine as concurrent worker processes: the gpu sweep in one device session.

* The plan's units (:func:`posenc.experiment.sweep.units`: one ``run_seed`` call per method and seed, for
  every run the notebooks read) run in ``workers`` spawned processes that share the machine's GPU. They start
  in the plan's order — base models first, then the baselines, then the others — each as soon as a worker is
  free and the units it waits for (the base model's, at the same seed) are done, so no two processes ever
  train the same checkpoint. A worker keeps its interpreter, torch and CUDA context from unit to unit.
* Each notebook (:func:`posenc.experiment.sweep.execute_job`, exactly as ``posenc run`` writes it, with its
  completion marker) starts in one of ``notebooks`` threads as soon as every run it reads is stored; it only
  reads results and checkpoints.
* Resumable at any moment: a stored, complete result with the same configuration key is not run again; each
  training stage stores its checkpoint when it ends, so a killed unit resumes at its last finished stage; a
  notebook whose completion marker is valid is skipped. Results, checkpoints and markers are written
  atomically, so a partial file is never taken for a finished one.
* ``deadline_s``: nothing new starts after that many seconds (what runs, finishes): a session with a hard
  time limit stops cleanly, and a rerun goes on where it stopped.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import torch

from posenc import paths
from posenc.experiment import sweep as S

__all__ = ["Outcome", "run_session"]


@dataclass
class Outcome:
    """What a session did: units and notebooks finished, failed (name → error), or left for a rerun."""

    units_done: list[str] = field(default_factory=list)
    notebooks_done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    left: list[str] = field(default_factory=list)

    @property
    def status(self) -> int:
        """0: everything is complete; 1: something failed; 3: work was left (deadline): rerun to go on."""
        return 1 if self.failed else 3 if self.left else 0


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)
    if torch.cuda.is_available():
        # FlexAttention (bias methods on CUDA) is compiled once per shape, and evaluation visits many shapes;
        # past dynamo's default limit of 8 it would fall back to the unfused, memory-hungry eager kernel.
        torch._dynamo.config.recompile_limit = 64


def _run_unit(unit: S.Unit, force: bool) -> str:
    try:
        return unit.run(force)
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # hand the memory back to the other workers between units


def run_session(p: S.Plan, *, workers: int, notebooks: int = 2, compile: str = "off",
                deadline_s: float | None = None, force: bool = False,
                log: Callable[[str], None] = print) -> Outcome:
    """Run every unit and notebook of ``p`` not already complete (see the module docstring).

    ``compile`` is the units' :attr:`~posenc.experiment.spec.RunSpec.compile`; ``force`` recomputes the
    units' results (checkpoints are reused) and so reruns every notebook.
    """
    if workers < 1 or notebooks < 1:
        raise ValueError(f"'workers' and 'notebooks' must be >= 1, got {workers} and {notebooks}")
    t0 = time.monotonic()
    out = Outcome()
    units = S.units(p, compile)
    pending = [u for u in units if force or not u.done()]
    done = {u.name for u in units} - {u.name for u in pending}
    jobs = [j for j in p.jobs if force or not S.job_done(j)]
    needs = {j.name: S.notebook_needs(j, compile) for j in jobs}
    for j in p.jobs:
        if j not in jobs:
            log(f"{j.name}: complete, skipped")
    log(f"{len(pending)} of {len(units)} runs and {len(jobs)} of {len(p.jobs)} notebooks to do; {workers} workers, "
        f"{notebooks} notebooks at once")
    threads = max(1, (os.cpu_count() or 1) // (workers + notebooks))
    os.environ["OMP_NUM_THREADS"] = str(threads)  # inherited by workers and notebook kernels
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    kernel = S._kernel_name() if jobs else None

    n_units, n_jobs = len(pending), len(jobs)  # totals: ``pending`` and ``jobs`` shrink as work starts

    def say(msg: str) -> None:
        log(f"[{time.monotonic() - t0:6.0f} s] {msg} ({len(out.units_done)}/{n_units} runs, "
            f"{len(out.notebooks_done)}/{n_jobs} notebooks)")

    running: dict[Future[str], str] = {}
    is_unit: dict[str, bool] = {}
    ctx = multiprocessing.get_context("spawn")  # CUDA cannot be used in a forked child
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(threads,)) as pool, \
            ThreadPoolExecutor(notebooks) as nb_pool:
        while True:
            if deadline_s is None or time.monotonic() - t0 < deadline_s:
                busy = sum(is_unit[n] for n in running.values())
                for u in list(pending):
                    if busy >= workers:
                        break
                    if any(a in out.failed for a in u.after):
                        pending.remove(u)
                        out.failed[u.name] = f"not run: {', '.join(a for a in u.after if a in out.failed)} failed"
                    elif all(a in done for a in u.after):
                        pending.remove(u)
                        running[pool.submit(_run_unit, u, force)], is_unit[u.name] = u.name, True
                        busy += 1
                for j in list(jobs):
                    if len(running) - busy >= notebooks:
                        break
                    if needs[j.name] & set(out.failed):
                        jobs.remove(j)
                        out.failed[j.name + ".ipynb"] = "not run: " + ", ".join(sorted(needs[j.name] & set(out.failed)))
                    elif needs[j.name] <= done:
                        jobs.remove(j)
                        fut = nb_pool.submit(S.execute_job, j, p.template, kernel=kernel, log=log)
                        running[fut], is_unit[j.name + ".ipynb"] = j.name + ".ipynb", False
            if not running:
                break
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for fut in finished:
                name = running.pop(fut)
                try:
                    result = fut.result()
                except Exception as e:  # a failed run or notebook is reported; the others go on
                    out.failed[name] = f"{type(e).__name__}: {e}".splitlines()[0][:300]
                    say(f"{name}: FAILED: {out.failed[name]}")
                    continue
                if is_unit[name]:
                    done.add(name)
                    out.units_done.append(name)
                    say(str(result))
                else:
                    out.notebooks_done.append(name)
                    say(f"{name}: written to {paths.relative(result)}")
    out.left = [u.name for u in pending] + [j.name + ".ipynb" for j in jobs]
    if out.left:
        log(f"deadline: {len(out.left)} runs and notebooks left; rerun to resume (finished work is kept)")
    for name, why in out.failed.items():
        log(f"failed: {name}: {why}")
    return out
