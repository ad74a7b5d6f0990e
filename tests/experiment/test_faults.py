"""Faults of a run: a sweep killed at every stage, a dying kernel, broken or foreign files, a full disk,
concurrent writers, notebook parameters of the wrong type. Each case's message comes from
``tests/reliability_cases.py`` (the book's table of them)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import nbformat
import papermill as pm
import pytest
import torch
from faults import STAGES, TINY_SET, run, write_template
from reliability_cases import case

from posenc import paths
from posenc.experiment import results as R
from posenc.experiment import runner as RN
from posenc.experiment import sweep as S
from posenc.experiment.spec import RunSpec, check_notebook_parameters
from posenc.experiment.train import CheckpointError, load_checkpoint, save_checkpoint

# The overrides of TINY_SET, as the command line parses them.
TINY = {"steps": 3, "task_seeds": [], "eval_bytes": 128, "log_every": 1}


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("POSENC_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _plan(work: Path, template: Path, ids: list[str] | None = None, **overrides: object) -> S.Plan:
    return S.plan(ids or ["nope"], preset="smoke", seeds=[0, 1], overrides={**TINY, **overrides}, device="cpu",
                  out=work / "nb", results_dir=work / "results", template=template)


def _outputs(notebook: Path) -> tuple[str, list[str]]:
    nb = nbformat.read(notebook, as_version=4)
    text, errors = [], []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            text.append(out.get("text", ""))
            if out.get("output_type") == "error":
                errors.append(out["ename"])
    return "".join(text), errors


# =========================================================================== a sweep killed at each stage
def test_a_sweep_killed_at_every_stage_resumes_to_one_complete_run(tmp_path: Path, _cache: Path,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Kill the sweep (the posenc process and its kernel) during training, after a result is written, while
    papermill runs the later cells, and before the completion marker; kill only the kernel once. After each,
    nothing is complete and every result on disk is whole and of this configuration; the rerun reuses every
    finished result byte for byte and ends complete."""
    template = write_template(tmp_path / "faults.ipynb")
    argv = ["run", "nope", "--preset", "smoke", "--device", "cpu", "--seeds", "0,1", *TINY_SET, "--template",
            str(template), "--out", str(tmp_path / "nb"), "--results", str(tmp_path / "results")]
    plan = _plan(tmp_path, template)
    job = plan.jobs[0]
    seed0, seed1 = job.result_files()
    on_disk = {"training": [], "seed-json": [seed0], "kernel": [seed0, seed1], "notebook": [seed0, seed1],
               "marker": [seed0, seed1]}
    kept: dict[Path, bytes] = {}
    for stage in STAGES:
        rc, out, err = run(argv, cache=_cache, kill=stage)
        if stage == "kernel":  # the posenc process survives, names the failure, exits 1
            log = paths.relative(S.kernel_log(job))
            assert rc == 1, err
            assert case("kernel-dies").expect(name=job.name, log=log) in err.splitlines(), err
            assert f"  notebook: {paths.relative(job.notebook)}" in err.splitlines()
        else:
            assert rc == -signal.SIGKILL, (stage, out, err)
        assert S.completed(plan) == [], stage  # a half-run method is never taken for a finished one
        assert [f for f in job.result_files() if f.exists()] == on_disk[stage], stage
        for f in on_disk[stage]:
            res = R.read_result(f)  # whole, and of this configuration
            assert res.complete and res.key == job.spec.key
            assert kept.setdefault(f, f.read_bytes()) == f.read_bytes(), f"{stage}: {f.name} was replaced"
        if stage == "marker":  # the notebook ran to its end; only its marker is missing
            assert "notebook finished" in _outputs(job.notebook)[0]
    rc, out, err = run(argv, cache=_cache)
    assert rc == 0, err
    assert S.completed(plan) == [job.name]
    assert {f: f.read_bytes() for f in job.result_files()} == kept  # nothing computed was lost or replaced
    text, errors = _outputs(job.notebook)
    assert "notebook finished" in text and not errors
    # A rerun skips it, saying so.
    monkeypatch.setattr(S, "_kernel_name", lambda: "python3")
    assert S.execute_plan(plan) == 0
    assert capsys.readouterr().out.splitlines() == [case("complete-skipped").expect(name=job.name)]


# =========================================================================== configurations never mixed
def test_another_configuration_is_never_taken_for_complete(tmp_path: Path) -> None:
    """After a complete canonical sweep, `--all --set steps=5` plans every method under another name and key."""
    canonical = S.plan(["nope", "alibi"], preset="smoke", out=tmp_path / "nb", results_dir=tmp_path / "results",
                       template=tmp_path / "t.ipynb")
    for job in canonical.jobs:  # a complete canonical sweep: files and valid markers
        files = [*job.result_files(), job.notebook]
        for f in files:
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(job.name)
        R.write_marker(job.name, "smoke", job.spec.key, files, job.results_dir)
    assert S.completed(canonical) == ["nope", "alibi"]
    before = {f: f.read_bytes() for f in (tmp_path / "results").rglob("*") if f.is_file()}
    everything = S.plan(None, preset="smoke", overrides={"steps": 5}, out=tmp_path / "nb",
                        results_dir=tmp_path / "results", template=tmp_path / "t.ipynb")
    assert len(everything.jobs) > 2 and S.completed(everything) == []
    for job in everything.jobs:
        assert job.name.startswith(f"{job.spec.method}@") and job.spec.key not in {j.spec.key for j in canonical.jobs}
        assert not set(job.result_files()) & set(before)
    assert {f: f.read_bytes() for f in (tmp_path / "results").rglob("*") if f.is_file()} == before


def test_an_override_never_touches_the_canonical_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """`posenc run nope --set steps=5` says it is stored apart, and writes beside the canonical result."""
    canonical = RunSpec.create("nope", "smoke", 0).result_path(tmp_path)
    canonical.parent.mkdir(parents=True)
    canonical.write_text("the canonical result")
    custom = RunSpec.create("nope", "smoke", 0, overrides={**TINY, "steps": 5}, device="cpu")
    res = RN.run_seed(custom, results_dir=tmp_path)
    assert canonical.read_text() == "the canonical result"
    assert res.path == tmp_path / "smoke" / f"nope{custom.tag}-seed0.json" and res.data["overrides"]["steps"] == 5
    # What the run prints before it starts (the kernel is not started here).
    p = S.plan(["nope"], preset="smoke", overrides={"steps": 5}, out=tmp_path / "nb", results_dir=tmp_path,
               template=tmp_path / "t.ipynb")
    monkeypatch.setattr(S, "_kernel_name", lambda: "python3")
    monkeypatch.setattr(S, "execute_job", lambda *a, **k: None)
    S.execute_plan(p)
    tag = p.jobs[0].spec.tag
    assert capsys.readouterr().out.splitlines()[0] == case("override-apart").expect(
        tag=tag[1:], notebook=paths.relative(tmp_path / "nb" / f"nope{tag}.ipynb"))


def test_a_result_of_another_configuration_is_set_aside(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = RunSpec.create("nope", "smoke", 0, overrides=TINY, device="cpu")
    path = spec.result_path(tmp_path)
    old = RN.run_seed(spec, results_dir=tmp_path).data
    R.write_json_atomic(path, {**old, "key": "older"})
    RN.run_seed(spec, results_dir=tmp_path)
    aside = path.with_name(f"{path.name}.key-older")
    assert R.read_result(aside).key == "older" and R.read_result(path).key == spec.key
    assert case("older-configuration").expect(file=paths.relative(path), old="older", new=spec.key,
                                              aside=aside.name) in capsys.readouterr().err.splitlines()


def test_a_truncated_result_is_moved_aside_and_recomputed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = RunSpec.create("nope", "smoke", 0, overrides=TINY, device="cpu")
    path = spec.result_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text('{"schema": 2, "complete": tr')
    res = RN.run_seed(spec, results_dir=tmp_path)
    assert res.complete and R.read_result(path).key == spec.key
    assert path.with_name(path.name + ".corrupt").read_text() == '{"schema": 2, "complete": tr'
    line = capsys.readouterr().err.splitlines()[0]
    assert case("truncated-result-run").matches(line, file=paths.relative(path))
    assert line.endswith("; moved aside to nope@" + spec.tag[1:] + "-seed0.json.corrupt, computing it again")


# =========================================================================== checkpoints
def test_a_foreign_checkpoint_is_refused_naming_both(tmp_path: Path) -> None:
    path = tmp_path / "nope-k-nope.pt"
    save_checkpoint(path, torch.nn.Linear(2, 2), {"method": "alibi", "key": "k-alibi"})
    before = path.read_bytes()
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, method="nope", key="k-nope")
    assert str(err.value) == case("ckpt-foreign").expect(path=str(path))
    assert path.read_bytes() == before


@pytest.mark.parametrize("damage", ["truncated", "checksum", "no sidecar"])
def test_a_corrupt_checkpoint_is_moved_aside_and_retrained(damage: str, _cache: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    spec = RunSpec.create("nope", "smoke", 0, overrides=TINY, device="cpu")
    corpus = RN.D.load_corpus()
    first = RN.train_lm(spec, corpus, torch.device("cpu"))
    path = paths.checkpoint_dir() / f"nope-{first.key}.pt"
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "checksum":
        side = path.with_suffix(".pt.sha256")
        side.write_text(json.dumps({"sha256": "0" * 64, "key": first.key}))
    else:
        path.with_suffix(".pt.sha256").unlink()
    again = RN.train_lm(spec, corpus, torch.device("cpu"))
    assert not again.from_cache and again.log["loss"] == first.log["loss"]  # retrained, same numbers
    assert path.with_name(path.name + ".corrupt").exists()
    assert RN.train_lm(spec, corpus, torch.device("cpu")).from_cache  # the new checkpoint is whole
    assert case("ckpt-corrupt").expect(path=str(path), name=path.name) in capsys.readouterr().err.splitlines()


# =========================================================================== a full disk
_FULL_DISK = """
import resource, signal, sys
from pathlib import Path
import torch
from posenc.experiment.results import write_json_atomic
from posenc.experiment.train import save_checkpoint

folder = Path(sys.argv[1])
save_checkpoint(folder / "m.pt", torch.nn.Linear(4, 4), {"method": "nope", "key": "old"})
write_json_atomic(folder / "r.json", {"old": True})
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))  # `ulimit -f 16`
for write in (lambda: save_checkpoint(folder / "m.pt", torch.nn.Linear(200, 200), {"method": "nope", "key": "new"}),
              lambda: write_json_atomic(folder / "r.json", {"new": "x" * 100000})):
    try:
        write()
        print("written")
    except OSError as e:
        print(e)
"""


def test_a_full_disk_keeps_the_old_files(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(paths.find_root() / "src")}
    out = subprocess.run([sys.executable, "-c", _FULL_DISK, str(tmp_path)], env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout.splitlines()
    assert out == [case("disk-full-ckpt").expect(path=str(tmp_path / "m.pt")),
                   case("disk-full-result").expect(path=str(tmp_path / "r.json"))]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt", "m.pt.sha256", "r.json"]  # no temporary file
    assert load_checkpoint(tmp_path / "m.pt", method="nope", key="old") is not None
    assert json.loads((tmp_path / "r.json").read_text()) == {"old": True}


# =========================================================================== concurrent writers
_WRITER = """
import sys, threading, time
from pathlib import Path
from posenc.experiment.results import write_json_atomic, write_marker

folder, who = Path(sys.argv[1]), sys.argv[2]
files = [folder / "results" / "smoke" / "x-seed0.json"]
while not (folder / "go").exists():
    time.sleep(0.01)


def write(thread):
    for i in range(15):
        write_json_atomic(files[0], {"writer": who + thread, "i": i, "payload": (who + thread) * 100000})
        write_marker("x", "smoke", "key-" + who + thread, files, folder / "results", writer=who + thread)


threads = [threading.Thread(target=write, args=(t,)) for t in "12"]
for t in threads:
    t.start()
for t in threads:
    t.join()
"""


def test_concurrent_writers_leave_one_complete_version(tmp_path: Path) -> None:
    """Two processes of two threads each write the same result and marker while this one reads them: every read
    is one writer's complete version, never a mix, and no temporary file is left."""
    env = {**os.environ, "PYTHONPATH": str(paths.find_root() / "src")}
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path), who], env=env,
                              stderr=subprocess.PIPE, text=True) for who in "ab"]
    result = tmp_path / "results" / "smoke" / "x-seed0.json"
    marker = R.marker_path("x", "smoke", tmp_path / "results")
    (tmp_path / "go").touch()
    writers = {"a1", "a2", "b1", "b2"}
    while any(p.poll() is None for p in procs):
        for f in (result, marker):
            if f.exists():
                data = json.loads(f.read_text())  # never a partial or interleaved file
                assert data["writer"] in writers
                if f == result:
                    assert data["payload"] == data["writer"] * 100000
    assert [(p.wait(timeout=120), p.stderr.read() if p.stderr else "") for p in procs] == [(0, ""), (0, "")]
    final = json.loads(result.read_text())
    assert final["i"] == 14 and final["payload"] == final["writer"] * 100000
    assert json.loads(marker.read_text())["writer"] in writers
    assert not [p for p in result.parent.iterdir() if p.name.endswith(".tmp")]


# =========================================================================== notebook parameters
@pytest.mark.parametrize(("case_id", "name", "value"), [
    ("nb-seeds", "seeds", "abc"), ("nb-seed-negative", "seeds", [0, -1]), ("nb-method", "method", 42),
    ("nb-hparams", "hparams", "x"), ("nb-overrides", "overrides", [1]), ("nb-force", "force", "yes"),
])
def test_notebook_parameter_types(case_id: str, name: str, value: object) -> None:
    params = {"method": "rope", "preset": "smoke", "seeds": None, "device": "auto", "hparams": {}, "overrides": {},
              "results_dir": None, "force": False, name: value}
    with pytest.raises(ValueError) as err:
        check_notebook_parameters(**params)
    assert str(err.value) == case(case_id).expect()


def test_notebook_parameters_are_checked_by_the_first_cell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """papermill's `-p seeds abc` on the real template: the cell that imports posenc names the parameter, before
    any training."""
    from papermill.exceptions import PapermillExecutionError

    monkeypatch.delenv("JUPYTER_PATH", raising=False)  # restored after the test (the kernel may need a spec)
    out = tmp_path / "bad.ipynb"
    with pytest.raises(PapermillExecutionError) as err:
        pm.execute_notebook(str(paths.notebook_template()), str(out), parameters={"seeds": "abc"},
                            kernel_name=S._kernel_name(), progress_bar=False, cwd=str(paths.find_root()))
    assert err.value.ename == "ValueError" and err.value.evalue == case("nb-seeds").expect()
    nb = nbformat.read(out, as_version=4)
    failed = [c for c in nb.cells if any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    code = [c for c in nb.cells if c.cell_type == "code" and "injected-parameters" not in c.metadata.get("tags", [])]
    assert len(failed) == 1 and failed[0] is next(c for c in code if "import posenc" in c.source or
                                                  "from posenc" in c.source)
    assert not list(tmp_path.rglob("*.json")) and not (tmp_path / "cache").exists()


def test_fault_template_mirrors_the_real_one(tmp_path: Path) -> None:
    """The fault template's parameters and results cells are the real template's, so its runs write what a real
    run writes."""
    real = {c.source for c in nbformat.read(paths.notebook_template(), as_version=4).cells}
    fault = nbformat.read(write_template(tmp_path / "f.ipynb"), as_version=4)
    shared = [c for c in fault.cells if c.source in real]
    assert [("parameters" in c.metadata.get("tags", []), "E.run_seed(" in c.source) for c in shared] == [
        (True, False), (False, True)]
