"""The generated pages (src/posenc/book/pages.py, tables.py, toc.py, build.py's includes) on the small fixture
repository and on the real one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from posenc import book, taxonomy
from posenc.book.toc import GUIDES

from .conftest import ROOT, write_notebook, write_result


def _walk(node: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if isinstance(node, dict):
        out.append(node)
        for key in ("parts", "chapters", "sections"):
            for child in node.get(key) or []:
                out += _walk(child)
    return out


def _published(repo: Path) -> book.Context:
    for seed in (0, 1, 2):
        write_result(repo, "rope", seed)
        write_result(repo, "alibi", seed, ppl={1: 10.0, 2: 10.1 + seed / 100, 4: 10.2})
    write_notebook(repo, "alibi")
    return book.load_context(repo)


def test_method_page_without_results_says_why(site_repo: Path) -> None:
    ctx = book.load_context(site_repo)
    t5 = book.method_page(ctx, "t5_bias")
    assert "No implementation in posenc: Not implemented yet in this fixture." in t5
    assert "Not yet run: the card has no implementation" in t5 and "literalinclude" not in t5
    alibi = book.method_page(ctx, "alibi")
    assert "Not yet run: no result of the current protocol is committed" in alibi
    assert "posenc run alibi --preset cpu" in alibi
    # nothing executed yet: the buttons open the template, with the one line to change
    assert "[Open in Colab](https://colab.research.google.com/github/posenc/posenc/blob/main/notebooks/" \
           "extrapolation.ipynb)" in alibi and 'set `method = "alibi"`' in alibi
    assert "Open in Colab" not in t5  # no implementation, nothing to run
    assert "[Edit this card](https://github.com/posenc/posenc/edit/main/taxonomy/methods/alibi.yaml)" in alibi


def test_method_page_with_results(site_repo: Path) -> None:
    figures: dict[str, bytes] = {}
    page = book.method_page(_published(site_repo), "alibi", figures)
    assert "This page shows the `smoke` preset: 3 seeds (0, 1, 2)" in page
    # the rerun buttons: Colab (no /./ segment), the notebook's download, its executed page
    assert "[Open in Colab](https://colab.research.google.com/github/posenc/posenc/blob/main/book/runs/smoke/" \
           "alibi.ipynb)" in page
    assert "{download}`Download notebook </book/runs/smoke/alibi.ipynb>`" in page and "/./" not in page
    # the figure, then the verdicts in the same box
    box = page.split("::::{div} posenc-evidence", 1)[1].split("\n::::\n", 1)[0]
    assert "```{figure} ../figures/alibi.png" in box and "**Verdicts**" in box
    assert "- **" in box.split("**Verdicts**", 1)[1]  # one line per distinct test
    assert figures["alibi.png"].startswith(b"\x89PNG")
    assert "| 2x | 1.01 ± " in page  # mean ± half-width of the ratio


def test_a_learned_pe_that_did_not_move_is_flagged(site_repo: Path) -> None:
    write_result(site_repo, "alibi", moved=False)
    write_result(site_repo, "rope", moved=True)
    ctx = book.load_context(site_repo)
    assert "The learned positional parameters did not move" in book.method_page(ctx, "alibi")
    assert "did not move" not in book.method_page(ctx, "rope")
    lb = book.leaderboard_page(ctx, {})
    assert "**Learned PEs that did not move** (⚑): alibi." in lb


def test_stale_results_are_marked_on_pages(site_repo: Path) -> None:
    write_result(site_repo, "alibi", preset="cpu", protocol=1)
    ctx = book.load_context(site_repo)
    page = book.method_page(ctx, "alibi")
    assert "Stale results are not shown" in page and "`results/cpu/alibi-seed0.json` follows an older protocol" in page
    lb = book.leaderboard_page(ctx, {})
    assert "No result of the current protocol (version 2) is committed yet" in lb
    assert "Results of an older protocol are not published" in lb


def test_leaderboard_has_column_groups_and_the_base_pe(site_repo: Path) -> None:
    write_result(site_repo, "rope")
    write_result(site_repo, "alibi", applies_to="rope", variants=("finetuned", "zero_shot"))
    ctx = book.load_context(site_repo)
    df, groups = book.leaderboard_frame(ctx)
    names = [g for g, _ in groups]
    assert names[:3] == ["method", "perplexity", "perplexity ratio to 1×"]
    assert names[-1] == "verdicts (distinct tests)" and sum(n for _, n in groups) == len(df.columns)
    assert "16×" not in df.columns  # no method measured it at this preset
    row = df[df["id"].str.contains("alibi")].iloc[0]
    assert row["base PE"] == "rope" and row["variant"] == "finetuned"
    figs: dict[str, bytes] = {}
    page = book.leaderboard_page(ctx, figs)
    assert "leaderboard.png" in figs and 'id="posenc_leaderboard"' in page
    assert "unpkg.com" not in page and "cdn." not in page  # DataTables is embedded


def test_atlas_table_has_base_pe_and_sorts_on_header_click(site_repo: Path) -> None:
    ctx = book.load_context(ctx_root := site_repo)
    assert ctx_root == ctx.root
    df = book.atlas_frame(ctx)
    assert "base PE" in df.columns and len(df) == 3
    page = book.table_page(ctx)
    assert 'id="posenc_methods"' in page
    # itables makes header text "icon-only" (only the arrow sorts) unless told otherwise
    assert "text_in_header_can_be_selected" not in page


def test_real_atlas_base_pe_column_finds_rope_methods() -> None:
    df = book.atlas_frame(book.load_context(ROOT))
    rope_based = set(df[df["base PE"] == "rope"]["name"])
    assert {"YaRN", "Position Interpolation (PI)"} <= rope_based or {"YaRN"} <= rope_based, rope_based


def test_toc_lists_notebooks_with_distinct_titles_and_the_guides(site_repo: Path) -> None:
    (site_repo / "book" / "use_on_your_model.md").unlink(missing_ok=True)  # an optional guide: listed once it exists
    ctx = _published(site_repo)
    toc = yaml.safe_load(book.toc_yaml(ctx))
    entry = next(e for e in _walk(toc) if e.get("file") == "book/generated/methods/alibi")
    assert entry["sections"] == [{"file": "book/runs/smoke/alibi", "title": "ALiBi: executed notebook (smoke)"}]
    guides = [c["file"] for c in toc["parts"][2]["chapters"]]
    assert guides[0] == "book/protocol"
    # An optional guide is listed exactly when its page exists.
    optional = [name for name, required in GUIDES if not required]
    for name in optional:
        (site_repo / "book" / f"{name}.md").unlink(missing_ok=True)
    guides = [c["file"] for c in book.toc(book.load_context(site_repo))["parts"][2]["chapters"]]
    assert not {f"book/{n}" for n in optional} & set(guides)
    for name in optional:
        (site_repo / "book" / f"{name}.md").write_text(f"# {name}\n")
    ctx = book.load_context(site_repo)
    guides = [c["file"] for c in book.toc(ctx)["parts"][2]["chapters"]]
    assert [g for g in guides if g in {f"book/{n}" for n in optional}] == [f"book/{n}" for n in optional]
    assert "book/generated/hf_support.md" in book.render(ctx)


def test_protocol_includes_pending_then_filled(site_repo: Path) -> None:
    files = book.render(book.load_context(site_repo))
    assert files["book/generated/task_learnability.md"].startswith(b"*Pending:* `results/task_learnability.json`")
    assert files["book/generated/sweep_cost.md"].startswith(b"*Pending:* `results/cpu/sweep.json`")
    assert b"Results are pending." in files["book/generated/home_results.md"]
    (site_repo / "results" / "cpu").mkdir(parents=True)
    (site_repo / "results" / "task_learnability.json").write_text(json.dumps({
        "command": "python scripts/task_learnability.py --steps 300", "rows": [
            {"task": "needle", "steps": 300, "d_model": 64, "final_loss": 0.1, "wall_s": 12.3,
             "accuracy": {"1x": 0.98, "2x": 0.5, "4x": 0.2}}]}))
    (site_repo / "results" / "cpu" / "sweep.json").write_text(json.dumps({
        "command": "posenc run --all --preset cpu --jobs 2", "wall_time_s": 3000, "jobs": 2}))
    files = book.render(book.load_context(site_repo))
    tl = files["book/generated/task_learnability.md"].decode()
    assert "| `needle` | 300 | 64 | 0.100 | 98% | 50% | 20% | 12 s |" in tl
    assert "Measured by `python scripts/task_learnability.py --steps 300`" in tl
    sweep = files["book/generated/sweep_cost.md"].decode()
    assert "| command | `posenc run --all --preset cpu --jobs 2` |" in sweep
    assert "| wall time | 3000 s (50.0 min) |" in sweep


def test_home_findings_come_from_the_results(site_repo: Path) -> None:
    files = book.render(_published(site_repo))
    home = files["book/generated/home_results.md"].decode()
    assert "**Results at the `smoke` preset**" in home
    assert "1. **Baselines at 4× the training length.**" in home
    assert "{doc}`alibi </book/generated/methods/alibi>`" in home
    assert "2. **All methods at 4×.**" in home and "3. **Methods applied to RoPE" in home
    cite = files["book/generated/cite_posenc.md"].decode()
    assert "@software{posenc" in cite and "n.d." not in cite


def test_real_repo_has_a_page_per_card_and_a_complete_toc() -> None:
    ids = taxonomy.card_ids(ROOT)
    files = book.render(book.load_context(ROOT))
    assert {f"book/generated/methods/{i}.md" for i in ids} <= set(files)
    toc = yaml.safe_load(files["_toc.yml"])
    listed = [e["file"] for e in _walk(toc) if "file" in e] + [toc["root"]]
    assert len(listed) == len(set(listed)), "a page is listed twice"
    for doc in listed:
        assert f"{doc}.md" in files or (ROOT / f"{doc}.md").is_file() or (ROOT / f"{doc}.ipynb").is_file(), doc
    titles = [e["title"] for e in _walk(toc) if "title" in e]
    assert len(titles) == len(set(titles))


def test_generation_is_deterministic_and_removes_stale_pages(tmp_path: Path) -> None:
    a = book.render(book.load_context(ROOT))
    assert a == book.render(book.load_context(ROOT))
    first = book.generate(ROOT, dest=tmp_path)
    assert set(first.changed) == set(a)
    again = book.generate(ROOT, dest=tmp_path)
    assert again.changed == [] and again.removed == []
    stale = tmp_path / "book" / "generated" / "methods" / "deleted_card.md"
    stale.write_text("# gone\n")
    assert "book/generated/methods/deleted_card.md" in book.generate(ROOT, dest=tmp_path).removed
