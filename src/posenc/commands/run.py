"""`posenc run` (execute a method's notebook with papermill) and `posenc leaderboard`.

``posenc run ID`` executes the parameterised template ``notebooks/extrapolation.ipynb`` for one method over
the preset's seeds and writes the executed notebook to ``book/runs/<preset>/<ID>.ipynb`` (or --out); the
notebook stores one result JSON per seed under ``results/<preset>/``. A run with --hp or --set is keyed by
its configuration: its files get an ``@<hash>`` suffix and never replace the canonical ones.
``posenc run --all`` does it for every card with an implementation, base models first, skipping methods
whose completion marker matches (--force reruns them). A failing cell stops that notebook: the command names
the cell's error and the notebook, keeps every completed result, goes on, and exits with status 1. Ctrl-C
stops the run with one line saying what was kept (exit status 130); rerunning the command resumes it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from posenc import paths
from posenc.commands import examples

PRESET_NAMES = ("smoke", "cpu", "gpu")


def add_parsers(sub: Any) -> None:  # argparse's private _SubParsersAction type
    """Register ``run`` and ``leaderboard`` on ``sub``."""
    p = sub.add_parser("run", help="run a method's extrapolation notebook (papermill) and store its results",
                       description=_plain(__doc__.split("\n\n")[1]) if __doc__ else None,
                       **examples("posenc run alibi --preset smoke", "posenc run yarn --preset cpu --hp scale=8",
                                  "posenc run --all --preset cpu --jobs 2", "posenc run --all --preset cpu --dry-run"))
    p.add_argument("id", nargs="?", help="card / registry id, e.g. alibi")
    p.add_argument("--all", action="store_true", help="every card with an implementation")
    p.add_argument("--preset", default="smoke", choices=PRESET_NAMES)
    p.add_argument("--seeds", help="comma-separated seeds (default: the preset's), e.g. 0,1,2")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--hp", action="append", default=[], metavar="NAME=VALUE", dest="hparams",
                   help="set a hyperparameter of the method (repeatable), e.g. --hp scale=8 --hp base=500000")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", dest="overrides",
                   help="override a preset field (repeatable), e.g. --set steps=10 --set eval_factors=[1,2]")
    p.add_argument("--out", help="executed notebook file (one id) or folder; default book/runs/<preset>/")
    p.add_argument("--results", help="results folder (default: results/ in the checkout)")
    p.add_argument("--force", action="store_true", help="recompute results that already exist")
    p.add_argument("--jobs", type=int, default=1, help="notebooks run at once with --all (default 1)")
    p.add_argument("--backend", default="local", choices=("local", "submitit"),
                   help="where --all runs its jobs: this machine, or a cluster through submitit (posenc[cluster]); "
                        "with submitit, --jobs caps the jobs running at once")
    p.add_argument("--cluster", metavar="FILE",
                   help="YAML settings of --backend submitit: executor, folder, runs_per_job, notebooks_per_job, "
                        "parameters (see book/cluster.md)")
    p.add_argument("--template", help="notebook template (default: notebooks/extrapolation.ipynb of the package)")
    p.add_argument("--dry-run", action="store_true",
                   help="validate everything and print what would run (and what is complete), then stop")
    p.set_defaults(handler=_run)

    lb = sub.add_parser("leaderboard", help="summarise stored results: results/<preset>/leaderboard.{csv,md,png}",
                        description="Aggregate every canonical result of a preset over its seeds (mean and 95% "
                                    "interval), judge each card's claims, and write the leaderboard table, its "
                                    "figure and the claims ledger beside the results.",
                        **examples("posenc leaderboard --preset cpu", "posenc leaderboard --preset smoke"))
    lb.add_argument("--preset", default="cpu", choices=PRESET_NAMES)
    lb.add_argument("--results", help="results folder (default: results/ in the checkout)")
    lb.set_defaults(handler=_leaderboard)


def _plain(text: str) -> str:
    """A docstring paragraph as help text: RST literals shown as plain quotes."""
    return text.replace("``", "'")


def parse_assignments(items: list[str], flag: str) -> dict[str, Any]:
    """``NAME=VALUE`` pairs; values are JSON when they parse (numbers, lists, true/false/null), else text."""
    out: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"{flag} expects NAME=VALUE, got {item!r}")
        try:
            out[name.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[name.strip()] = raw
    return out


def parse_seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--seeds expects comma-separated ints >= 0, got {text!r}") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds expects distinct comma-separated ints >= 0, got {text!r}")
    return seeds


def _run(args: argparse.Namespace) -> int:
    if bool(args.id) == bool(args.all):
        print("posenc run: give one ID or --all", file=sys.stderr)
        return 2
    plan = None
    try:  # Ctrl-C at any point: one line saying what was kept
        from posenc.experiment import sweep as S  # torch and papermill load only when a run is asked for

        try:
            hparams = parse_assignments(args.hparams, "--hp")
            overrides = parse_assignments(args.overrides, "--set")
            seeds = parse_seeds(args.seeds)
            if args.jobs < 1:
                raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
            if args.all and hparams:
                raise ValueError("--hp applies to one method; give an ID instead of --all")
            if args.cluster and args.backend != "submitit":
                raise ValueError("--cluster applies to --backend submitit")
            cluster = Path(args.cluster) if args.cluster else None
            if args.backend == "submitit":
                from posenc.experiment.cluster import check  # submitit loads only for this backend

                check(cluster)
            template = Path(args.template) if args.template else None
            if template is not None and not template.is_file():
                raise ValueError(f"--template {template}: not found")
            plan = S.plan(None if args.all else [args.id], preset=args.preset, seeds=seeds, hparams=hparams,
                          overrides=overrides, device=args.device, out=Path(args.out) if args.out else None,
                          results_dir=Path(args.results) if args.results else None,
                          template=template or paths.notebook_template())
        except (ValueError, paths.RootError) as e:
            print(f"posenc run: {e}", file=sys.stderr)
            return 2
        if args.dry_run:
            for job in plan.jobs:
                state = "complete, would be skipped" if S.job_done(job) and not args.force else "would run"
                print(f"posenc run: {job.name}: {state}: {len(job.seeds)} seed(s) -> {paths.relative(job.notebook)}")
            return 0
        return S.execute_plan(plan, force=args.force, jobs=args.jobs, backend=args.backend, cluster=cluster)
    except KeyboardInterrupt:
        print(f"\nposenc run: {interrupted(plan)}", file=sys.stderr)
        return 130


def interrupted(plan: Any) -> str:
    """The one line an interrupted run prints: what it kept, and how to resume."""
    from posenc.experiment import sweep as S

    if plan is None:
        return "interrupted before anything ran; nothing was written"
    done, kept = S.completed(plan), S.finished_results(plan)
    names = ", ".join(done[:5]) + (f" and {len(done) - 5} more" if len(done) > 5 else "")
    return (f"interrupted; kept {len(kept)} finished seed result(s) and {len(done)} of {len(plan.jobs)} complete "
            f"method(s){f' ({names})' if done else ''}; rerun the same command to resume")


def _leaderboard(args: argparse.Namespace) -> int:
    from posenc.experiment import leaderboard as LB
    from posenc.experiment.results import ResultError

    try:
        table = LB.write_leaderboard(args.preset, args.results)
    except (ValueError, ResultError) as e:
        print(f"posenc leaderboard: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nposenc leaderboard: interrupted; nothing written, the previous leaderboard files are kept",
              file=sys.stderr)
        return 130
    folder = paths.results_dir(args.results) / args.preset
    print(f"{len(table)} entries -> {paths.relative(folder / 'leaderboard.csv')}, .md, .png and ledger.json")
    return 0
