"""`posenc run` (execute a method's notebook with papermill) and `posenc leaderboard`.

``posenc run ID`` executes the parameterised template ``notebooks/extrapolation.ipynb`` for one method and
writes the executed notebook to ``book/runs/<preset>/<id>.ipynb`` (or ``--out``); the notebook stores the
result JSON under ``results/<preset>/``. ``posenc run --all`` does it for every card with an
implementation, baselines first, skipping methods whose result and notebook already exist (``--force``
reruns them). A failing cell stops that notebook: the command reports the cell's error and the notebook's
path, keeps every completed result, goes on with the next method, and exits with status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

TEMPLATE = Path("notebooks") / "extrapolation.ipynb"


def add_parsers(sub: Any) -> None:  # argparse's private _SubParsersAction type
    """Register ``run`` and ``leaderboard`` on ``sub``."""
    p = sub.add_parser("run", help="run a method's extrapolation notebook (papermill) and store its results",
                       description=__doc__.split("\n\n")[1] if __doc__ else None)
    p.add_argument("id", nargs="?", help="card / registry id, e.g. alibi")
    p.add_argument("--all", action="store_true", help="every card with an implementation")
    p.add_argument("--preset", default="smoke", choices=("smoke", "cpu", "gpu"))
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="executed notebook path (one id) or folder (--all); default book/runs/<preset>/")
    p.add_argument("--results", help="results root (default: results/ in the checkout)")
    p.add_argument("--force", action="store_true", help="recompute results that already exist")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", dest="overrides",
                   help="override a preset field (repeatable), e.g. --set steps=10 --set eval_factors=[1,2]")
    p.add_argument("--template", help=f"notebook template (default {TEMPLATE})")
    p.set_defaults(handler=_run)

    lb = sub.add_parser("leaderboard", help="summarise stored results: results/<preset>/leaderboard.{csv,md,png}")
    lb.add_argument("--preset", default="cpu", choices=("smoke", "cpu", "gpu"))
    lb.add_argument("--results", help="results root (default: results/ in the checkout)")
    lb.set_defaults(handler=_leaderboard)


def _parse_overrides(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--set expects FIELD=VALUE, got {item!r}")
        try:
            out[name.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[name.strip()] = raw
    return out


def implemented_cards() -> list[str]:
    """Ids of cards whose ``implementation`` is registered, baselines first, then sorted."""
    from posenc.cards import load_cards
    from posenc.experiment import BASELINES
    from posenc.pe.base import available

    have = set(available())
    ids = []
    for card in load_cards():  # a broken card raises TaxonomyError (a ValueError) naming its file
        impl = card.get("implementation")
        if impl and impl in have and card.get("id", card.id) == impl:
            ids.append(impl)
    return sorted(ids, key=lambda m: (m not in BASELINES, BASELINES.index(m) if m in BASELINES else 0, m))


def _kernel_name() -> str:
    """``python3`` when that kernel runs this interpreter, else a temporary kernelspec that does."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        argv0 = KernelSpecManager().get_kernel_spec("python3").argv[0]
    except NoSuchKernel:
        argv0 = ""
    # jupyter_client replaces a bare "python"/"python3"/"python3.X" with sys.executable when it launches.
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


def execute(method: str, *, preset: str, device: str, seed: int, out: Path, results_dir: Path,
            overrides: dict[str, Any], force: bool, template: Path, kernel: str | None = None) -> Path:
    """Execute the template for ``method`` into ``out``. Raises papermill's execution error on failure."""
    import papermill as pm

    from posenc.experiment import repo_root

    out.parent.mkdir(parents=True, exist_ok=True)
    pm.execute_notebook(
        str(template), str(out),
        parameters={"method": method, "preset": preset, "device": device, "seed": seed,
                    "results_dir": str(results_dir), "overrides": overrides, "force": force},
        kernel_name=kernel or _kernel_name(), cwd=str(repo_root()), progress_bar=False,
        request_save_on_cell_execute=True,
    )
    return out


def _run(args: argparse.Namespace) -> int:
    from papermill.exceptions import PapermillExecutionError

    from posenc import experiment as E

    if bool(args.id) == bool(args.all):
        print("posenc run: give one ID or --all", file=sys.stderr)
        return 2
    try:
        overrides = _parse_overrides(args.overrides)
        E.get_preset(args.preset, **dict(overrides))
        E.resolve_device(args.device)
        ids = implemented_cards() if args.all else [args.id]
        for m in ids:
            E.validate(m, args.preset, args.device, None, dict(overrides))
    except ValueError as e:
        print(f"posenc run: {e}", file=sys.stderr)
        return 2
    root = E.repo_root()
    template = Path(args.template) if args.template else root / TEMPLATE
    if not template.exists():
        print(f"posenc run: notebook template {template} not found", file=sys.stderr)
        return 2
    results_dir = Path(args.results).resolve() if args.results else E.results_root()
    if args.out and not args.all:
        outs = {ids[0]: Path(args.out)}
    else:
        folder = Path(args.out) if args.out else root / "book" / "runs" / args.preset
        outs = {m: folder / f"{m}.ipynb" for m in ids}
    kernel = _kernel_name()
    failures = []
    for m in ids:
        out = outs[m].resolve()
        if args.all and not args.force and out.exists() and E.load_result(m, args.preset, args.seed, results_dir):
            print(f"posenc run: {m}: complete, skipped (use --force to rerun)")
            continue
        try:
            execute(m, preset=args.preset, device=args.device, seed=args.seed, out=out, results_dir=results_dir,
                    overrides=dict(overrides), force=args.force, template=template, kernel=kernel)
        except PapermillExecutionError as e:
            print(f"posenc run: {m}: cell {e.exec_count} raised {e.ename}: {e.evalue}\n  notebook: {out}",
                  file=sys.stderr)
            failures.append(m)
            continue
        print(f"posenc run: {m}: {out} and {E.result_path(m, args.preset, args.seed, results_dir)}")
    if failures:
        print(f"posenc run: {len(failures)} failed: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


def _leaderboard(args: argparse.Namespace) -> int:
    from posenc import experiment as E

    try:
        df = E.leaderboard(args.preset, args.results)
    except ValueError as e:
        print(f"posenc leaderboard: {e}", file=sys.stderr)
        return 1
    folder = E.results_root(args.results) / args.preset
    print(f"{len(df)} methods -> {folder / 'leaderboard.csv'}, .md, .png")
    return 0
