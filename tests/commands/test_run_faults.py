"""`posenc run`, `leaderboard` and the other commands given bad arguments, broken files and Ctrl-C: one clear
line each, nothing computed lost. The messages come from ``tests/reliability_cases.py`` (the book's table)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from experiment.conftest import make_result
from faults import TINY_SET, start, write_template
from reliability_cases import CASES, Case, case

from posenc import paths
from posenc.cli import main
from posenc.experiment import results as R
from posenc.experiment import sweep as S


@pytest.fixture(autouse=True)
def _folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("POSENC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("POSENC_RESULTS", str(tmp_path / "results"))
    monkeypatch.chdir(tmp_path)  # relative --out and --template land here
    return tmp_path


# =========================================================================== bad arguments
ARGV_CASES = [c for c in CASES.values() if c.argv]


@pytest.mark.parametrize("c", ARGV_CASES, ids=[c.id for c in ARGV_CASES])
def test_bad_arguments(c: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(list(c.argv)) == c.status
    err = capsys.readouterr().err
    assert c.matches(err.rstrip("\n")) and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written


def test_out_folder_for_one_method(tmp_path: Path) -> None:
    """`posenc run ID --out DIR`: the notebook is DIR/<ID>.ipynb, whether DIR exists or not."""
    (tmp_path / "made").mkdir()
    for folder in (tmp_path / "made", tmp_path / "new"):
        p = S.plan(["nope"], out=folder, template=tmp_path / "t.ipynb")
        assert p.jobs[0].notebook == folder / "nope.ipynb"
    assert S.plan(["nope"], out=tmp_path / "one.ipynb", template=tmp_path / "t.ipynb").jobs[0].notebook == (
        tmp_path / "one.ipynb")


def test_a_broken_card_is_named(repo: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    """`run ID` and `run --all` read cards through the strict loader of the root in use (POSENC_ROOT)."""
    (repo / "taxonomy" / "methods" / "alibi.yaml").write_text("id: alibi\nname: [broken\n", encoding="utf-8")
    monkeypatch.setenv("POSENC_ROOT", str(repo))
    c = case("run-broken-card")
    for argv in (["run", "alibi", "--preset", "smoke"], ["run", "--all", "--preset", "smoke"]):
        assert main(argv) == c.status, argv
        assert capsys.readouterr().err == c.expect() + "\n"


# =========================================================================== leaderboard
def _results(folder: Path) -> None:
    curves = {1: 10.0, 2: 11.0, 4: 13.0, 8: 20.0, 16: 30.0, 32: 50.0}
    for method in ("rope", "alibi", "nope"):
        for seed in (0, 1):
            R.write_json_atomic(folder / "cpu" / f"{method}-seed{seed}.json",
                                make_result(method, seed, {"scratch": curves}).data)


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir()}


def test_leaderboard_with_a_truncated_result_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    results = tmp_path / "results"
    _results(results)
    assert main(["leaderboard", "--preset", "cpu"]) == 0
    capsys.readouterr()
    bad = results / "cpu" / "nope-seed1.json"
    bad.write_text(bad.read_text()[:300])
    before = _snapshot(results / "cpu")
    assert main(["leaderboard", "--preset", "cpu"]) == 1
    err = capsys.readouterr().err
    assert case("lb-truncated").matches(err.rstrip("\n"), file=paths.relative(bad)) and err.count("\n") == 1
    assert _snapshot(results / "cpu") == before  # nothing written, the old leaderboard kept
    assert main(["leaderboard", "--preset", "gpu"]) == 1
    assert capsys.readouterr().err == case("lb-empty").expect(folder=paths.relative(results / "gpu")) + "\n"


# =========================================================================== Ctrl-C
def test_ctrl_c_in_other_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    """An interrupt in the middle of the leaderboard (its files rendered, not yet written), of the book and of
    any other command: one line, exit status 130, the old leaderboard kept."""
    from posenc import book
    from posenc.commands import taxonomy
    from posenc.experiment import plots

    def interrupt(*args: object, **kw: object) -> None:
        raise KeyboardInterrupt

    results = tmp_path / "results"
    _results(results)
    assert main(["leaderboard", "--preset", "cpu"]) == 0
    capsys.readouterr()
    before = _snapshot(results / "cpu")
    monkeypatch.setattr(plots, "leaderboard_figure", interrupt)
    monkeypatch.setattr(book, "generate", interrupt)
    monkeypatch.setattr(taxonomy, "cmd_validate", interrupt)
    for argv, case_id in ((["leaderboard", "--preset", "cpu"], "sigint-leaderboard"), (["book"], "sigint-book"),
                          (["validate"], "sigint-other")):
        assert main(argv) == 130
        assert capsys.readouterr().err == "\n" + case(case_id).expect() + "\n"
    assert _snapshot(results / "cpu") == before


def _kernels_of(pid: int) -> list[int]:
    """Live kernel processes started by ``pid`` (jupyter_client tells each kernel its parent's pid)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"JPY_PARENT_PID={pid}".encode() in env:
            found.append(int(proc.name))
    return found


def _interrupt_when(p: subprocess.Popen[str], ready: list[Path], timeout: float = 300) -> tuple[int, str, str]:
    """Send Ctrl-C once every file of ``ready`` exists; returns (exit status, stdout, stderr)."""
    t0 = time.monotonic()
    while not all(f.exists() for f in ready):
        assert p.poll() is None, p.communicate()
        assert time.monotonic() - t0 < timeout, "the run never reached the point to interrupt"
        time.sleep(0.1)
    os.killpg(p.pid, signal.SIGINT)  # as a terminal's Ctrl-C: to the foreground process group
    try:
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    return p.returncode, out, err


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds kernels through /proc")
def test_ctrl_c_during_a_run(tmp_path: Path) -> None:
    """Ctrl-C while a notebook runs (seed 0 written, seed 1 running): one line on stderr, no traceback, exit
    130, seed 0's result kept, the kernel stopped."""
    template = write_template(tmp_path / "faults.ipynb")
    p = start(["run", "nope", "--device", "cpu", "--seeds", "0,1", *TINY_SET, "--template", str(template),
               "--out", str(tmp_path / "nb")], cache=tmp_path / "cache", kill="pause")
    plan = S.plan(["nope"], seeds=[0, 1], overrides={"steps": 3, "task_seeds": [], "eval_bytes": 128, "log_every": 1},
                  out=tmp_path / "nb", results_dir=tmp_path / "results", template=template)
    seed0 = plan.jobs[0].result_files()[0]
    rc, out, err = _interrupt_when(p, [seed0])
    assert rc == 130, err
    assert err == "\n" + case("sigint-run").expect() + "\n"
    assert R.read_result(seed0).complete and S.finished_results(plan) == [seed0]
    assert _kernels_of(p.pid) == []


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds kernels through /proc")
def test_ctrl_c_during_parallel_runs_stops_the_kernels(tmp_path: Path) -> None:
    """`posenc run --all --jobs 2`, Ctrl-C while both notebooks run: the kernels are stopped at once (not waited
    for), one line, exit 130, every finished result kept."""
    template = write_template(tmp_path / "faults.ipynb")
    p = start(["run", "--all", "--jobs", "2", "--device", "cpu", "--seeds", "0,1", *TINY_SET, "--template",
               str(template), "--out", str(tmp_path / "nb")], cache=tmp_path / "cache", kill="pause",
              ids="nope,alibi")
    plan = S.plan(["nope", "alibi"], seeds=[0, 1],
                  overrides={"steps": 3, "task_seeds": [], "eval_bytes": 128, "log_every": 1}, out=tmp_path / "nb",
                  results_dir=tmp_path / "results", template=template)
    ready = [j.result_files()[0] for j in plan.jobs]
    rc, out, err = _interrupt_when(p, ready)
    assert rc == 130, err
    assert err == "\n" + case("sigint-run-jobs").expect(kept="2") + "\n"
    assert sorted(S.finished_results(plan)) == sorted(ready)
    assert _kernels_of(p.pid) == []
