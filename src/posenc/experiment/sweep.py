"""Sweeps: plan the notebooks to run, execute them with papermill, and mark each finished one.

A plan holds one job per method (one notebook over the preset's seeds). Every parameter of every job is
validated before anything runs. Base models that other methods are applied to (RoPE) and the baselines run
first, so that no two jobs train the same base checkpoint. A job is skipped when its completion marker
(:func:`posenc.experiment.results.marker_valid`) names the same configuration and the checksums of its
notebook and per-seed results still match; otherwise it runs (a half-run notebook, a truncated JSON or a
result of another configuration is never taken for a finished one). The executed notebook is stored without
any absolute path of the machine that ran it, under a title naming the method.

Backends: ``local`` runs ``jobs`` notebooks at once on this machine (threads driving kernel processes, one
compute thread each when several run); ``submitit`` sends the work to a cluster (``posenc[cluster]``, see
:mod:`posenc.experiment.cluster`). A kernel writes its own stderr to ``<cache>/logs/<name>.kernel.log``, so
the command prints only its messages; a kernel that dies is reported with that log, and the sweep goes on.
On Ctrl-C the running kernels are stopped at once (every finished seed's result is kept).

The cluster and the gpu sweep (:mod:`posenc.experiment.session`) split a plan into :class:`Unit` s, one
``run_seed`` call each (a method at one seed), for every run the notebooks read (:func:`units`); a unit of a
method applied to a base model waits for the base's unit at the same seed, which trains the shared base
checkpoints. The notebooks then run last and only read what the units stored.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

from posenc import paths
from posenc.cards import load_cards
from posenc.experiment.presets import get_preset
from posenc.experiment.results import ResultError, marker_valid, read_result, result_done, write_marker
from posenc.experiment.runner import comparison_ids, git_commit, run_seed
from posenc.experiment.spec import BASELINES, RunSpec
from posenc.pe import base as pe_base

__all__ = ["Job", "Plan", "Unit", "implemented_cards", "plan", "units", "notebook_needs", "execute_job",
           "execute_plan", "completed", "job_done", "finished_results", "clean_notebook", "kernel_log"]


def implemented_cards() -> list[str]:
    """Ids of cards whose ``implementation`` is registered: base models first, then baselines, then sorted."""
    have = set(pe_base.available())
    ids = [c.id for c in load_cards() if c.get("implementation") and c.get("implementation") in have
           and c.get("implementation") == c.id]
    bases = {pe_base.spec(m).applies_to for m in have} - {None}
    return sorted(ids, key=lambda m: (m not in bases, m not in BASELINES, m))


@dataclass(frozen=True)
class Job:
    """One notebook: a method's spec (its first seed), all the seeds it runs, and where its files go."""

    spec: RunSpec
    seeds: tuple[int, ...]
    notebook: Path
    results_dir: Path | None

    @property
    def name(self) -> str:
        return self.spec.name

    def result_files(self) -> list[Path]:
        return [self.spec.result_path(self.results_dir, s) for s in self.seeds]


@dataclass
class Plan:
    """The jobs of one ``posenc run``, in the order they start."""

    jobs: list[Job]
    preset: str
    template: Path
    device: str
    done: list[str] = field(default_factory=list)


def plan(ids: Sequence[str] | None, *, preset: str = "smoke", seeds: Sequence[int] | None = None,
         hparams: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None, device: str = "auto",
         out: Path | None = None, results_dir: Path | None = None, template: Path) -> Plan:
    """Validate every job before any runs; ``ids`` None means every implemented card."""
    names = implemented_cards() if ids is None else list(ids)
    p = get_preset(preset, **dict(overrides or {}))
    run_seeds = tuple(seeds) if seeds is not None else p.seeds
    if out is not None and ids is not None and len(names) == 1 and out.suffix == ".ipynb":
        folder, single = out.parent, out
    else:
        if out is not None and not out.is_dir() and (out.exists() or out.suffix == ".ipynb"):
            raise ValueError(f"--out {out}: with several methods (or no .ipynb name) --out must be a folder")
        folder, single = (out or paths.find_root() / "book" / "runs" / p.name), None
    jobs = []
    for m in names:
        spec = RunSpec.create(m, preset, run_seeds[0], hparams=hparams, overrides=overrides, device=device)
        nb = single or folder / f"{spec.name}.ipynb"
        jobs.append(Job(spec, run_seeds, nb, results_dir))
    return Plan(jobs, p.name, template, device)


@dataclass(frozen=True)
class Unit:
    """One ``run_seed`` call: a method at one seed. ``after`` names the units that must be complete first."""

    spec: RunSpec
    results_dir: Path | None
    after: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.spec.name}-seed{self.spec.seed}"

    def done(self) -> bool:
        """True when its result is stored, complete, under the same configuration key."""
        return result_done(self.spec.result_path(self.results_dir), self.spec.key)

    def run(self, force: bool = False) -> str:
        """Train (resuming from any checkpoint stored) and evaluate; a one-line summary."""
        t0 = time.perf_counter()
        meta = run_seed(self.spec, results_dir=self.results_dir, force=force).data["metadata"]
        where = meta["device"] + (f" ({meta['device_name']})" if meta.get("device_name") else "")
        return f"{self.name}: {time.perf_counter() - t0:.0f} s on {where}, compile {meta.get('compile')}"


def _comparisons(job: Job, compile: str) -> list[RunSpec]:
    """The specs of the runs ``job``'s notebook reads besides its own (as :func:`runner.ensure_results`)."""
    s = job.spec
    return [RunSpec.create(m, s.preset, s.seed, overrides=dict(s.overrides), device=s.device, compile=compile)
            for m in comparison_ids(s)]


def units(p: Plan, compile: str = "auto") -> list[Unit]:
    """Every run the plan's notebooks read (each job's seeds and those of its comparisons: baselines, base
    model, comparators), in the order they start: base models, the baselines, then the others by name.
    ``compile`` is the units' :attr:`RunSpec.compile`."""
    specs: dict[str, RunSpec] = {}
    for j in p.jobs:
        for s in [replace(j.spec, compile=compile), *_comparisons(j, compile)]:
            specs.setdefault(s.name, s)
    bases = {s.applies_to for s in specs.values()} - {None}
    ordered = sorted(specs.values(), key=lambda s: (s.method not in bases, s.method not in BASELINES, s.name))
    seeds = p.jobs[0].seeds if p.jobs else ()
    # The base a method is applied to: the base's run with the same preset overrides and no hyperparameters.
    bases_of = {(s.method, json.dumps(dict(s.overrides), sort_keys=True)): s for s in ordered if not s.user_hparams}
    results_dir = p.jobs[0].results_dir if p.jobs else None
    out = []
    for s in ordered:
        base = bases_of.get((s.applies_to, json.dumps(dict(s.overrides), sort_keys=True)))
        for seed in seeds:
            after = (f"{base.name}-seed{seed}",) if s.applies_to and base is not None else ()
            out.append(Unit(s.with_seed(seed), results_dir, after))
    return out


def notebook_needs(job: Job, compile: str = "auto") -> set[str]:
    """Names of the units whose results ``job``'s notebook reads (it runs once they are all done)."""
    return {f"{s.name}-seed{seed}" for s in [job.spec, *_comparisons(job, compile)] for seed in job.seeds}


def job_done(job: Job) -> bool:
    return marker_valid(job.name, job.spec.preset.name, job.spec.key, [*job.result_files(), job.notebook],
                        job.results_dir)


def completed(p: Plan) -> list[str]:
    return [j.name for j in p.jobs if job_done(j)]


def finished_results(p: Plan) -> list[Path]:
    """The per-seed result files of ``p`` that hold a complete result of their job's configuration."""
    out = []
    for j in p.jobs:
        for f in j.result_files():
            try:
                res = read_result(f) if f.exists() else None
            except ResultError:
                res = None
            if res is not None and res.complete and res.key == j.spec.key:
                out.append(f)
    return out


def _kernel_name() -> str:
    """``python3`` when that kernel runs this interpreter, else a temporary kernelspec that does."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel  # only when notebooks run

    try:
        argv0 = KernelSpecManager().get_kernel_spec("python3").argv[0]
    except NoSuchKernel:
        argv0 = ""
    bare = {"python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info[:2])}
    if argv0 in bare or (argv0 and Path(argv0).resolve() == Path(sys.executable).resolve()):
        return "python3"
    folder = Path(tempfile.mkdtemp(prefix="posenc-kernel-")) / "kernels" / "posenc-python3"
    folder.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (posenc)", "language": "python"}
    (folder / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(folder.parents[1]), os.environ.get("JUPYTER_PATH")]))
    return "posenc-python3"


#: Kernel managers of the notebooks started by this process (an interrupt stops their kernels).
_KERNELS: weakref.WeakSet[Any] = weakref.WeakSet()


class _KernelDiedRecord(logging.Filter):
    """Drops the "Kernel died ..." line nbclient logs before it raises ``DeadKernelError``, which
    :func:`execute_plan` reports itself (naming the method, the kernel's log and the notebook)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Kernel died")


_KERNEL_DIED = _KernelDiedRecord()


def _stop_kernels() -> None:
    """Kill the kernels still running (their notebooks then end with a dead kernel)."""
    for km in list(_KERNELS):
        proc = getattr(getattr(km, "provisioner", None), "process", None)
        if proc is not None and proc.poll() is None:
            proc.kill()


def kernel_log(job: Job) -> Path:
    """Where the kernel of ``job`` writes its own stderr: ``<cache>/logs/<name>.kernel.log``."""
    return paths.cache_dir() / "logs" / f"{job.name}.kernel.log"


def _kernel_manager(log: Path) -> type:
    """A kernel manager whose kernel writes its stderr (its own log lines, C-level warnings, a crash's last
    words) to ``log`` instead of this terminal, so that a failed or interrupted run prints only its message."""
    from jupyter_client import AsyncKernelManager  # only when notebooks run

    class LoggedKernelManager(AsyncKernelManager):  # type: ignore[misc]
        async def start_kernel(self, **kw: Any) -> None:
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "wb") as f:  # the kernel holds its own copy of the descriptor
                kw.setdefault("stderr", f)
                await super().start_kernel(**kw)
            _KERNELS.add(self)

    return LoggedKernelManager


def clean_notebook(path: Path, job: Job, wall_s: float) -> None:
    """Strip machine paths from papermill's metadata and title the notebook after its method."""
    import nbformat  # only when notebooks run

    nb = nbformat.read(path, as_version=4)
    pm = nb.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):
        if key in pm:
            pm[key] = Path(pm[key]).name
    params = pm.get("parameters", {})
    if params.get("results_dir"):  # a results folder given on the command line: never stored absolute
        rel = paths.relative(params["results_dir"])
        if Path(rel).is_absolute():  # outside the checkout: keep only its name
            rel = Path(rel).name
        for cell in nb.cells:
            if "injected-parameters" in cell.get("metadata", {}).get("tags", []):
                cell.source = cell.source.replace(repr(params["results_dir"]).replace("'", '"'), repr(rel))
        params["results_dir"] = rel
    card_name = job.spec.method
    try:
        from posenc.cards import card_path, load_card

        if card_path(job.spec.method).exists():
            card_name = load_card(job.spec.method).name
    except ValueError:
        pass
    title = f"{card_name}: executed notebook ({job.spec.preset.name}{job.spec.tag})"
    first = nb.cells[0] if nb.cells else None
    if first is not None and first.cell_type == "markdown" and first.source.startswith("# "):
        rest = first.source.split("\n", 1)[1] if "\n" in first.source else ""
        first.source = f"# {title}\n{rest}"
    nb.metadata["title"] = title
    nb.metadata["posenc"] = {"method": job.spec.method, "preset": job.spec.preset.name, "tag": job.spec.tag,
                             "seeds": list(job.seeds), "key": job.spec.key, "wall_time_s": round(wall_s, 1)}
    nbformat.write(nb, path)


def execute_job(job: Job, template: Path, *, force: bool = False, kernel: str | None = None,
                log: Callable[[str], None] = print, stdout: TextIO | None = None) -> Path:
    """Run one notebook (papermill) and write its completion marker last. Raises papermill's error.

    With ``stdout``, what the notebook prints (each baseline or comparator it runs first, each seed's summary)
    is written there as it happens: a first run from a fresh clone shows its progress.
    """
    import papermill as pm  # only when notebooks run

    job.notebook.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    params = {"method": job.spec.method, "preset": job.spec.preset.name, "seeds": list(job.seeds),
              "posenc_commit": git_commit(),
              "device": job.spec.device, "hparams": dict(job.spec.user_hparams),
              "overrides": dict(job.spec.overrides), "force": force,
              "results_dir": None if job.results_dir is None else str(job.results_dir)}
    pm.execute_notebook(str(template), str(job.notebook), parameters=params, kernel_name=kernel or _kernel_name(),
                        cwd=str(paths.find_root()), progress_bar=False, request_save_on_cell_execute=True,
                        stdout_file=stdout, kernel_manager_class=_kernel_manager(kernel_log(job)))
    wall = time.perf_counter() - t0
    clean_notebook(job.notebook, job, wall)
    write_marker(job.name, job.spec.preset.name, job.spec.key, [*job.result_files(), job.notebook], job.results_dir,
                 notebook=paths.relative(job.notebook), seeds=list(job.seeds), wall_time_s=round(wall, 1),
                 finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    return job.notebook


def _apart(spec: RunSpec) -> str:
    """For a run that is not the preset's own configuration: what differs, and that it is stored apart."""
    if spec.is_canonical:
        return ""
    given = [f"--set {k}={json.dumps(v)}" for k, v in spec.overrides.items()]
    given += [f"--hp {k}={json.dumps(v)}" for k, v in spec.user_hparams.items()]
    return f" ({' '.join(given)}: stored apart from the preset's own results)"


def execute_plan(p: Plan, *, force: bool = False, jobs: int = 1, backend: str = "local",
                 cluster: Path | None = None) -> int:
    """Run every job not already complete; 0 when all succeeded, 1 when any failed (the others still run).
    ``backend="submitit"``: on a cluster, at most ``jobs`` jobs at once, set up by the ``cluster`` file."""
    from nbclient.exceptions import DeadKernelError  # only when notebooks run
    from papermill.exceptions import PapermillExecutionError

    todo = [j for j in p.jobs if force or not job_done(j)]
    for j in p.jobs:
        if j not in todo:
            print(f"posenc run: {j.name}: complete, skipped (use --force to rerun)")
    if backend == "submitit":
        from posenc.experiment.cluster import submit_plan

        return submit_plan(p, todo, force=force, parallel=jobs, config=cluster)
    if jobs > 1:
        # Several kernels at once share the cores: one compute thread each (set before the kernels start).
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    kernel = _kernel_name()
    logging.getLogger("papermill").addFilter(_KERNEL_DIED)  # papermill's logger is the one nbclient uses
    failures: list[str] = []

    stopping = threading.Event()

    def one(job: Job) -> None:
        if stopping.is_set():
            return
        print(f"posenc run: {job.name}: running {len(job.seeds)} seed(s) -> {paths.relative(job.notebook)}"
              f"{_apart(job.spec)}", flush=True)
        try:
            # One notebook at a time: stream its output (several at once would interleave their lines).
            execute_job(job, p.template, force=force, kernel=kernel, stdout=sys.stdout if jobs == 1 else None)
        except Exception as e:
            if stopping.is_set():  # its kernel was stopped by an interrupt, which is what gets reported
                return
            if isinstance(e, PapermillExecutionError):
                why = f"cell {e.exec_count} raised {e.ename}: {e.evalue}"
            elif isinstance(e, DeadKernelError):  # killed from outside (e.g. out of memory) or crashed
                why = f"the notebook's kernel died (out of memory? killed?); its log: {paths.relative(kernel_log(job))}"
            else:
                raise
            print(f"posenc run: {job.name}: {why}\n  notebook: {paths.relative(job.notebook)}", file=sys.stderr,
                  flush=True)
            failures.append(job.name)
            return
        print(f"posenc run: {job.name}: done", flush=True)

    # Stages: the base models (the applied methods load their checkpoints), then the other baselines (every
    # figure compares with them), then everything else; within a stage, ``jobs`` notebooks at a time.
    bases = {pe_base.spec(j.spec.method).applies_to for j in p.jobs} - {None}
    stages = [[j for j in todo if j.spec.method in bases],
              [j for j in todo if j.spec.method in BASELINES and j.spec.method not in bases]]
    stages.append([j for j in todo if not any(j in s for s in stages)])
    for stage in stages:
        if jobs > 1 and len(stage) > 1:
            pool = ThreadPoolExecutor(max_workers=jobs)
            try:
                list(pool.map(one, stage))
            except KeyboardInterrupt:
                # Only this thread sees Ctrl-C: stop the queued jobs and the running kernels, whose notebooks
                # then end at once (their finished seeds are kept), instead of waiting for them to complete.
                stopping.set()
                pool.shutdown(wait=False, cancel_futures=True)
                _stop_kernels()
                raise
            finally:
                pool.shutdown(wait=True)
        else:
            for job in stage:
                one(job)
    if failures:
        print(f"posenc run: {len(failures)} failed: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0
