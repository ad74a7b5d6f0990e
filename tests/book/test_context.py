"""What the book publishes (src/posenc/book/context.py): the preferred preset with current results, stale
results listed but never published, unreadable results named, notebooks only beside their own results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from posenc import book
from posenc.experiment.results import ResultError

from .conftest import write_notebook, write_result


def test_nothing_published_without_current_results(site_repo: Path) -> None:
    ctx = book.load_context(site_repo)
    assert ctx.published is None
    assert [p.name for p in ctx.presets] == list(book.SHOWN_PRESETS)


def test_gpu_then_cpu_then_smoke(site_repo: Path) -> None:
    write_result(site_repo, "rope", preset="smoke")
    assert book.load_context(site_repo).published.preset == "smoke"
    write_result(site_repo, "rope", preset="cpu")
    assert book.load_context(site_repo).published.preset == "cpu"
    write_result(site_repo, "alibi", preset="gpu")
    ctx = book.load_context(site_repo)
    assert ctx.published.preset == "gpu" and sorted(ctx.published.col.by_method) == ["alibi"]
    assert {p.name: p.current for p in ctx.presets} == {"gpu": ["alibi"], "cpu": ["rope"], "smoke": ["rope"]}


def test_an_older_schema_is_stale_not_a_crash(site_repo: Path) -> None:
    old = site_repo / "results" / "cpu" / "alibi-seed0.json"
    old.parent.mkdir(parents=True)
    old.write_text(json.dumps({"schema": 1, "complete": True, "method": "alibi", "curves": {}}))
    ctx = book.load_context(site_repo)
    assert ctx.published is None
    assert ctx.stale("alibi") == [("cpu", "results/cpu/alibi-seed0.json")]
    write_result(site_repo, "rope", preset="cpu")
    ctx = book.load_context(site_repo)
    assert ctx.published.preset == "cpu" and "alibi" not in ctx.published.col.by_method
    assert ctx.stale("alibi") == [("cpu", "results/cpu/alibi-seed0.json")]


def test_an_older_protocol_is_stale(site_repo: Path) -> None:
    write_result(site_repo, "rope", preset="cpu")
    write_result(site_repo, "alibi", preset="cpu", protocol=1)
    ctx = book.load_context(site_repo)
    assert "alibi" not in ctx.published.col.by_method
    assert ctx.stale("alibi") == [("cpu", "results/cpu/alibi-seed0.json")]


def test_a_truncated_result_is_named(site_repo: Path) -> None:
    path = write_result(site_repo, "rope", preset="cpu")
    path.write_text(path.read_text()[:100])
    with pytest.raises(ResultError, match="results/cpu/rope-seed0.json"):
        book.load_context(site_repo)


def test_a_notebook_is_published_only_beside_its_own_results(site_repo: Path) -> None:
    write_result(site_repo, "rope")
    write_result(site_repo, "alibi")
    write_notebook(site_repo, "rope")
    write_notebook(site_repo, "alibi", key="another-configuration")
    write_notebook(site_repo, "t5_bias")  # no result at all
    ctx = book.load_context(site_repo)
    assert ctx.published.notebooks == {"rope": "book/runs/smoke/rope.ipynb"}
