"""The `posenc` knowledge-base commands: list, show, query, cite, validate (formats, exit codes, errors) and
their start-up (no torch, matplotlib or pandas)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from posenc.cli import main

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def repo(repo: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("POSENC_ROOT", str(repo))
    return repo


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


# ---------------------------------------------------------------------------------------------- list
def test_list_table(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "list")
    lines = out.splitlines()
    assert rc == 0
    assert lines[0].split() == ["id", "name", "category", "year", "coverage", "implementation"]
    assert lines[2].split() == ["alibi", "ALiBi", "extrapolatable_pe/rpe/t5_bias_family", "2021", "survey", "alibi"]
    assert len(lines) == 5


def test_list_formats(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "list", "--format", "csv", "--columns", "id,learnable,builds_on,table1.source")
    assert list(csv.reader(io.StringIO(out))) == [
        ["id", "learnable", "builds_on", "table1_source"],
        ["alibi", "false", "t5_bias", "survey"],
        ["rope", "false", "", "survey"],
        ["t5_bias", "true", "", "survey"],
    ]
    _, out, _ = run(capsys, "list", "-f", "json", "-c", "all")
    data = json.loads(out)
    assert [d["id"] for d in data] == ["alibi", "rope", "t5_bias"]
    assert data[0]["learnable"] is False and data[0]["builds_on"] == ["t5_bias"]
    assert data[0]["claims"][0]["points"][0] == {"length": 512, "value": 19.73}
    _, out, _ = run(capsys, "list", "-f", "markdown", "-c", "id,name")
    assert out.splitlines() == ["| id      | name    |", "|---------|---------|", "| alibi   | ALiBi   |",
                                "| rope    | RoPE    |", "| t5_bias | T5 bias |"]


def test_list_unknown_column(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, "list", "-c", "id,yeer")
    assert rc == 2 and out == ""
    assert err == "posenc list: error: unknown column 'yeer'; did you mean 'year'?\n"


# ---------------------------------------------------------------------------------------------- show
def test_show_table_has_every_field(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "show", "alibi")
    assert rc == 0
    fields = [line.split()[0] for line in out.splitlines()[2:] if line and not line.startswith(" ")]
    for f in ("id", "summary", "formula", "table1.learnable", "relations.builds_on", "hyperparameters[0]",
              "claims[0].expect", "claims[1].points", "notes[0]"):
        assert f in fields, f
    assert "claims[0].expect        metric: ppl_ratio, op: <=" in out
    assert "claims[0].points        length: 512, value: 19.73; length: 3072, value: 18.4" in out


def test_show_json_is_the_card(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "show", "alibi", "--format", "json")
    assert rc == 0
    card = yaml.safe_load((repo / "taxonomy/methods/alibi.yaml").read_text(encoding="utf-8"))
    assert json.loads(out) == card


def test_show_csv_and_markdown(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "show", "rope", "-f", "csv")
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["field", "value"] and ["table1.integration", "multiply"] in rows
    _, out, _ = run(capsys, "show", "rope", "-f", "markdown")
    line = next(x for x in out.splitlines() if x.startswith("| formula "))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells == ["formula", "(R_{\\Theta,i} q_i)^\\top (R_{\\Theta,j} k_j)"]


def test_show_by_alias(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "show", "Rotary Position Embedding", "-f", "json")
    assert rc == 0 and json.loads(out)["id"] == "rope"


def test_unknown_id_suggests(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, "show", "alibo")
    assert (rc, out) == (2, "")
    assert err == "posenc show: error: unknown card id 'alibo'; did you mean 'alibi'?\n"
    rc, _, err = run(capsys, "cite", "ropee")
    assert rc == 2 and err == "posenc cite: error: unknown card id 'ropee'; did you mean 'rope'?\n"


# ---------------------------------------------------------------------------------------------- query
def test_query(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "query", "category~rope learnable=false year>=2021", "-f", "json", "-c", "id,year")
    assert rc == 0 and json.loads(out) == [{"id": "rope", "year": 2021}]
    # conditions may also come as separate arguments
    _, out, _ = run(capsys, "query", "learnable=false", "year_venue>=2022", "-f", "csv", "-c", "id")
    assert out.splitlines() == ["id", "alibi", "rope"]
    _, out, _ = run(capsys, "query", "aliases~'linear biases'", "-f", "csv", "-c", "id")
    assert out.splitlines() == ["id", "alibi"]


def test_query_no_match_and_errors(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, "query", "year>3000", "-f", "json")
    assert (rc, json.loads(out), err) == (0, [], "")
    rc, _, err = run(capsys, "query", "year>3000")
    assert rc == 0 and err == "no card matches\n"
    rc, out, err = run(capsys, "query", "yeer>=2022")
    assert rc == 2 and out == ""
    assert err.startswith("posenc query: error: unknown field 'yeer' in 'yeer>=2022'; did you mean 'year'?")


# ---------------------------------------------------------------------------------------------- cite
def test_cite_formats(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "cite", "alibi")
    assert rc == 0 and out.startswith("@inproceedings{press2022train,") and out.count("@") == 1
    _, out, _ = run(capsys, "cite", "alibi", "--all")
    assert out.count("@") == 2 and "@inproceedings{vaswani2017attention," in out
    _, out, _ = run(capsys, "cite", "alibi", "--format", "apa")
    assert out == (
        "Press, O., Smith, N. A., & Lewis, M. (2022). Train Short, Test Long: Attention with Linear Biases Enables "
        "Input Length Extrapolation. In International Conference on Learning Representations. "
        "https://arxiv.org/abs/2108.12409\n"
    )
    _, out, _ = run(capsys, "cite", "rope", "-f", "markdown")
    assert out.startswith("- [RoFormer: Enhanced Transformer with Rotary Position Embedding](https://arxiv.org/abs/")
    _, out, _ = run(capsys, "cite", "alibi", "--all", "-f", "json")
    data = json.loads(out)
    assert [d["key"] for d in data] == ["press2022train", "vaswani2017attention"]
    assert data[0]["arxiv"] == "2108.12409"


def test_cite_everything_and_project(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "cite", "--everything", "-f", "apa")
    assert len(out.splitlines()) == 6
    _, out, _ = run(capsys, "cite", "posenc")
    assert out.startswith("@software{posenc,") and "10.18653/v1/2024.findings-emnlp.582" in out
    rc, _, err = run(capsys, "cite")
    assert rc == 2 and "give a card id" in err


def test_cite_unresolved_bibkey(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = repo / "taxonomy/methods/rope.yaml"
    p.write_text(p.read_text().replace("bibkey: su2024roformer", "bibkey: su2021roformer"))
    rc, _, err = run(capsys, "cite", "rope")
    assert rc == 2
    assert err.startswith("posenc cite: error: 'su2021roformer' is not a key of ")
    assert err.endswith("references.bib; did you mean su2024roformer?\n")


# ---------------------------------------------------------------------------------------------- validate
def test_validate_clean(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "validate") == (0, "3 cards, 0 problems\n", "")


def test_validate_problems(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = repo / "taxonomy/methods/alibi.yaml"
    p.write_text(p.read_text().replace("learnable: false", "learnable: no").replace("year: 2021", "year: x"))
    rc, out, _ = run(capsys, "validate")
    assert rc == 1
    assert out.splitlines() == [
        "taxonomy/methods/alibi.yaml: year: expected int, got 'x'",
        "taxonomy/methods/alibi.yaml: table1.learnable: expected bool, got 'no'",
        "3 cards, 2 problems",
    ]
    rc, out, err = run(capsys, "validate", "-f", "json")
    assert rc == 1 and err == "3 cards, 2 problems\n"
    data = json.loads(out)
    assert data["cards"] == 3
    assert data["problems"][1] == {"file": "taxonomy/methods/alibi.yaml", "line": None,
                                   "field": "table1.learnable", "message": "expected bool, got 'no'"}
    rc, out, _ = run(capsys, "validate", "-f", "csv")
    assert rc == 1 and out.splitlines()[0] == "file,line,field,message"


def test_validate_root_option(repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POSENC_ROOT")
    monkeypatch.chdir(tmp_path)
    assert run(capsys, "validate", "--root", str(repo))[:2] == (0, "3 cards, 0 problems\n")
    rc, _, err = run(capsys, "validate", "--root", str(tmp_path))
    assert rc == 2 and "not a posenc repository" in err


# ---------------------------------------------------------------------------------------------- start-up
def test_commands_do_not_import_torch_matplotlib_or_pandas(repo: Path) -> None:
    """list/show/query/cite/validate start without torch or matplotlib (pandas too: it is slow to import)."""
    code = (
        "import contextlib, io, sys\n"
        "from posenc.cli import main\n"
        "cmds = [['cite', 'alibi'], ['cite', 'posenc', '-f', 'apa'], ['validate'], ['list'],\n"
        "        ['show', 'alibi'], ['query', 'learnable=false year>=2021']]\n"
        "for argv in cmds:\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        assert main(argv) == 0, argv\n"
        "print(sorted(m for m in ('torch', 'matplotlib', 'pandas') if m in sys.modules))\n"
    )
    # a bare environment, but the same package (a source checkout run with PYTHONPATH=src included)
    env = {"POSENC_ROOT": str(repo), "PATH": "/usr/bin:/bin",
           **{k: os.environ[k] for k in ("PYTHONPATH",) if k in os.environ}}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_console_script_entry_point(repo: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "posenc.cli", "cite", "alibi", "-f", "apa"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Press, O., Smith, N. A., & Lewis, M. (2022).")
