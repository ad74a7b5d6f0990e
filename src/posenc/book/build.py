"""Write the generated pages (:func:`generate`) and build the HTML book (:func:`build`).

:func:`render` makes every file under ``book/generated/`` and ``_toc.yml`` in memory, deterministically (the same
cards, results and notebooks give byte-identical files); :func:`generate` writes the changed ones and removes
generated files nothing produces any more (e.g. the page of a deleted card). :func:`build` runs
``jupyter-book build . -W -n --keep-going``: a warning fails the build.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from posenc import paths
from posenc.book import pages
from posenc.book.context import GENERATED, Context, load_context, using_root
from posenc.book.toc import TOC_FILE, toc_yaml
from posenc.experiment.results import ResultError, read_json

__all__ = ["Generated", "BuildResult", "render", "generate", "build", "WARNING_RE"]


@dataclass
class Generated:
    """What :func:`generate` wrote: every output path (repo-relative) and which of them changed."""

    files: list[str]
    changed: list[str]
    removed: list[str]


def _json_or_none(path: Path) -> Any:
    """A committed JSON file, None when it is absent; a broken one is an error naming it."""
    if not path.is_file():
        return None
    try:
        return read_json(path)
    except ResultError as e:
        raise ValueError(str(e)) from None


def _task_learnability(ctx: Context) -> str:
    data = _json_or_none(ctx.root / "results" / "task_learnability.json")
    if data is None:
        return pages.render_template("task_learnability.md.j2", rows=None, command=None)
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise ValueError("results/task_learnability.json: expected {\"command\": ..., \"rows\": [...]}")

    def pct(row: dict[str, Any], k: str) -> str:
        v = (row.get("accuracy") or {}).get(k)
        return "—" if v is None else f"{100 * float(v):.0f}%"

    rows = [{"task": r.get("task"), "steps": r.get("steps"), "d_model": r.get("d_model"),
             "final_loss": f"{float(r['final_loss']):.3f}" if r.get("final_loss") is not None else "—",
             "acc1": pct(r, "1x"), "acc2": pct(r, "2x"), "acc4": pct(r, "4x"),
             "wall": f"{float(r['wall_s']):.0f} s" if r.get("wall_s") is not None else "—"}
            for r in data["rows"] if isinstance(r, dict)]
    return pages.render_template("task_learnability.md.j2", rows=rows, command=str(data.get("command") or "?"))


_SWEEP_KEYS = (("command", "command"), ("preset", "preset"), ("wall_time_s", "wall time"), ("jobs", "jobs at once"),
               ("entries", "entries"), ("machine", "machine"), ("device", "device"), ("torch", "torch"),
               ("git_commit", "commit"), ("started", "started"), ("finished", "finished"))


def _sweep_cost(ctx: Context) -> str:
    data = _json_or_none(ctx.root / "results" / "cpu" / "sweep.json")
    sweep: list[tuple[str, str]] | None = None
    if data is not None:
        if not isinstance(data, dict):
            raise ValueError("results/cpu/sweep.json: expected a JSON object")
        sweep = []
        known = {k for k, _ in _SWEEP_KEYS}
        for key, label in _SWEEP_KEYS:
            if key in data:
                v = data[key]
                if key == "wall_time_s" and isinstance(v, (int, float)):
                    v = f"{v:.0f} s ({v / 60:.1f} min)"
                elif isinstance(v, list):
                    v = f"{len(v)}"
                sweep.append((label, str(v)))
        sweep += [(k, str(v)) for k, v in sorted(data.items()) if k not in known and isinstance(v, (str, int, float))]
    markers = None
    pub = ctx.published
    walls = {m: d["wall_time_s"] for m, d in (pub.markers.items() if pub else [])
             if isinstance(d.get("wall_time_s"), (int, float))}
    if walls:
        longest = max(walls, key=lambda m: walls[m])
        markers = {"n": len(walls), "total": sum(walls.values()), "median": statistics.median(walls.values()),
                   "longest": longest, "max": walls[longest]}
    return pages.render_template("sweep_cost.md.j2", sweep=sweep, markers=markers,
                                 preset=pub.preset if pub else None)


def _rerun_times(ctx: Context) -> str:
    pub = ctx.published
    times = []
    device = "device unknown"
    if pub is not None:
        for m, d in sorted(pub.markers.items()):
            if isinstance(d.get("wall_time_s"), (int, float)):
                times.append((m, len(d.get("seeds") or []) or "?", float(d["wall_time_s"])))
        devs = sorted({str((rs[0].data.get("metadata") or {}).get("device_name") or "?")
                       for rs in pub.col.by_method.values()})
        device = ", ".join(devs)
    return pages.render_template("rerun_times.md.j2", times=times, preset=pub.preset if pub else None, device=device)


def _hf_support() -> str | None:
    """The support table of ``posenc.hf`` (the "Use posenc on your model" page), when that module exists."""
    if importlib.util.find_spec("posenc.hf") is None:
        return None
    import posenc.hf as hf  # only when present: it is optional and imports transformers

    return str(hf.support_table_markdown()).rstrip() + "\n"


def render(ctx: Context) -> dict[str, bytes]:
    """Every generated file (repo-relative path → bytes), without writing anything."""
    out: dict[str, str | bytes] = {}
    figures: dict[str, bytes] = {}
    with using_root(ctx.root):
        out[f"{GENERATED}/taxonomy_tree.md"] = pages.taxonomy_tree(ctx)
        cited = ctx.root.joinpath("references.bib").is_file() and "zhao2024length" in ctx.root.joinpath(
            "references.bib").read_text(encoding="utf-8")
        out[f"{GENERATED}/taxonomy.md"] = pages.render_template("taxonomy.md.j2", survey_cited=cited)
        out[f"{GENERATED}/table.md"] = pages.table_page(ctx)
        for cat in ctx.categories():
            out[f"{cat.docname}.md"] = pages.category_page(ctx, cat)
        if ctx.orphans:
            out[f"{GENERATED}/categories/uncategorised.md"] = (
                "# Uncategorised\n\nCards whose `category` is not a path of `taxonomy/categories.yaml` "
                "(`posenc validate` reports them).\n")
        for cid in ctx.cards:
            out[f"{GENERATED}/methods/{cid}.md"] = pages.method_page(ctx, cid, figures)
        out[f"{GENERATED}/leaderboard.md"] = pages.leaderboard_page(ctx, figures)
        out[f"{GENERATED}/home_results.md"] = pages.home_results(ctx)
        out[f"{GENERATED}/cite_posenc.md"] = pages.cite_posenc(ctx)
        out[f"{GENERATED}/task_learnability.md"] = _task_learnability(ctx)
        out[f"{GENERATED}/sweep_cost.md"] = _sweep_cost(ctx)
        out[f"{GENERATED}/rerun_times.md"] = _rerun_times(ctx)
        if ctx.extra_pages.get("use_on_your_model"):
            hf = _hf_support()
            out[f"{GENERATED}/hf_support.md"] = hf if hf is not None else (
                "*Pending:* the support table is generated from `posenc.hf`, which this checkout does not have.\n")
        out[TOC_FILE] = toc_yaml(ctx)
    for name, data in sorted(figures.items()):
        out[f"{GENERATED}/figures/{name}"] = data
    return {k: (v.encode("utf-8") if isinstance(v, str) else v) for k, v in sorted(out.items())}


def _write(path: Path, data: bytes, changed: list[str], rel: str) -> None:
    if path.is_file() and path.read_bytes() == data:
        return  # unchanged: keep the mtime so Sphinx rebuilds only what changed
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    changed.append(rel)


def generate(root: str | os.PathLike[str] | None = None, dest: str | os.PathLike[str] | None = None) -> Generated:
    """Write the generated pages and ``_toc.yml`` under ``dest`` (default: the repository ``root``).

    Nothing is written unless every page renders (a card whose text cannot be shown stops it first, named).
    """
    ctx = load_context(root)
    base = Path(dest) if dest is not None else ctx.root
    files = render(ctx)
    changed: list[str] = []
    for rel, data in files.items():
        _write(base / rel, data, changed, rel)
    removed = []
    gen = base / GENERATED
    if gen.is_dir():
        for path in sorted(gen.rglob("*")):
            rel = path.relative_to(base).as_posix()
            if path.is_file() and rel not in files:
                path.unlink()
                removed.append(rel)
        for path in sorted(gen.rglob("*"), reverse=True):
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()
    return Generated(sorted(files), changed, removed)


# ---------------------------------------------------------------------------------------------- build
@dataclass
class BuildResult:
    returncode: int
    seconds: float
    html_dir: Path
    warnings: list[str]
    log: str

    @property
    def index(self) -> Path:
        return self.html_dir / "index.html"


WARNING_RE = re.compile(r"(WARNING|ERROR|CRITICAL|SEVERE):")
_ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")


def _jupyter_book() -> list[str]:
    exe = Path(sys.executable).with_name("jupyter-book")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("jupyter-book")
    if found:
        return [found]
    raise FileNotFoundError("jupyter-book is not installed: pip install -e '.[book]'")


def build(root: str | os.PathLike[str] | None = None, build_dir: str | os.PathLike[str] | None = None, *,
          strict: bool = True, keep_going: bool = True, all_files: bool = False) -> BuildResult:
    """Build the HTML book with ``jupyter-book build`` into ``build_dir`` (default ``<root>/_build``).

    ``strict`` turns warnings into errors (``-W -n``: missing references count as warnings too). The log is
    captured; every warning line is returned, so a build with warnings is never reported as clean.
    """
    r = paths.find_root(root)
    out = Path(build_dir) if build_dir is not None else r / "_build"
    cmd = [*_jupyter_book(), "build", str(r), "--builder", "html"]
    if out.resolve() != (r / "_build").resolve():
        # jupyter-book writes to <path-output>/_build/html
        cmd += ["--path-output", str(out.parent if out.name == "_build" else out)]
        html = (out if out.name == "_build" else out / "_build") / "html"
    else:
        html = r / "_build" / "html"
    if strict:
        cmd += ["-W", "-n"]
    if keep_going:
        cmd.append("--keep-going")
    if all_files:
        cmd.append("--all")
    # The Sphinx extension (posenc.book.sphinx_ext) must import the posenc that generated the pages.
    src = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONHASHSEED="0", NO_COLOR="1", POSENC_ROOT=str(r),
               PYTHONPATH=os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")])))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=r, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    log = _ANSI_RE.sub("", proc.stdout + proc.stderr)
    warnings = [ln for ln in log.splitlines() if WARNING_RE.search(ln)]
    rc = proc.returncode
    if strict and warnings and rc == 0:
        rc = 1
    return BuildResult(rc, seconds, html, warnings, log)
