"""The gpu sweep's one-machine session (:mod:`posenc.experiment.session`, run by ``scripts/gpu_sweep.py``) at
the smoke preset on the CPU: it writes results, notebooks and completion markers that ``posenc run`` takes for
its own, a rerun skips everything, and a rerun after a lost result redoes only that run and its notebook."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from reliability_cases import case

from posenc import paths
from posenc.cli import main
from posenc.experiment import results as R
from posenc.experiment import session as SE
from posenc.experiment import sweep as S
from posenc.experiment.spec import RunSpec

ROOT = paths.find_root()
METHODS = ["rope", "alibi"]
#: What the two notebooks read: their own runs and the baselines.
RUNS = ["alibi", "nope", "rope", "sinusoidal"]


@pytest.fixture(autouse=True)
def _env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSENC_CACHE", str(tmp_path / "cache"))
    for name in ("OMP_NUM_THREADS", "PYTORCH_CUDA_ALLOC_CONF"):  # a session sets them; restored after each test
        if name in os.environ:
            monkeypatch.setenv(name, os.environ[name])
        else:
            monkeypatch.delenv(name, raising=False)


def _plan(tmp_path: Path) -> S.Plan:
    """The plan ``posenc run --all`` makes for the two methods (and the session script)."""
    return S.plan(METHODS, preset="smoke", device="cpu", out=tmp_path / "nb", results_dir=tmp_path / "results",
                  template=paths.notebook_template())


def _sweep(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_sweep.py"), "--preset", "smoke", "--methods",
                           ",".join(METHODS), "--device", "cpu", "--workers", "2", "--notebooks", "1",
                           "--results", str(tmp_path / "results"), "--out", str(tmp_path / "nb")],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)


def _files(tmp_path: Path) -> dict[str, tuple[str, int]]:
    """Every file the sweep wrote: its sha256 and modification time."""
    return {str(f.relative_to(tmp_path)): (hashlib.sha256(f.read_bytes()).hexdigest(), f.stat().st_mtime_ns)
            for folder in ("results", "nb") for f in sorted((tmp_path / folder).rglob("*")) if f.is_file()}


def test_a_session_past_its_deadline_starts_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(S, "_kernel_name", lambda: "python3")  # no notebook runs
    lines: list[str] = []
    out = SE.run_session(_plan(tmp_path), workers=2, notebooks=1, deadline_s=0, log=lines.append)
    assert out.status == 3 and not out.units_done and not out.failed
    assert out.left == [f"{m}-seed0" for m in RUNS] + [f"{m}.ipynb" for m in METHODS]
    assert lines[-1] == "deadline: 6 runs and notebooks left; rerun to resume (finished work is kept)"
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_bad_worker_counts_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'workers' and 'notebooks' must be >= 1, got 0 and 1"):
        SE.run_session(_plan(tmp_path), workers=0, notebooks=1)


@pytest.mark.slow  # about 2 minutes on two cores: four smoke runs and three notebook executions
def test_the_session_writes_what_posenc_run_writes_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    p = _sweep(tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "4 of 4 runs and 2 of 2 notebooks to do" in p.stdout
    assert "(4/4 runs, 2/2 notebooks)" in p.stdout.splitlines()[-1], p.stdout
    first = _files(tmp_path)
    assert sorted(first) == sorted([f"results/smoke/{m}-seed0.json" for m in RUNS]
                                   + [f"results/smoke/{m}.done.json" for m in METHODS]
                                   + [f"nb/{m}.ipynb" for m in METHODS])  # nothing else, no temporary file
    for m in RUNS:
        res = R.read_result(tmp_path / "results" / "smoke" / f"{m}-seed0.json")
        assert res.complete and res.key == RunSpec.create(m, "smoke", 0).key, m
    plan = _plan(tmp_path)
    for job in plan.jobs:
        nb = nbformat.read(job.notebook, as_version=4)
        assert nb.metadata["posenc"]["key"] == job.spec.key
        assert not [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert str(tmp_path) not in json.dumps(nb.metadata)  # no machine path
    assert S.completed(plan) == METHODS

    # posenc run --all takes every notebook for complete and touches nothing.
    monkeypatch.setattr(S, "implemented_cards", lambda: list(METHODS))
    assert main(["run", "--all", "--preset", "smoke", "--device", "cpu", "--out", str(tmp_path / "nb"),
                 "--results", str(tmp_path / "results")]) == 0
    assert capsys.readouterr().out.splitlines() == [case("complete-skipped").expect(name=m) for m in METHODS]
    assert _files(tmp_path) == first

    # The session's own rerun skips everything.
    p = _sweep(tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.splitlines() == ["rope: complete, skipped", "alibi: complete, skipped",
                                     "0 of 4 runs and 0 of 2 notebooks to do; 2 workers, 1 notebooks at once"]
    assert _files(tmp_path) == first

    # A lost result: only that run (from its stored checkpoints, to the same numbers) and the notebook whose
    # marker names it run again; rope's notebook, whose marker covers only its own files, is kept.
    lost = tmp_path / "results" / "smoke" / "alibi-seed0.json"
    old = R.read_result(lost).data
    lost.unlink()
    p = _sweep(tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "1 of 4 runs and 1 of 2 notebooks to do" in p.stdout and "rope: complete, skipped" in p.stdout
    again = _files(tmp_path)
    redone = {"results/smoke/alibi-seed0.json", "results/smoke/alibi.done.json", "nb/alibi.ipynb"}
    assert {k: v for k, v in again.items() if k not in redone} == {k: v for k, v in first.items() if k not in redone}
    assert all(again[k] != first[k] for k in redone)
    assert R.read_result(lost).data["variants"] == old["variants"]
    assert S.completed(plan) == METHODS
