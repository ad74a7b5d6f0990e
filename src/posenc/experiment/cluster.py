"""Sweeps on a Slurm cluster through submitit: ``posenc run --all --backend submitit [--jobs N] [--cluster FILE]``.

Needs the optional extra ``posenc[cluster]`` (submitit). The plan is split into units (one ``run_seed`` call
per method and seed, :func:`posenc.experiment.sweep.units`) and sent in three waves of job arrays, each
waited for before the next:

1. the runs of the base models and the baselines, so that no two jobs ever train the same base checkpoint;
2. every other run (a run whose base failed is not sent);
3. the notebooks, which only read what the runs stored.

Each job is a batch of runs (or notebooks) executed one after another on one GPU; an array runs at most
``--jobs`` of its jobs at once (Slurm's array parallelism). The jobs write where a local run writes — the
checkout's ``results/``, ``book/runs/`` and checkpoint cache, which must be on a filesystem the nodes share
(``POSENC_ROOT`` is passed to the jobs) — with the same configuration keys, atomic writes and completion
markers. Rerunning the command skips every stored result and valid marker, so a sweep that was cancelled
or failed resumes where it stopped.

The cluster file (YAML, optional) sets the executor and submitit's parameters::

    executor: slurm            # slurm (the default; an error where there is no Slurm), local or debug
    folder: logs/submitit      # submission scripts and job logs, relative to the checkout
    runs_per_job: 3            # runs per job in waves 1 and 2
    notebooks_per_job: 10      # notebooks per job in wave 3
    parameters:                # passed to submitit.AutoExecutor.update_parameters
      slurm_partition: gpu
      timeout_min: 240
      cpus_per_task: 8
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from posenc import paths
from posenc.experiment import sweep as S
from posenc.experiment.spec import BASELINES

__all__ = ["ClusterConfig", "load_config", "executor_name", "check", "submit_plan", "run_units", "run_notebooks"]

#: Parameters every job gets unless the cluster file sets them.
DEFAULT_PARAMETERS: dict[str, Any] = {"gpus_per_node": 1, "tasks_per_node": 1, "cpus_per_task": 8,
                                      "timeout_min": 240, "mem_gb": 32}


@dataclass(frozen=True)
class ClusterConfig:
    """The cluster file's settings (see the module docstring)."""

    executor: str | None = None
    folder: Path = Path("logs/submitit")
    runs_per_job: int = 3
    notebooks_per_job: int = 10
    parameters: dict[str, Any] = field(default_factory=dict)


def load_config(path: Path | None) -> ClusterConfig:
    """The cluster file at ``path`` (defaults when None); bad fields are named with the file."""
    if path is None:
        return ClusterConfig()
    where = paths.relative(path)
    if not path.is_file():
        raise ValueError(f"--cluster {where}: not found")
    data = paths.read_yaml(path)  # YAMLReadError (a ValueError) names the file and the line
    if not isinstance(data, dict):
        raise ValueError(f"{where}: a cluster file must be a YAML mapping (see posenc.experiment.cluster)")
    known = {"executor", "folder", "runs_per_job", "notebooks_per_job", "parameters"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    if data.get("executor") not in (None, "slurm", "local", "debug"):
        raise ValueError(f"{where}: 'executor' must be slurm, local or debug, got {data['executor']!r}")
    for name in ("runs_per_job", "notebooks_per_job"):
        v = data.get(name, 1)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{where}: '{name}' must be an int >= 1, got {v!r}")
    if not isinstance(data.get("parameters", {}), dict):
        raise ValueError(f"{where}: 'parameters' must be a mapping of submitit parameters")
    folder = Path(str(data.get("folder", ClusterConfig.folder)))
    return ClusterConfig(data.get("executor"), folder, data.get("runs_per_job", 3),
                         data.get("notebooks_per_job", 10), dict(data.get("parameters", {})))


# =========================================================================== what a job runs
def run_units(units: Sequence[S.Unit], force: bool) -> list[tuple[str, str | None]]:
    """A job of waves 1 and 2: each unit in turn; ``(name, error or None)`` per unit (one failure does not
    stop the batch)."""
    out: list[tuple[str, str | None]] = []
    for u in units:
        try:
            if force or not u.done():
                print(u.run(force), flush=True)
            out.append((u.name, None))
        except Exception as e:  # reported to the submitting process, which names the run
            out.append((u.name, f"{type(e).__name__}: {e}".splitlines()[0][:300]))
    return out


def run_notebooks(jobs: Sequence[S.Job], template: Path) -> list[tuple[str, str | None]]:
    """A job of wave 3: each notebook in turn, with its completion marker."""
    out: list[tuple[str, str | None]] = []
    for j in jobs:
        try:
            S.execute_job(j, template)
            out.append((j.name + ".ipynb", None))
        except Exception as e:  # papermill's error names the cell; the notebook is kept for inspection
            out.append((j.name + ".ipynb", f"{type(e).__name__}: {e}".splitlines()[0][:300]))
    return out


# =========================================================================== submitting
def _chunks(items: list[Any], n: int) -> list[list[Any]]:
    return [items[i:i + n] for i in range(0, len(items), n)]


def _submitit() -> Any:
    try:
        import submitit  # the optional extra posenc[cluster]; only this backend needs it
    except ImportError:
        raise ValueError("--backend submitit needs submitit: pip install 'posenc[cluster]'") from None
    return submitit


def executor_name(cfg: ClusterConfig) -> str:
    """The executor the jobs go to: the cluster file's, else Slurm where it is found. Never a silent fallback:
    without Slurm (no ``srun``), the jobs would run one after another on this machine, so the file must say
    ``executor: local`` for that (``ValueError`` otherwise, as for ``executor: slurm`` without Slurm)."""
    submitit = _submitit()
    if cfg.executor in ("local", "debug"):
        return cfg.executor
    if submitit.SlurmExecutor.affinity() < 0:
        raise ValueError("--backend submitit: no Slurm cluster found here (no srun on the PATH); run it on the "
                         "cluster's login node, or set 'executor: local' in the --cluster file to run the jobs "
                         "on this machine")
    return "slurm"


def check(config: Path | None) -> ClusterConfig:
    """Before anything runs: the cluster file is valid, submitit is installed and the executor exists
    (``ValueError`` naming what is wrong)."""
    cfg = load_config(config)
    executor_name(cfg)
    return cfg


def _executor(cfg: ClusterConfig, parallel: int) -> Any:
    submitit = _submitit()
    folder = cfg.folder if cfg.folder.is_absolute() else paths.find_root() / cfg.folder
    ex = submitit.AutoExecutor(folder=folder, cluster=executor_name(cfg))
    ex.update_parameters(**{**DEFAULT_PARAMETERS, "name": "posenc", "slurm_array_parallelism": parallel,
                            **cfg.parameters})
    return ex


def _wave(ex: Any, fn: Callable[..., list[tuple[str, str | None]]], batches: list[list[Any]], extra: Any,
          failed: dict[str, str], log: Callable[[str], None], what: str) -> None:
    """Submit one job array and wait for it; failures go into ``failed`` (name → error)."""
    if not batches:
        return
    jobs = ex.map_array(fn, batches, [extra] * len(batches))
    log(f"posenc run: {what}: {len(jobs)} job(s) submitted ({', '.join(str(j.job_id) for j in jobs[:5])}"
        f"{' ...' if len(jobs) > 5 else ''}); waiting")
    for job, batch in zip(jobs, batches, strict=True):
        try:
            statuses = job.result()
        except Exception as e:  # the job itself died (time limit, node failure, preemption)
            err = f"job {job.job_id} failed: {type(e).__name__}: {str(e).strip().splitlines()[-1][:200]}"
            names = [getattr(b, "name", "?") for b in batch]
            statuses = [(n if fn is run_units else n + ".ipynb", err) for n in names]
        for name, err in statuses:
            if err is None:
                log(f"posenc run: {name}: done")
            else:
                failed[name] = err
                log(f"posenc run: {name}: FAILED: {err}")


def submit_plan(p: S.Plan, todo: list[S.Job], *, force: bool = False, parallel: int = 1,
                config: Path | None = None, log: Callable[[str], None] = print) -> int:
    """Run the plan's units and the notebooks in ``todo`` on the cluster (see the module docstring); 0 when
    everything succeeded, 1 when anything failed (the rest still ran)."""
    cfg = load_config(config)
    units = [u for u in S.units(p) if force or not u.done()]
    if not units and not todo:  # everything is stored: nothing to submit (and no job folder to create)
        return 0
    ex = _executor(cfg, parallel)
    # Slurm runs at most ``parallel`` jobs of an array at once; submitit's local executor starts them all.
    at_once = f"at most {parallel} jobs at once" if ex.cluster == "slurm" else "each wave's jobs at once"
    log(f"posenc run: {len(units)} run(s) and {len(todo)} notebook(s) to the {ex.cluster} executor, {at_once}; "
        f"job logs in {paths.relative(ex.folder)}")
    os.environ.setdefault(paths.ROOT_ENV, str(paths.find_root()))  # the jobs find the same checkout
    bases = {u.spec.applies_to for u in S.units(p)} - {None}
    first = [u for u in units if u.spec.method in bases or u.spec.method in BASELINES]
    failed: dict[str, str] = {}
    _wave(ex, run_units, _chunks(first, cfg.runs_per_job), force, failed, log, "base models and baselines")
    rest = []
    for u in units:
        if u in first:
            continue
        if any(a in failed for a in u.after):
            failed[u.name] = f"not run: {', '.join(a for a in u.after if a in failed)} failed"
        else:
            rest.append(u)
    _wave(ex, run_units, _chunks(rest, cfg.runs_per_job), force, failed, log, "the other runs")
    notebooks = []
    for j in todo:
        lost = sorted(S.notebook_needs(j) & set(failed))
        if lost:
            failed[j.name + ".ipynb"] = f"not run: {', '.join(lost)} failed"
        else:
            notebooks.append(j)
    _wave(ex, run_notebooks, _chunks(notebooks, cfg.notebooks_per_job), p.template, failed, log, "notebooks")
    if failed:
        print(f"posenc run: {len(failed)} failed: {', '.join(failed)}; the job logs are in "
              f"{paths.relative(ex.folder)}", file=sys.stderr)
        return 1
    return 0
