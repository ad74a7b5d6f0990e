"""The result store: atomic writes, the one reader naming bad files, completion markers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from posenc.experiment import results as R

from .conftest import make_result


def test_atomic_write_keeps_the_old_file_and_removes_the_temporary(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "r.json"
    R.write_json_atomic(path, {"a": 1})

    def full_disk(*_a: object, **_k: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(R.os, "fsync", full_disk)
    with pytest.raises(OSError, match="cannot write .*r.json.*No space left"):
        R.write_json_atomic(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_non_finite_numbers_are_stored_as_null(tmp_path: Path) -> None:
    R.write_json_atomic(tmp_path / "x.json", {"v": float("inf"), "w": [float("nan"), 1.0]})
    assert json.loads((tmp_path / "x.json").read_text()) == {"v": None, "w": [None, 1.0]}


def test_truncated_and_foreign_results_are_named(tmp_path: Path) -> None:
    good = make_result("rope", 0, {"scratch": {1: 10.0, 2: 11.0}})
    path = tmp_path / "cpu" / "rope-seed0.json"
    R.write_json_atomic(path, good.data)
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    with pytest.raises(R.ResultError, match=r"rope-seed0.json: not valid JSON, probably truncated"):
        R.read_result(path)
    with pytest.raises(R.ResultError, match="missing field"):
        R.Result.from_json({"schema": 2}, path)
    with pytest.raises(R.ResultError, match="schema 1"):
        R.Result.from_json({**good.data, "schema": 1}, path)
    with pytest.raises(R.ResultError, match="rope-seed0.json"):
        list(R.iter_results("cpu", tmp_path))


def test_iter_results_skips_non_canonical_runs(tmp_path: Path) -> None:
    for name in ("rope-seed0.json", "rope@abcd1234-seed0.json"):
        R.write_json_atomic(tmp_path / "cpu" / name, make_result("rope", 0, {"scratch": {1: 10.0}}).data)
    assert len(list(R.iter_results("cpu", tmp_path))) == 1
    assert len(list(R.iter_results("cpu", tmp_path, canonical=False))) == 2


def test_value_accessors() -> None:
    r = make_result("pi", 0, {"zero_shot": {1: 10.0, 4: 30.0}, "finetuned": {1: 10.0, 4: 12.0}},
                    primary="finetuned", applies_to="rope")
    assert r.value(4) == 12.0 and r.value(4, variant="zero_shot") == 30.0 and r.value(8) is None
    r.data["variants"]["finetuned"]["lm"][1] = {"length": 256, "factor": 4, "error": "IndexError: past the table"}
    assert r.value(4) == float("inf")


def test_marker_checks_key_protocol_and_checksums(tmp_path: Path) -> None:
    res = tmp_path / "results"
    files = [res / "cpu" / "x-seed0.json", tmp_path / "book" / "x.ipynb"]
    for f in files:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("{}")
    assert not R.marker_valid("x", "cpu", "k1", files, res)
    R.write_marker("x", "cpu", "k1", files, res)
    marker = json.loads(R.marker_path("x", "cpu", res).read_text())
    assert set(marker["files"]) == {"results/cpu/x-seed0.json", "book/x.ipynb"}  # never absolute
    assert R.marker_valid("x", "cpu", "k1", files, res)
    assert not R.marker_valid("x", "cpu", "k2", files, res)  # another configuration
    files[1].write_text('{"cells": []}')  # a notebook rewritten after the marker (e.g. a half-run rerun)
    assert not R.marker_valid("x", "cpu", "k1", files, res)
    files[1].unlink()
    assert not R.marker_valid("x", "cpu", "k1", files, res)
