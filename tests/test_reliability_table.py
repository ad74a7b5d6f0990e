"""The book's table of bad inputs and faults (book/reliability.md): generated from tests/reliability_cases.py,
every case checked by a test that exists, and the messages of cases checked elsewhere asserted here too."""

from __future__ import annotations

import ast
import importlib.util
import math
from pathlib import Path

import pytest
import yaml
from reliability_cases import CASES, case

import posenc
from posenc import cards, paths

ROOT = Path(__file__).resolve().parents[1]


def _script():  # scripts/ is not a package
    spec = importlib.util.spec_from_file_location("reliability_table", ROOT / "scripts" / "reliability_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_table_is_the_generated_one() -> None:
    assert (ROOT / "book" / "reliability_table.md").read_text(encoding="utf-8") == _script().render()
    assert "```{include} reliability_table.md" in (ROOT / "book" / "reliability.md").read_text(encoding="utf-8")


def test_at_least_thirty_cases_and_every_finding() -> None:
    assert len(CASES) >= 30
    assert {c.finding for c in CASES.values()} >= set(range(1, 12))


def test_every_case_names_a_test_that_exists() -> None:
    missing = []
    for c in CASES.values():
        path, _, name = c.test.partition("::")
        file = ROOT / path
        if not file.is_file():
            missing.append(c.test)
            continue
        tree = ast.parse(file.read_text(encoding="utf-8"))
        names = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        if name not in names:
            missing.append(c.test)
    # The card-text rules have their tests beside them (tests/cards/test_text.py) where that module exists.
    assert [m for m in missing if not m.startswith("tests/cards/test_text.py")] == []


def test_messages_of_cases_checked_elsewhere(repo: Path, tmp_path: Path) -> None:
    """The cards, YAML and API rows: the same message the table shows."""
    alibi = repo / "taxonomy" / "methods" / "alibi.yaml"
    data = yaml.safe_load(alibi.read_text(encoding="utf-8"))
    data["claims"][1]["expect"]["value"] = math.nan
    alibi.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    assert [str(p) for p in cards.validate(repo)] == [case("card-nan").expect()]

    big = tmp_path / "big.yaml"
    with big.open("wb") as f:
        f.truncate(paths.MAX_YAML_BYTES + 1)
    with pytest.raises(paths.YAMLReadError) as err:
        paths.read_yaml(big)
    assert str(err.value) == case("card-size").expect(file=big.as_posix())

    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(paths.YAMLReadError) as err:
        paths.read_yaml(bomb)
    assert str(err.value) == case("card-alias-bomb").expect(file=bomb.as_posix())

    with pytest.raises(ValueError) as err:
        posenc.build("rope", head_dim="16", num_heads=2, train_len=32)  # type: ignore[arg-type]
    assert str(err.value) == case("api-head-dim").expect()
