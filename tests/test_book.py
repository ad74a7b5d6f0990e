"""The book generator (src/posenc/book.py) and one full build of the book with warnings as errors."""

from __future__ import annotations

import base64
import html
import json
import shutil
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from posenc import book, taxonomy

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------- helpers
def png_bytes(rgb: tuple[int, int, int] = (200, 30, 30), size: int = 4) -> bytes:
    """A valid size×size PNG of one colour (so images from different notebooks are distinguishable)."""
    raw = b"".join(b"\x00" + bytes(rgb) * size for _ in range(size))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def notebook(images: list[tuple[bytes, list[str]]], headings: list[str] | None = None) -> dict[str, Any]:
    """An executed-notebook JSON: a title, then for each image an optional heading and a code cell."""
    cells: list[dict[str, Any]] = [{"cell_type": "markdown", "metadata": {}, "source": ["# A run\n"]}]
    for i, (img, tags) in enumerate(images):
        if headings and headings[i]:
            cells.append({"cell_type": "markdown", "metadata": {}, "source": [f"## {headings[i]}\n"]})
        cells.append({
            "cell_type": "code", "execution_count": i + 1, "metadata": {"tags": tags}, "source": ["plot()"],
            "outputs": [{"output_type": "display_data", "metadata": {},
                         "data": {"image/png": base64.b64encode(img).decode(), "text/plain": ["<Figure>"]}}],
        })
    return {"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                        "language": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


def result(method: str, preset: str, device: str, verdict: str = "reproduced") -> dict[str, Any]:
    curve = [{"length": 64 * f, "factor": f, "ppl": 3.0 + f, "bpb": 1.0, "nll": 1.0, "tokens": 100} for f in (1, 2)]
    return {
        "schema": 1, "complete": True, "method": method, "preset": preset, "seed": 0, "kind": "scratch",
        "applies_to": None, "primary": "scratch",
        "config": {"n_layer": 2, "d_model": 128, "n_head": 4, "train_len": 64, "steps": 600},
        "metadata": {"device": device, "device_name": "Test Device", "corpus": "stdlib-docs"},
        "curves": {"lm_nonoverlap": curve, "arithmetic": [{"length": 64, "factor": 1, "accuracy": 0.5, "n": 8}]},
        "claims": [{"id": "c1", "verdict": verdict, "measured": 1.25, "reason": "ppl_ratio at 2x = 1.25"}],
    }


ODD_NAME = "Odd <b>*Name*</b> | $x$ _y_ {doc}`z` & [link](u)"

CARD_BASE: dict[str, Any] = {
    "aliases": [], "category": "fam", "coverage": "survey", "survey_section": "§1", "year": 2021,
    "year_venue": None, "venue": "arXiv preprint", "bibkey": "doe2021x", "extra_bibkeys": [], "arxiv": "2101.00001",
    "code": "https://example.org/code", "summary": "A summary.", "formula": "q_i k_j^\\top + b_{i-j}",
    "table1": {"manifestation": "bias", "learnable": False, "integration": "add", "injection": "every",
               "source": "ours"},
    "hyperparameters": [{"name": "k", "default": 2, "meaning": "a | pipe and `code|span`"}],
    "needs": "none", "relations": {"builds_on": [], "variant_of": []}, "implementation": None,
    "implementation_note": "needs a 7B model", "notebook": None,
    "claims": [{"id": "c1", "source": "paper", "statement": "It holds.", "dataset": "D", "metric": "perplexity",
                "train_length": 64, "points": [{"length": 64, "value": 10.0}],
                "expect": {"metric": "ppl_ratio", "at": 2, "op": "<=", "value": 1.5}}],
    "notes": ["A note with <html> and *stars*."],
}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A tiny repository: one category, three cards, one registered PE class, a bibliography."""
    (tmp_path / "taxonomy" / "methods").mkdir(parents=True)
    (tmp_path / "taxonomy" / "categories.yaml").write_text(yaml.safe_dump([
        {"id": "fam", "name": "A family", "survey": "§1", "in_survey": True, "description": "Family."},
        {"id": "new", "name": "A new branch", "survey": "not covered", "in_survey": False, "description": "New."},
    ]))
    cards = {
        "plain": {"name": "Plain", "implementation": "plain", "implementation_note": None},
        "odd": {"name": ODD_NAME, "summary": f"Summary of {ODD_NAME}.",
                "relations": {"builds_on": ["plain"], "variant_of": []}},
        "gpu_too": {"name": "Both presets", "category": "new", "coverage": "after_survey", "implementation": "plain",
                    "implementation_note": None},
    }
    for cid, over in cards.items():
        card = {"id": cid, **CARD_BASE, **over}
        (tmp_path / "taxonomy" / "methods" / f"{cid}.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
    (tmp_path / "references.bib").write_text(
        "@article{doe2021x,\n  title = {A Paper},\n  author = {Doe, Jane},\n  journal = {J},\n  year = {2021}\n}\n")
    pe = tmp_path / "src" / "posenc" / "pe"
    pe.mkdir(parents=True)
    (pe / "demo.py").write_text(
        "from posenc.pe.base import PositionalEncoding, register\n\n\n@register\nclass Plain(PositionalEncoding):\n"
        '    """Demo."""\n\n    id = "plain"\n')
    return tmp_path


def _toc_files(node: Any) -> list[str]:
    out: list[str] = []
    if isinstance(node, dict):
        if "file" in node:
            out.append(node["file"])
        for key in ("root",):
            if key in node:
                out.append(node[key])
        for key in ("parts", "chapters", "sections"):
            for child in node.get(key) or []:
                out += _toc_files(child)
    return out


def _render_md(text: str) -> str:
    """MyST Markdown → HTML with the parser Sphinx uses (no Sphinx run)."""
    from markdown_it.renderer import RendererHTML
    from myst_parser.config.main import MdParserConfig
    from myst_parser.parsers.mdit import create_md_parser

    md = create_md_parser(MdParserConfig(enable_extensions={"dollarmath", "colon_fence"}), RendererHTML)
    return md.render(text)


# ---------------------------------------------------------------------------------------------- real repo
def test_real_repo_has_a_page_per_card_and_the_toc_lists_them() -> None:
    ids = taxonomy.card_ids(ROOT)
    assert ids, "no cards found"
    files = book.render(book.load_context(ROOT))
    pages = {f"book/generated/methods/{i}.md" for i in ids}
    assert pages <= set(files)
    toc = yaml.safe_load(files["_toc.yml"])
    listed = _toc_files(toc)
    assert len(listed) == len(set(listed)), "a page is listed twice"
    assert {p.removesuffix(".md") for p in pages} <= set(listed)
    assert toc["root"] == "book/intro"
    assert [p["caption"] for p in toc["parts"]] == ["The atlas", "Methods", "Using posenc", "References"]
    for doc in listed:  # every TOC entry exists (generated now, hand-written, or an executed notebook)
        assert (f"{doc}.md" in files or (ROOT / f"{doc}.md").is_file() or (ROOT / f"{doc}.ipynb").is_file()), doc
    for cid in ids:
        page = files[f"book/generated/methods/{cid}.md"].decode()
        assert "## Cite this entry" in page and "## Formula" in page and "## Claims and verdicts" in page


def test_generation_is_deterministic_and_idempotent(tmp_path: Path) -> None:
    a = book.render(book.load_context(ROOT))
    b = book.render(book.load_context(ROOT))
    assert a == b
    first = book.generate(ROOT, dest=tmp_path)
    assert set(first.changed) == set(a)
    again = book.generate(ROOT, dest=tmp_path)
    assert again.changed == [] and again.removed == []
    # a stale page (a deleted card) is removed
    stale = tmp_path / "book" / "generated" / "methods" / "deleted_card.md"
    stale.write_text("# gone\n")
    assert "book/generated/methods/deleted_card.md" in book.generate(ROOT, dest=tmp_path).removed
    assert not stale.exists()


# ---------------------------------------------------------------------------------------------- tiny repo
def test_card_without_implementation_or_notebook_says_why(repo: Path) -> None:
    ctx = book.load_context(repo)
    odd = book.method_page(ctx, "odd")
    assert "No implementation in posenc: needs a 7B model" in odd
    assert "Not yet run: it has no implementation" in odd
    assert "literalinclude" not in odd
    plain = book.method_page(ctx, "plain")
    assert "Not yet run: no executed notebook or result is committed yet" in plain
    assert "posenc run plain --preset cpu" in plain
    assert "```{literalinclude} /src/posenc/pe/demo.py" in plain and ":lines: 4-8" in plain
    assert "**not yet run**" in plain  # the claim's verdict


def test_odd_characters_render_literally(repo: Path) -> None:
    ctx = book.load_context(repo)
    page = book.method_page(ctx, "odd")
    rendered = _render_md(page)
    text = html.unescape(rendered)
    # The title and the summary show the name as typed: no HTML, emphasis, math, role or link is created.
    # (backtick code spans in card text stay code spans)
    assert f"<h1>{html.escape(ODD_NAME, quote=False)}</h1>".replace("`z`", "<code>z</code>") in rendered
    assert f"Summary of {ODD_NAME}." in text.replace("<code>z</code>", "`z`")
    assert "<b>" not in rendered and "<em>Name</em>" not in rendered and "<em>y</em>" not in rendered
    assert "class=\"math" not in rendered  # no $x$ math node
    # Pipes inside table cells (plain text and code spans) do not split the hyperparameter table.
    assert "a | pipe and <code>code|span</code>" in rendered
    assert "A note with &lt;html&gt; and *stars*." in rendered
    # The related-entries link of the other card is built from the escaped name too.
    assert "[Odd \\<b\\>" in book.method_page(ctx, "plain")
    table = book.table_frame(ctx)
    assert html.escape(ODD_NAME) in set(table["name"])
    # In the category page's table the name stays in its cell (a pipe must not split the row).
    roots, _ = book.category_tree(ctx)
    fam = next(c for c in roots if c.path == "fam")
    cat_html = _render_md(book.category_page(ctx, fam))
    assert cat_html.count("<td>") == 2 * 5  # two cards, five columns
    assert f'<a href="../methods/odd.md">{html.escape(ODD_NAME, quote=False)}</a>'.replace(
        "`z`", "<code>z</code>") in cat_html
    assert 'href="u"' not in cat_html


def test_gpu_results_and_notebooks_are_preferred_over_cpu(repo: Path) -> None:
    red, blue = png_bytes((200, 0, 0)), png_bytes((0, 0, 200))
    for preset, img, device in (("cpu", red, "cpu"), ("gpu", blue, "cuda")):
        (repo / "results" / preset).mkdir(parents=True)
        (repo / "results" / preset / "gpu_too-seed0.json").write_text(json.dumps(result("gpu_too", preset, device)))
        (repo / "book" / "runs" / preset).mkdir(parents=True, exist_ok=True)
        (repo / "book" / "runs" / preset / "gpu_too.ipynb").write_text(json.dumps(notebook([(img, [])])))
    # cpu only for `plain`, and an incomplete JSON that must be ignored
    (repo / "results" / "cpu" / "plain-seed0.json").write_text(json.dumps(result("plain", "cpu", "cpu", "x")))
    (repo / "results" / "cpu" / "plain-seed1.json").write_text(json.dumps({"complete": False}))
    ctx = book.load_context(repo)
    figures: dict[str, bytes] = {}
    page = book.method_page(ctx, "gpu_too", figures)
    assert "This page shows the `gpu` preset on `cuda` (Test Device). Also available: `cpu`." in page
    assert figures == {"gpu_too-gpu.png": blue}
    assert "```{figure} ../figures/gpu_too-gpu.png" in page
    assert "{doc}`gpu preset </book/runs/gpu/gpu_too>`, {doc}`cpu preset </book/runs/cpu/gpu_too>`" in page
    assert "- **reproduced**: It holds. *(the paper; D, L = 64)*" in page
    assert "Our test: ppl(2×L) / ppl(1×L) \\<= 1.5; measured: 1.25 (ppl\\_ratio at 2x = 1.25)." in page
    assert "| 128 | 2 | 5 |" in page  # the measured curve table: length, factor, ppl
    plain = book.method_page(ctx, "plain")
    assert "This page shows the `cpu` preset on `cpu`" in plain and "seeds stored" not in plain
    assert "No executed notebook for the `cpu` preset yet" in plain
    toc = yaml.safe_load(book.toc_yaml(ctx))
    entry = next(e for e in _walk(toc) if e.get("file") == "book/generated/methods/gpu_too")
    assert [s["file"] for s in entry["sections"]] == ["book/runs/gpu/gpu_too", "book/runs/cpu/gpu_too"]
    files = book.render(ctx)
    assert files["book/generated/figures/gpu_too-gpu.png"] == blue


def _walk(node: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if isinstance(node, dict):
        out.append(node)
        for key in ("parts", "chapters", "sections"):
            for child in node.get(key) or []:
                out += _walk(child)
    return out


def test_key_figure_prefers_tagged_then_curve_heading_then_first(tmp_path: Path) -> None:
    a, b, c = png_bytes((1, 0, 0)), png_bytes((0, 1, 0)), png_bytes((0, 0, 1))
    nb = tmp_path / "n.ipynb"
    nb.write_text(json.dumps(notebook([(a, []), (b, []), (c, ["key-figure"])], ["Signal", "Curves", None])))
    assert book.key_figure(nb) == c
    nb.write_text(json.dumps(notebook([(a, []), (b, []), (c, [])], ["Signal", "Curves against baselines", None])))
    assert book.key_figure(nb) == b
    nb.write_text(json.dumps(notebook([(a, []), (b, [])], ["Signal", "Loss"])))
    assert book.key_figure(nb) == a
    nb.write_text(json.dumps(notebook([])))
    assert book.key_figure(nb) is None


def test_taxonomy_tree_counts_and_marks(repo: Path) -> None:
    tree = book.taxonomy_tree_md(book.load_context(repo))
    assert "{doc}`A family </book/generated/categories/fam>` (2 methods, survey §1)" in tree
    assert "(1 method) *(not in survey)*" in tree
    assert "{doc}`Both presets </book/generated/methods/gpu_too>` *(after the survey)*" in tree
    assert "‹b›" in tree  # angle brackets cannot end the {doc} role's target early


def test_table_is_offline_and_has_every_card(repo: Path) -> None:
    ctx = book.load_context(repo)
    page = book.table_page(ctx)
    assert "```{raw} html" in page
    assert 'id="posenc_methods"' in page
    assert "unpkg.com" not in page and "cdn." not in page  # the DataTables bundle is embedded
    df = book.table_frame(ctx)
    assert len(df) == 3
    assert list(df["id"])[0] == '<a href="methods/gpu_too.html">gpu_<wbr>too</a>'
    assert book.table_page(ctx) == page  # deterministic (fixed table id)


def test_leaderboard_missing_and_present(repo: Path) -> None:
    ctx = book.load_context(repo)
    assert "No leaderboard is committed yet" in book.leaderboard_page(ctx, {})
    folder = repo / "results" / "cpu"
    folder.mkdir(parents=True)
    (folder / "leaderboard.csv").write_text("method,variant,ppl@1x,ppl_ratio@4x\nplain,scratch,3.5,1.2\n")
    (folder / "leaderboard.png").write_bytes(png_bytes())
    figs: dict[str, bytes] = {}
    page = book.leaderboard_page(book.load_context(repo), figs)
    assert "## `cpu` preset" in page and "[Plain](methods/plain.md)" in page and "| 3.5 | 1.2 |" in page
    assert set(figs) == {"leaderboard-cpu.png"}


def test_escape_keeps_code_spans_and_escapes_the_rest() -> None:
    assert book.escape("a_b `c_d` *e*") == "a\\_b `c_d` \\*e\\*"
    assert book.escape("x | `y|z`", table=True) == "x \\| `y\\|z`"
    assert book.escape("multi\nline   text") == "multi line text"
    assert book.role_text("a <b> `c`") == "a ‹b› 'c'"


# ---------------------------------------------------------------------------------------------- full build
_BUILT: dict[str, Any] = {}


def build_book_once() -> book.BuildResult:
    """Run `posenc book` (generate + build into <repo>/_build) once per test session; the browser test shares
    it. Returns the build's result; the command's exit code and output are kept in ``_BUILT``."""
    if "result" not in _BUILT:
        import contextlib
        import io

        from posenc.cli import main

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(["book", "--root", str(ROOT)])
        _BUILT.update(rc=rc, stdout=out.getvalue(), stderr=err.getvalue())
        warnings = [ln.strip() for ln in err.getvalue().splitlines() if book._WARNING_RE.search(ln)]
        html_dir = ROOT / "_build" / "html"
        _BUILT["result"] = book.BuildResult(rc, 0.0, html_dir, warnings, out.getvalue() + err.getvalue())
    return _BUILT["result"]


@pytest.mark.slow
def test_full_build_has_no_warnings() -> None:
    res = build_book_once()
    assert res.returncode == 0 and res.warnings == [], "\n".join(res.warnings) or res.log[-3000:]
    assert f"built {res.index} in " in _BUILT["stdout"]  # the command prints index.html and the build time
    assert res.index.is_file()
    html_dir = res.html_dir
    for cid in taxonomy.card_ids(ROOT):
        assert (html_dir / "book" / "generated" / "methods" / f"{cid}.html").is_file(), cid
    alibi = (html_dir / "book" / "generated" / "methods" / "alibi.html").read_text(encoding="utf-8")
    assert "highlight-bibtex" in alibi and "press2022train" in alibi  # the "Cite this entry" block
    assert "_static/mathjax/tex-chtml-full.js" in alibi
    assert (html_dir / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").is_dir()
    assert (html_dir / "book" / "bibliography.html").is_file() and (html_dir / "search.html").is_file()
    # no page loads a script, stylesheet or font from another host (MathJax, DataTables are served locally)
    import re

    for page in ("book/intro.html", "book/generated/table.html", "book/generated/methods/alibi.html"):
        text = (html_dir / page).read_text(encoding="utf-8")
        external = re.findall(r'<(?:script|link)\b[^>]*(?:src|href)="((?:https?:)?//[^"]+)"', text)
        assert external == [], (page, external)


def test_command_line_parses() -> None:
    from posenc.cli import make_parser

    args = make_parser().parse_args(["book", "--no-build", "--strict"])
    assert args.no_build and args.keep_going is False
    assert make_parser().parse_args(["book"]).keep_going is True
    with pytest.raises(SystemExit):
        make_parser().parse_args(["book", "--strict", "--keep-going"])


def test_no_build_writes_pages(tmp_path: Path) -> None:
    # Copy only what generation reads, then run the command on the copy.
    for rel in ("taxonomy", "src/posenc/pe"):
        shutil.copytree(ROOT / rel, tmp_path / rel)
    shutil.copy(ROOT / "references.bib", tmp_path / "references.bib")
    from posenc.cli import main

    assert main(["book", "--no-build", "--root", str(tmp_path)]) == 0
    assert (tmp_path / "_toc.yml").is_file()
    assert len(list((tmp_path / "book" / "generated" / "methods").glob("*.md"))) == len(taxonomy.card_ids(ROOT))


@pytest.mark.slow
def test_a_warning_fails_the_build(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`posenc book` exits non-zero and names the warning when the book has one (here: the hand-written
    pages cite keys that the tiny repository's bibliography lacks)."""
    shutil.copy(ROOT / "_config.yml", repo / "_config.yml")
    (repo / "book").mkdir(exist_ok=True)
    for page in (ROOT / "book").glob("*.md"):
        shutil.copy(page, repo / "book" / page.name)
    (repo / "results" / "gpu").mkdir(parents=True)
    (repo / "results" / "gpu" / "gpu_too-seed0.json").write_text(json.dumps(result("gpu_too", "gpu", "cuda")))
    (repo / "book" / "runs" / "gpu").mkdir(parents=True)
    (repo / "book" / "runs" / "gpu" / "gpu_too.ipynb").write_text(json.dumps(notebook([(png_bytes(), [])])))
    from posenc.cli import main

    assert main(["book", "--root", str(repo), "--build-dir", str(repo / "out" / "_build")]) != 0
    err = capsys.readouterr().err
    assert "WARNING" in err and "build FAILED" in err
    assert "zhao2024length" in err, err  # the unresolved citation is named
    assert "\x1b[" not in err  # plain text, no colour codes
    # ... and the generated pages themselves, odd characters included, are warning-free
    assert not [ln for ln in err.splitlines() if "WARNING" in ln and ("book/generated" in ln or "book/runs" in ln)], err
    html_dir = repo / "out" / "_build" / "html"
    page = (html_dir / "book" / "generated" / "methods" / "gpu_too.html").read_text(encoding="utf-8")
    assert "gpu_too-gpu.png" in page and (html_dir / "book" / "runs" / "gpu" / "gpu_too.html").is_file()
