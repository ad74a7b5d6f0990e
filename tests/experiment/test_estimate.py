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
import torch

from posenc import paths
from posenc.experiment import estimate as ES
from posenc.experiment.spec import RunSpec

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


@pytest.mark.parametrize("cost", [ES.Cost(ops=1000, kernels=800), ES.Cost(flops=1e12), ES.Cost(bytes=1e10),
                                  ES.Cost(ops=10, kernels=7, flops=3e9, bytes=2e8)])
def test_the_bound_is_never_below_the_estimate(cost: ES.Cost) -> None:
    """The conservative model is a bound on the estimate for every kind of work, host and device."""
    assert ES.CONSERVATIVE.device_s(cost) >= ES.NOMINAL.device_s(cost) > 0
    assert ES.CONSERVATIVE.host_s(cost) >= ES.NOMINAL.host_s(cost)
    assert ES.CONSERVATIVE.sharing >= ES.NOMINAL.sharing


def test_reshapes_and_bare_allocations_are_operators_but_not_kernels() -> None:
    x = torch.randn(4, 6)
    counter = ES._Counter()
    with counter:
        torch.ops.aten._unsafe_view(x, [6, 4])  # what autograd's reshapes dispatch: no data moves
        torch.empty(3, 3)
        x.view(24)
        x * 2  # one kernel, reading and writing 24 floats
    assert (counter.ops, counter.kernels, counter.bytes) == (4, 1, 2 * 24 * 4)


def test_the_estimate_reports_device_time_by_stage() -> None:
    units = [ES.UnitCost("a", 0, 1.0, 3.0, stages=(("lm", 2.0), ("eval", 1.0))),
             ES.UnitCost("b", 0, 1.0, 1.5, stages=(("lm", 1.5),))]
    est = ES.Estimate(units, {2: 4.5}, ES.NOMINAL)
    assert est.by_stage() == {"lm": 3.5, "eval": 1.0}
    assert est.device_s == pytest.approx(sum(est.by_stage().values()))


def test_an_evaluation_the_model_cannot_run_costs_nothing_as_in_the_run() -> None:
    """A learned table has no vectors past its length: the run records an error there, and the dry run counts
    no work (it once stopped the whole dry run instead)."""
    spec = RunSpec.create("learned", "smoke")
    p = spec.preset
    inside = ES.Work("eval", p.arch(), 1, p.train_len, 1, False)
    past = ES.Work("eval", p.arch(), 1, 4 * p.train_len, 1, False)
    assert ES.measure(spec, inside).at(1).kernels > 0
    assert ES.measure(spec, past).at(1) == ES.Cost()


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
    bound = re.search(r"^bound: (\d+\.\d) min with --workers \d+ under the conservative model$", out, re.M)
    assert bound and float(bound.group(1)) >= float(m.group(1)), out
    assert out.count("device work by stage: ") == 2 and "lm " in out and "task-eval " in out, out
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no results, notebooks or cache
    assert [_tree(f) for f in watched] == before
