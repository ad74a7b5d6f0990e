"""The cluster backend (:mod:`posenc.experiment.cluster`): its settings file, and ``posenc run --all --backend
submitit`` on this machine through submitit's local executor (each job a separate process, as on a cluster) at
the smoke preset on two methods. Its files are those of a local run, and a rerun resumes by configuration key."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest
from reliability_cases import case

from posenc import paths
from posenc.cli import main
from posenc.experiment import cluster as C
from posenc.experiment import results as R
from posenc.experiment import sweep as S
from posenc.experiment.spec import RunSpec

METHODS = ["rope", "alibi"]
RUNS = ["alibi", "nope", "rope", "sinusoidal"]  # the two methods' runs and the baselines their notebooks read


# =========================================================================== the cluster file
def _write(tmp_path: Path, text: str) -> Path:
    f = tmp_path / "cluster.yaml"
    f.write_text(text, encoding="utf-8")
    return f


def test_the_cluster_file_sets_the_executor_and_its_parameters(tmp_path: Path) -> None:
    cfg = C.load_config(_write(tmp_path, "executor: local\nfolder: /tmp/jobs\nruns_per_job: 5\n"
                                         "parameters:\n  slurm_partition: gpu\n"))
    assert (cfg.executor, cfg.folder, cfg.runs_per_job, cfg.notebooks_per_job) == ("local", Path("/tmp/jobs"), 5, 10)
    assert cfg.parameters == {"slurm_partition": "gpu"}
    assert C.load_config(None) == C.ClusterConfig()


@pytest.mark.parametrize(("text", "message"), [
    ("executor: pbs\n", "'executor' must be slurm, local or debug, got 'pbs'"),
    ("runs_per_job: 0\n", "'runs_per_job' must be an int >= 1, got 0"),
    ("notebooks_per_job: true\n", "'notebooks_per_job' must be an int >= 1, got True"),
    ("runs: 3\n", "unknown field(s) runs; known: executor, folder, notebooks_per_job, parameters, runs_per_job"),
    ("parameters: [1]\n", "'parameters' must be a mapping of submitit parameters"),
    ("- local\n", "a cluster file must be a YAML mapping"),
])
def test_a_bad_cluster_file_is_named(tmp_path: Path, text: str, message: str) -> None:
    f = _write(tmp_path, text)
    with pytest.raises(ValueError) as e:
        C.load_config(f)
    assert str(e.value).startswith(f"{paths.relative(f)}: {message}"), str(e.value)


def test_a_missing_cluster_file_or_submitit_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="cluster.yaml: not found"):
        C.check(tmp_path / "cluster.yaml")
    monkeypatch.setitem(sys.modules, "submitit", None)  # as when the extra is not installed
    with pytest.raises(ValueError, match=r"--backend submitit needs submitit: pip install 'posenc\[cluster\]'"):
        C.check(None)


@pytest.mark.parametrize("slurm", [True, False])
def test_the_jobs_go_to_slurm_only_where_it_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     slurm: bool) -> None:
    """Without Slurm, submitit would run the jobs on this machine: only when the file says so, never silently."""
    import submitit

    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 2 if slurm else -1))
    assert C.executor_name(C.ClusterConfig(executor="local")) == "local"
    for cfg in (C.ClusterConfig(), C.ClusterConfig(executor="slurm")):
        if slurm:
            assert C.executor_name(cfg) == "slurm"
        else:
            with pytest.raises(ValueError, match="no Slurm cluster found here .*set 'executor: local' in the "
                                                 "--cluster file"):
                C.executor_name(cfg)
    if not slurm:  # the command says so before anything runs, with exit status 2
        monkeypatch.setenv("POSENC_CACHE", str(tmp_path / "cache"))
        assert main(["run", "--all", "--backend", "submitit", "--results", str(tmp_path / "results")]) == 2
        assert not (tmp_path / "results").exists() and not (tmp_path / "cache").exists()


# =========================================================================== a sweep through the local executor
def _files(tmp_path: Path) -> dict[str, tuple[str, int]]:
    return {str(f.relative_to(tmp_path)): (hashlib.sha256(f.read_bytes()).hexdigest(), f.stat().st_mtime_ns)
            for folder in ("results", "nb") for f in sorted((tmp_path / folder).rglob("*")) if f.is_file()}


@pytest.mark.slow  # about 2 minutes on two cores: four smoke runs and two notebooks, in job processes
def test_run_all_through_submitit_writes_what_a_local_run_writes_and_resumes_by_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("POSENC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(paths.ROOT_ENV, str(paths.find_root()))  # the backend sets it for its jobs; restored after
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(S, "implemented_cards", lambda: list(METHODS))
    cluster = _write(tmp_path, f"executor: local\nfolder: {tmp_path / 'jobs'}\nruns_per_job: 3\nnotebooks_per_job: 2\n"
                               "parameters:\n  timeout_min: 20\n")
    argv = ["run", "--all", "--preset", "smoke", "--device", "cpu", "--out", str(tmp_path / "nb"),
            "--results", str(tmp_path / "results")]
    sub = [*argv, "--backend", "submitit", "--cluster", str(cluster), "--jobs", "2"]

    assert main(sub) == 0
    out = capsys.readouterr().out
    assert (f"posenc run: 4 run(s) and 2 notebook(s) to the local executor, each wave's jobs at once; job logs in "
            f"{tmp_path / 'jobs'}") in out.splitlines(), out
    # Four base models and baselines in jobs of three runs, then one job of the two notebooks.
    assert "posenc run: base models and baselines: 2 job(s) submitted" in out, out
    assert "the other runs" not in out  # nothing applied to a base model here
    assert "posenc run: notebooks: 1 job(s) submitted" in out, out
    for name in [f"{m}-seed0" for m in RUNS] + [f"{m}.ipynb" for m in METHODS]:
        assert f"posenc run: {name}: done" in out.splitlines(), name
    first = _files(tmp_path)
    assert sorted(first) == sorted([f"results/smoke/{m}-seed0.json" for m in RUNS]
                                   + [f"results/smoke/{m}.done.json" for m in METHODS]
                                   + [f"nb/{m}.ipynb" for m in METHODS])
    for m in RUNS:
        res = R.read_result(tmp_path / "results" / "smoke" / f"{m}-seed0.json")
        assert res.complete and res.key == RunSpec.create(m, "smoke", 0).key, m

    # The local backend takes it all for its own, and so does a rerun through submitit: nothing is submitted.
    skipped = [case("complete-skipped").expect(name=m) for m in METHODS]
    assert main(argv) == 0
    assert capsys.readouterr().out.splitlines() == skipped
    assert main(sub) == 0
    assert capsys.readouterr().out.splitlines() == skipped
    assert _files(tmp_path) == first

    # A result of another configuration where nope's should be: set aside, and only that run is sent again.
    # (The notebooks' markers cover their own results and notebooks, which are unchanged.)
    nope = tmp_path / "results" / "smoke" / "nope-seed0.json"
    old = R.read_result(nope).data
    R.write_json_atomic(nope, {**old, "key": "another"})
    assert main(sub) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[:3] == [*skipped, "posenc run: 1 run(s) and 0 notebook(s) to the local executor, each wave's "
                                   f"jobs at once; job logs in {tmp_path / 'jobs'}"], lines
    assert lines[3].startswith("posenc run: base models and baselines: 1 job(s) submitted"), lines
    assert lines[4:] == ["posenc run: nope-seed0: done"]
    assert R.read_result(nope.with_name("nope-seed0.json.key-another")).key == "another"
    new = R.read_result(nope)
    assert new.key == old["key"] and new.data["variants"] == old["variants"]  # from its checkpoint, same numbers
    again = _files(tmp_path)
    changed = {"results/smoke/nope-seed0.json", "results/smoke/nope-seed0.json.key-another"}
    assert set(again) == set(first) | changed
    assert {k: v for k, v in again.items() if k not in changed} == {k: v for k, v in first.items() if k not in changed}
    assert S.completed(S.plan(METHODS, preset="smoke", out=tmp_path / "nb", results_dir=tmp_path / "results",
                              template=paths.notebook_template())) == METHODS
