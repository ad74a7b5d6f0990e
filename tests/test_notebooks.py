"""`posenc run` executes the notebook template through papermill (smoke preset, tiny overrides)."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from posenc import paths
from posenc.cli import main
from posenc.experiment import results as R

pytestmark = pytest.mark.slow

SMALL = ["--set", "steps=6", "--set", "finetune_steps=2", "--set", "task_steps=4", "--set", "eval_bytes=128",
         "--set", "task_examples=4"]


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


def _result(work: Path, name: str) -> R.Result:
    return R.read_result(work / "results" / "smoke" / f"{name}-seed0.json")


@pytest.mark.parametrize("method", ["rope", "pi"])
def test_posenc_run_executes_the_notebook(method: str, work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = work / "book" / f"{method}.ipynb"
    rc = main(["run", method, "--preset", "smoke", "--device", "cpu", "--out", str(out),
               "--results", str(work / "results")])
    assert rc == 0, capsys.readouterr().err
    nb = nbformat.read(out, as_version=4)
    pngs, errors = _outputs(nb)
    assert not errors and pngs >= 2  # the key figure; positional signal and loss
    assert nb.metadata["title"].endswith("executed notebook (smoke)") and nb.metadata["posenc"]["tag"] == ""
    assert nb.cells[0].source.startswith(f"# {nb.metadata['title']}")
    assert str(work) not in out.read_text()  # no absolute path of this machine in the notebook
    res = _result(work, f"{method}{nb.metadata['posenc']['tag']}")
    assert res.complete and res.method == method and res.data["config"]["steps"] == 30
    if method == "pi":
        assert res.data["kind"] == "applied" and set(res.variants) == {"zero_shot", "finetuned"}
    else:
        assert set(res.variants) == {"scratch", "finetuned"}  # RoPE stores the fine-tuned control
    marker = R.marker_path(f"{method}{nb.metadata['posenc']['tag']}", "smoke", work / "results")
    assert json.loads(marker.read_text())["key"] == res.key
    # A second run finds the marker and skips.
    assert main(["run", method, "--preset", "smoke", "--device", "cpu", "--out", str(out),
                 "--results", str(work / "results")]) == 0
    assert "complete, skipped" in capsys.readouterr().out


def test_hyperparameters_never_replace_the_canonical_result(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = {p: p.read_bytes() for p in (work / "results" / "smoke").glob("pi*-seed0.json")}
    assert before  # the canonical run above
    rc = main(["run", "pi", "--preset", "smoke", "--device", "cpu", "--hp", "scale=2", "--out", str(work / "book"),
               "--results", str(work / "results"), *SMALL])
    assert rc == 0, capsys.readouterr().err
    after = {p: p.read_bytes() for p in (work / "results" / "smoke").glob("pi*-seed0.json")}
    new = set(after) - set(before)
    assert len(new) == 1 and R.read_result(new.pop()).data["user_hparams"] == {"scale": 2}
    assert all(after[p] == b for p, b in before.items())  # nothing computed earlier was replaced


def test_a_failing_cell_reports_the_error_and_the_notebook(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    template = nbformat.read(paths.find_root() / "notebooks" / "extrapolation.ipynb", as_version=4)
    template.cells.append(nbformat.v4.new_code_cell('raise RuntimeError("deliberate failure")'))
    broken = work / "broken.ipynb"
    nbformat.write(template, broken)
    out = work / "book" / "nope-broken.ipynb"
    rc = main(["run", "nope", "--preset", "smoke", "--device", "cpu", "--out", str(out), "--template", str(broken),
               "--results", str(work / "results"), *SMALL])
    err = capsys.readouterr().err
    assert rc == 1
    assert "deliberate failure" in err and "nope-broken.ipynb" in err and "RuntimeError" in err
    assert out.exists()  # the executed notebook, with the error, is kept for inspection
    kept = list((work / "results" / "smoke").glob("nope@*-seed0.json"))
    assert len(kept) == 1 and R.read_result(kept[0]).complete  # completed results are kept
    name = kept[0].name.rsplit("-seed", 1)[0]
    assert not R.marker_path(name, "smoke", work / "results").exists()  # but the run is not complete


def test_bad_arguments_fail_before_running(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "ropee", "--preset", "smoke"]) == 2
    assert "ropee" in capsys.readouterr().err
    assert main(["run", "rope", "--set", "stepz=3"]) == 2
    assert "stepz" in capsys.readouterr().err
    assert main(["run", "rope", "--seeds", "-1"]) == 2
    assert "--seeds" in capsys.readouterr().err
    assert main(["run", "yarn", "--hp", "scale"]) == 2
    assert "--hp expects NAME=VALUE" in capsys.readouterr().err
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
    if not (work / "results" / "smoke" / "rope-seed0.json").exists():
        pytest.skip("needs the results of the notebook runs above")
    assert main(["leaderboard", "--preset", "smoke", "--results", str(work / "results")]) == 0
    for name in ("leaderboard.csv", "leaderboard.md", "leaderboard.png", "ledger.json"):
        assert (work / "results" / "smoke" / name).exists()
    assert main(["leaderboard", "--preset", "gpu", "--results", str(work / "results")]) == 1
    assert "no complete protocol-2 results" in capsys.readouterr().err
