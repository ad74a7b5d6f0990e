"""Sweeps: plan the notebooks to run, execute them with papermill, and mark each finished one.

A plan holds one job per method (one notebook over the preset's seeds). Every parameter of every job is
validated before anything runs. Base models that other methods are applied to (RoPE) and the baselines run
first, so that no two jobs train the same base checkpoint. A job is skipped when its completion marker
(:func:`posenc.experiment.results.marker_valid`) names the same configuration and the checksums of its
notebook and per-seed results still match; otherwise it runs (a half-run notebook, a truncated JSON or a
result of another configuration is never taken for a finished one). The executed notebook is stored without
any absolute path of the machine that ran it, under a title naming the method.

Backends: ``local`` runs ``jobs`` notebooks at once on this machine (threads driving kernel processes, one
compute thread each when several run); ``submitit`` sends each job to a cluster (``posenc[cluster]``, see
:mod:`posenc.experiment.cluster`).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from posenc import paths
from posenc.cards import load_cards
from posenc.experiment.presets import get_preset
from posenc.experiment.results import marker_valid, write_marker
from posenc.experiment.spec import BASELINES, RunSpec
from posenc.pe import base as pe_base

__all__ = ["Job", "Plan", "implemented_cards", "plan", "execute_job", "execute_plan", "completed", "job_done",
           "clean_notebook"]


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
        if out is not None and out.exists() and not out.is_dir():
            raise ValueError(f"--out {out}: with several methods (or no .ipynb name) --out must be a folder")
        folder, single = (out or paths.find_root() / "book" / "runs" / p.name), None
    jobs = []
    for m in names:
        spec = RunSpec.create(m, preset, run_seeds[0], hparams=hparams, overrides=overrides, device=device)
        nb = single or folder / f"{spec.name}.ipynb"
        jobs.append(Job(spec, run_seeds, nb, results_dir))
    return Plan(jobs, p.name, template, device)


def job_done(job: Job) -> bool:
    return marker_valid(job.name, job.spec.preset.name, job.spec.key, [*job.result_files(), job.notebook],
                        job.results_dir)


def completed(p: Plan) -> list[str]:
    return [j.name for j in p.jobs if job_done(j)]


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
    from posenc.experiment.runner import git_commit

    params = {"method": job.spec.method, "preset": job.spec.preset.name, "seeds": list(job.seeds),
              "posenc_commit": git_commit(),
              "device": job.spec.device, "hparams": dict(job.spec.user_hparams),
              "overrides": dict(job.spec.overrides), "force": force,
              "results_dir": None if job.results_dir is None else str(job.results_dir)}
    pm.execute_notebook(str(template), str(job.notebook), parameters=params, kernel_name=kernel or _kernel_name(),
                        cwd=str(paths.find_root()), progress_bar=False, request_save_on_cell_execute=True,
                        stdout_file=stdout)
    wall = time.perf_counter() - t0
    clean_notebook(job.notebook, job, wall)
    write_marker(job.name, job.spec.preset.name, job.spec.key, [*job.result_files(), job.notebook], job.results_dir,
                 notebook=paths.relative(job.notebook), seeds=list(job.seeds), wall_time_s=round(wall, 1),
                 finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    return job.notebook


def execute_plan(p: Plan, *, force: bool = False, jobs: int = 1, backend: str = "local") -> int:
    """Run every job not already complete; 0 when all succeeded, 1 when any failed (the others still run)."""
    from papermill.exceptions import PapermillExecutionError  # only when notebooks run

    todo = [j for j in p.jobs if force or not job_done(j)]
    for j in p.jobs:
        if j not in todo:
            print(f"posenc run: {j.name}: complete, skipped (use --force to rerun)")
    if backend == "submitit":
        from posenc.experiment.cluster import submit_plan

        return submit_plan(p, todo, force=force)
    if jobs > 1:
        # Several kernels at once share the cores: one compute thread each (set before the kernels start).
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    kernel = _kernel_name()
    failures: list[str] = []

    def one(job: Job) -> None:
        print(f"posenc run: {job.name}: running {len(job.seeds)} seed(s) -> {paths.relative(job.notebook)}",
              flush=True)
        try:
            # One notebook at a time: stream its output (several at once would interleave their lines).
            execute_job(job, p.template, force=force, kernel=kernel, stdout=sys.stdout if jobs == 1 else None)
        except PapermillExecutionError as e:
            print(f"posenc run: {job.name}: cell {e.exec_count} raised {e.ename}: {e.evalue}\n"
                  f"  notebook: {paths.relative(job.notebook)}", file=sys.stderr, flush=True)
            failures.append(job.name)
            return
        print(f"posenc run: {job.name}: done", flush=True)

    bases = {pe_base.spec(j.spec.method).applies_to for j in p.jobs} - {None}
    first = [j for j in todo if j.spec.method in bases]
    rest = [j for j in todo if j not in first]
    for job in first:  # base models first: the jobs after them load the bases' checkpoints
        one(job)
    if jobs > 1 and len(rest) > 1:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            list(pool.map(one, rest))
    else:
        for job in rest:
            one(job)
    if failures:
        print(f"posenc run: {len(failures)} failed: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0
