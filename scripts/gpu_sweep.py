"""The gpu sweep in one device session: every implemented method of a preset, all its seeds, on one GPU.

    python scripts/gpu_sweep.py --dry-run                  # the plan and its estimated device time; writes nothing
    python scripts/gpu_sweep.py --deadline 480             # run; nothing new starts after 480 s; rerun to resume

Runs the units (one ``run_seed`` per method and seed) as concurrent worker processes sharing the GPU, base
models first, then each notebook as soon as the runs it reads are stored, writing the executed notebooks
(``book/runs/<preset>/``), the results (``results/<preset>/``) and the completion markers exactly as
``posenc run --all`` does (:mod:`posenc.experiment.session`). The dry run measures each method's work on
this CPU and turns it into device time with the two models of :mod:`posenc.experiment.estimate` (an
estimate and a conservative bound), which it prints.
Exit status: 0 all complete, 1 something failed, 2 bad arguments, 3 work left at the deadline.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from posenc import paths
from posenc.commands.run import PRESET_NAMES, parse_assignments, parse_seeds
from posenc.experiment import estimate as ES
from posenc.experiment import session as SE
from posenc.experiment import sweep as S
from posenc.experiment.train import COMPILE_CHOICES


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="gpu", choices=PRESET_NAMES)
    ap.add_argument("--methods", help="comma-separated card ids (default: every implemented card)")
    ap.add_argument("--seeds", help="comma-separated seeds (default: the preset's)")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", dest="overrides",
                    help="override a preset field (repeatable); the results are then tagged, as with posenc run")
    ap.add_argument("--workers", type=int, default=6, help="training processes sharing the GPU (default 6)")
    ap.add_argument("--notebooks", type=int, default=9,
                    help="notebooks executed at once (default 9: with 6 workers, the dry run's best on 16 cores)")
    ap.add_argument("--compile", default="off", choices=COMPILE_CHOICES,
                    help="torch.compile for training (default off: at these run lengths compiling every "
                         "method's graphs costs more device-session time than it saves)")
    ap.add_argument("--deadline", type=float, help="seconds after which nothing new starts")
    ap.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    ap.add_argument("--results", help="results folder (default: results/ in the checkout)")
    ap.add_argument("--out", help="folder of the executed notebooks (default: book/runs/<preset>/)")
    ap.add_argument("--force", action="store_true", help="recompute stored results (checkpoints are reused)")
    ap.add_argument("--dry-run", action="store_true", help="print the plan and its estimated device time")
    return ap


def dry_run(plan: S.Plan, args: argparse.Namespace) -> int:
    units = S.units(plan, args.compile)
    specs = list({u.spec.name: u.spec.with_seed(plan.jobs[0].seeds[0]) for u in units}.values())
    seeds = list(plan.jobs[0].seeds)
    print(f"plan: preset {plan.preset}, {len(specs)} methods x seeds {seeds} = {len(units)} runs, "
          f"{len(plan.jobs)} notebooks; results in {paths.relative(paths.results_dir(plan.jobs[0].results_dir))}")
    print("order:", " ".join(s.name for s in specs))
    notebooks = [tuple(sorted({n.rsplit("-seed", 1)[0] for n in S.notebook_needs(j, args.compile)}))
                 for j in plan.jobs]
    print("measuring each method's work on this CPU (shapes only where the PE allows it) ...", flush=True)
    cache: dict = {}  # one set of counts, two device models
    est = ES.estimate(specs, seeds, notebooks, ES.NOMINAL, progress=lambda m: print("  " + m, flush=True),
                      cache=cache)
    bound = ES.estimate(specs, seeds, notebooks, ES.CONSERVATIVE, cache=cache)
    for e in (est, bound):
        print(f"\nmodel: {e.model.describe()}")
        print(f"total: {e.host_s:.0f} s of host work (spread over the workers), {e.device_s:.0f} s of device "
              "work (serialised on the GPU); device work by stage: "
              + ", ".join(f"{k} {v:.0f} s" for k, v in sorted(e.by_stage().items(), key=lambda kv: -kv[1])))
        for k, secs in sorted(e.by_workers.items()):
            print(f"  {k:2d} workers, {max(1, e.model.cores - k - 1):2d} notebook slots: {secs / 60:5.1f} min")
    (k, secs), (kb, secs_b) = est.best, bound.best
    print(f"\nbound: {secs_b / 60:.1f} min with --workers {kb} under the conservative model")
    print(f"estimate: {secs / 60:.1f} min of device time with --workers {k} --notebooks "
          f"{max(1, est.model.cores - k - 1)} (machine start-up not included); nothing was written")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.workers < 1 or args.notebooks < 1:
            raise ValueError("--workers and --notebooks must be >= 1")
        ids = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
        plan = S.plan(ids, preset=args.preset, seeds=parse_seeds(args.seeds),
                      overrides=parse_assignments(args.overrides, "--set"), device=args.device,
                      out=Path(args.out) if args.out else None,
                      results_dir=Path(args.results) if args.results else None, template=paths.notebook_template())
    except (ValueError, paths.RootError) as e:
        print(f"gpu_sweep: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        return dry_run(plan, args)
    out = SE.run_session(plan, workers=args.workers, notebooks=args.notebooks, compile=args.compile,
                         deadline_s=args.deadline, force=args.force, log=lambda m: print(m, flush=True))
    return out.status


if __name__ == "__main__":
    sys.exit(main())
