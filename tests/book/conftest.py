"""Fixtures of the book tests: a tiny repository with cards, results and notebooks, and one real build."""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from posenc import book, paths
from posenc.experiment import plots
from posenc.experiment.presets import PROTOCOL_VERSION, get_preset
from posenc.experiment.results import SCHEMA

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"


def lm_curve(ppl: Mapping[int, float], train_len: int = 32) -> list[dict[str, Any]]:
    return [{"length": f * train_len, "factor": f, "ppl": v, "nll": math.log(v), "bpb": math.log2(v),
             "tokens": 512, "windows": 512 // (f * train_len)} for f, v in ppl.items()]


def result_json(method: str, seed: int = 0, *, preset: str = "smoke", ppl: Mapping[int, float] | None = None,
                applies_to: str | None = None, variants: tuple[str, ...] = ("scratch",), moved: bool | None = None,
                protocol: int = PROTOCOL_VERSION, key: str | None = None) -> dict[str, Any]:
    """A complete schema-2 result of ``method`` (what `posenc run` writes), with made-up numbers."""
    ppl = dict(ppl or {1: 10.0, 2: 11.0 + seed * 0.1, 4: 14.0 + seed * 0.2})
    log: dict[str, Any] = {"loss": [{"step": 0, "loss": 5.0}, {"step": 10, "loss": 3.0}]}
    if moved is not None:
        log["pe_shift"] = {"parameters": {"table": {"max_abs": 0.5 if moved else 0.001,
                                                     "relative_l2": 0.3 if moved else 0.001}}, "moved": moved}
    return {
        "schema": SCHEMA, "protocol": protocol, "complete": True, "method": method, "preset": preset, "seed": seed,
        "tag": "", "key": key or f"key-{method}", "kind": "applied" if applies_to else "scratch",
        "applies_to": applies_to, "primary": variants[0], "hyperparameters": {}, "user_hparams": {}, "overrides": {},
        "config": get_preset(preset).fields(),
        "metadata": {"device": "cpu", "device_name": "Test CPU", "git_commit": "0" * 40, "wall_time_s": 1.0},
        "train": {"log": log},
        "variants": {v: {"lm": lm_curve(ppl), "lm_sliding": lm_curve(ppl), "position": []} for v in variants},
        "tasks": {},
    }


def write_result(root: Path, method: str, seed: int = 0, *, preset: str = "smoke", **kw: Any) -> Path:
    path = root / "results" / preset / f"{method}-seed{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result_json(method, seed, preset=preset, **kw)), encoding="utf-8")
    return path


def write_notebook(root: Path, method: str, *, preset: str = "smoke", key: str | None = None) -> Path:
    """An executed notebook as `posenc run` leaves it (title and configuration key in its metadata)."""
    title = f"# {method}: executed notebook ({preset})\n"
    nb = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": [title]},
                    {"cell_type": "code", "execution_count": 1, "metadata": {}, "outputs": [], "source": ["1 + 1"]}],
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                       "title": f"{method}: executed notebook ({preset})",
                       "posenc": {"method": method, "preset": preset, "key": key or f"key-{method}", "seeds": [0]}},
          "nbformat": 4, "nbformat_minor": 5}
    path = root / "book" / "runs" / preset / f"{method}.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(nb), encoding="utf-8")
    return path


def _add_real_bibliography(repo: Path) -> None:
    """Append to the fixture's references.bib every entry of the real one whose key it lacks."""
    bib = repo / "references.bib"
    have = set(re.findall(r"^@\w+\{([^,\s]+),", bib.read_text(encoding="utf-8"), flags=re.M))
    entries = re.split(r"(?m)^(?=@)", (ROOT / "references.bib").read_text(encoding="utf-8"))
    extra = [e for e in entries if (m := re.match(r"@\w+\{([^,\s]+),", e)) and m.group(1) not in have]
    with bib.open("a", encoding="utf-8") as f:
        f.write("\n" + "".join(extra))


@pytest.fixture
def site_repo(repo: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """The small fixture repository (alibi, rope, t5_bias) with the book's configuration and hand-written pages,
    set as the root; figures are cached in a temporary folder and method styles are recomputed for it."""
    shutil.copy(ROOT / "_config.yml", repo / "_config.yml")
    shutil.copytree(ROOT / "book", repo / "book", ignore=shutil.ignore_patterns("generated", "runs"))
    for name in ("CITATION.cff",):
        shutil.copy(ROOT / name, repo / name)
    (repo / "book" / "runs").mkdir()  # the committed worked example a guide links to
    shutil.copy(ROOT / "book" / "runs" / "pretrained_example.ipynb", repo / "book" / "runs")
    _add_real_bibliography(repo)  # the hand-written pages cite the real bibliography's keys
    (repo / "benchmarks").mkdir(exist_ok=True)  # measured tables the hand-written pages include
    for table in (ROOT / "benchmarks").glob("*.md"):
        shutil.copy(table, repo / "benchmarks" / table.name)
    (repo / "notebooks").mkdir(exist_ok=True)  # method pages without an executed notebook offer the template
    shutil.copy(ROOT / "notebooks" / "extrapolation.ipynb", repo / "notebooks" / "extrapolation.ipynb")
    monkeypatch.setenv(paths.ROOT_ENV, str(repo))
    monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(plots, "_STYLES", {})
    yield repo


# ---------------------------------------------------------------------------------------------- the real build
_BUILT: dict[str, Any] = {}


def build_book_once() -> book.BuildResult:
    """Run `posenc book` (generate + build into <repo>/_build) once per test session; the browser test shares
    it. The command's exit code and output are kept in ``_BUILT``."""
    if "result" not in _BUILT:
        from posenc.cli import main

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(["book", "--root", str(ROOT)])
        _BUILT.update(rc=rc, stdout=out.getvalue(), stderr=err.getvalue())
        warnings = [ln.strip() for ln in err.getvalue().splitlines() if book.WARNING_RE.search(ln)]
        _BUILT["result"] = book.BuildResult(rc, 0.0, ROOT / "_build" / "html", warnings,
                                            out.getvalue() + err.getvalue())
    return _BUILT["result"]


@pytest.fixture(scope="session")
def built() -> book.BuildResult:
    res = build_book_once()
    assert res.returncode == 0 and res.warnings == [], "\n".join(res.warnings) or res.log[-3000:]
    return res
