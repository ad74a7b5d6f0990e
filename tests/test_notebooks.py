"""`posenc run` executes the notebook template through papermill (smoke preset, tiny overrides)."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from posenc import experiment as E
from posenc.cli import main
from posenc.pe.base import available

pytestmark = pytest.mark.slow

SMALL = ["--set", "steps=8", "--set", "finetune_steps=2", "--set", "eval_tokens=256", "--set", "task_examples=8"]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(autouse=True)
def _cache(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # One cache for the module: baselines train once for all notebooks.
    monkeypatch.setenv("POSENC_CACHE", str(work / "cache"))


def _outputs(nb: nbformat.NotebookNode) -> tuple[int, list[str]]:
    pngs, errors = 0, []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            pngs += "image/png" in out.get("data", {})
            if out.get("output_type") == "error":
                errors.append(f"{out['ename']}: {out['evalue']}")
    return pngs, errors


@pytest.mark.parametrize("method", ["rope", "alibi", "pi"])
def test_posenc_run_executes_the_notebook(method: str, work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if method not in available():
        pytest.skip(f"{method} has no implementation yet")
    out = work / "book" / f"{method}.ipynb"
    rc = main(["run", method, "--preset", "smoke", "--device", "cpu", "--out", str(out),
               "--results", str(work / "results"), *SMALL])
    assert rc == 0, capsys.readouterr().err
    nb = nbformat.read(out, as_version=4)
    pngs, errors = _outputs(nb)
    assert not errors and pngs >= 3  # positional signal, loss, curves
    res = json.loads(E.result_path(method, "smoke", 0, work / "results").read_text())
    assert res["complete"] and res["method"] == method and res["config"]["steps"] == 8
    if method == "pi":
        assert res["kind"] == "applied" and set(res["variants"]) == {"zero_shot", "finetuned"}
    # The baselines' results were stored beside it, through the same cache.
    assert E.load_result("rope", "smoke", 0, work / "results") is not None


def test_a_failing_cell_reports_the_error_and_the_notebook(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    template = nbformat.read(E.repo_root() / "notebooks" / "extrapolation.ipynb", as_version=4)
    template.cells.append(nbformat.v4.new_code_cell('raise RuntimeError("deliberate failure")'))
    broken = work / "broken.ipynb"
    nbformat.write(template, broken)
    out = work / "book" / "nope-broken.ipynb"
    rc = main(["run", "nope", "--preset", "smoke", "--device", "cpu", "--out", str(out), "--template", str(broken),
               "--results", str(work / "results"), *SMALL])
    err = capsys.readouterr().err
    assert rc == 1
    assert "deliberate failure" in err and str(out) in err and "RuntimeError" in err
    assert out.exists()  # the executed notebook, with the error, is kept for inspection
    assert E.load_result("nope", "smoke", 0, work / "results") is not None  # completed results are kept


def test_bad_arguments_fail_before_running(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "ropee", "--preset", "smoke"]) == 2
    assert "ropee" in capsys.readouterr().err
    assert main(["run", "rope", "--set", "stepz=3"]) == 2
    assert "stepz" in capsys.readouterr().err
    assert main(["run"]) == 2


def test_a_broken_card_is_named_before_running(repo: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """`run ID` and `run --all` read cards through the strict loader of the root in use (POSENC_ROOT)."""
    (repo / "taxonomy" / "methods" / "alibi.yaml").write_text("id: alibi\nname: [broken\n", encoding="utf-8")
    monkeypatch.setenv("POSENC_ROOT", str(repo))
    for argv in (["run", "alibi", "--preset", "smoke"], ["run", "--all", "--preset", "smoke"]):
        assert main(argv) == 2, argv
        assert capsys.readouterr().err == ("posenc run: taxonomy/methods/alibi.yaml:3: YAML error: did not find "
                                           "expected ',' or ']' (while parsing a flow sequence on line 2)\n")


def test_leaderboard_command(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if E.load_result("rope", "smoke", 0, work / "results") is None:
        pytest.skip("needs the results of the notebook runs above")
    assert main(["leaderboard", "--preset", "smoke", "--results", str(work / "results")]) == 0
    for ext in ("csv", "md", "png"):
        assert (work / "results" / "smoke" / f"leaderboard.{ext}").exists()
    assert main(["leaderboard", "--preset", "gpu", "--results", str(work / "results")]) == 1
    assert "no complete results" in capsys.readouterr().err
