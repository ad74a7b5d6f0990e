"""The gpu sweep's device-time estimate: the fluid schedule of :func:`posenc.experiment.estimate.simulate` on
hand-computed cases, and ``scripts/gpu_sweep.py --dry-run`` at the smoke preset on the CPU (an estimate is
printed, nothing is written)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from posenc import paths
from posenc.experiment import estimate as ES

ROOT = paths.find_root()
#: No fixed costs, so that the schedule's arithmetic is all that is measured.
BARE = ES.DeviceModel(worker_start_s=0.0, notebook_s=5.0)


def _unit(method: str, host: float, device: float, after: tuple[tuple[str, int], ...] = ()) -> ES.UnitCost:
    return ES.UnitCost(method, 0, host, device, after)


def test_host_bound_units_overlap_across_workers() -> None:
    units = [_unit("a", 10, 0), _unit("b", 10, 0)]
    assert ES.simulate(units, 1, BARE) == pytest.approx(20)
    assert ES.simulate(units, 2, BARE) == pytest.approx(10)


def test_device_bound_units_share_the_gpu() -> None:
    """Two units that each keep the GPU busy take as long on two workers as on one: the device is the limit."""
    units = [_unit("a", 10, 10), _unit("b", 10, 10)]
    assert ES.simulate(units, 2, BARE) == pytest.approx(20)
    half = [_unit("a", 10, 5), _unit("b", 10, 5)]  # half the GPU each: both fit at once
    assert ES.simulate(half, 2, BARE) == pytest.approx(10)


def test_an_applied_method_waits_for_its_base_and_notebooks_wait_for_their_runs() -> None:
    units = [_unit("rope", 10, 0), _unit("yarn", 4, 0, after=(("rope", 0),)), _unit("nope", 3, 0)]
    assert ES.simulate(units, 3, BARE) == pytest.approx(14)  # yarn starts at 10, when rope ends
    # A notebook reading rope and yarn starts at 14 and takes notebook_s; one reading nope ends at 3 + 5.
    assert ES.simulate(units, 3, BARE, notebooks=[("rope", "yarn"), ("nope",)], notebook_slots=2) == pytest.approx(19)
    start = ES.DeviceModel(worker_start_s=30.0, notebook_s=5.0)
    assert ES.simulate(units, 3, start) == pytest.approx(44)


def test_a_unit_waiting_for_an_unplanned_one_is_an_error() -> None:
    with pytest.raises(ValueError, match="cannot finish"):
        ES.simulate([_unit("yarn", 4, 0, after=(("rope", 0),))], 2, BARE)


def _tree(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")} if folder.exists() else {}


@pytest.mark.slow  # about 15-20 s: every method's work is counted
def test_dry_run_at_the_smoke_preset_prints_an_estimate_and_writes_nothing(tmp_path: Path) -> None:
    """Two methods ask for four runs (their notebooks read the baselines); every one is measured."""
    watched = [ROOT / "results", ROOT / "book" / "runs"]
    before = [_tree(f) for f in watched]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "POSENC_CACHE": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_sweep.py"), "--dry-run", "--preset", "smoke",
                        "--methods", "rope,alibi", "--device", "cpu", "--results", str(tmp_path / "results"),
                        "--out", str(tmp_path / "nb")], env=env, cwd=tmp_path, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert "plan: preset smoke, 4 methods x seeds [0] = 4 runs, 2 notebooks" in out, out
    for method in ("alibi", "nope", "rope", "sinusoidal"):
        assert re.search(rf"^  {method}: seed 0 \d+ s host / \d+ s device$", out, re.M), out
    m = re.search(r"^estimate: (\d+\.\d) min of device time with --workers (\d+) --notebooks (\d+) .*nothing was "
                  r"written$", out, re.M)
    assert m and float(m.group(1)) > 0, out
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no results, notebooks or cache
    assert [_tree(f) for f in watched] == before
