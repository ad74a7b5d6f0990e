"""The real book built with warnings as errors (`posenc book`), and the Sphinx extension
(src/posenc/book/build.py, sphinx_ext.py, and the command in src/posenc/commands/book.py)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from posenc import book, taxonomy
from posenc.book import sphinx_ext

from .conftest import _BUILT, ROOT, write_notebook, write_result


@pytest.mark.slow
def test_full_build_has_no_warnings(built: book.BuildResult) -> None:
    assert f"built {built.index} in " in _BUILT["stdout"]  # the command prints index.html and the build time
    html_dir = built.html_dir
    for cid in taxonomy.card_ids(ROOT):
        assert (html_dir / "book" / "generated" / "methods" / f"{cid}.html").is_file(), cid
    alibi = (html_dir / "book" / "generated" / "methods" / "alibi.html").read_text(encoding="utf-8")
    assert "highlight-bibtex" in alibi and "press2022train" in alibi  # the "Cite this entry" block
    assert "_static/mathjax/tex-chtml-full.js" in alibi
    assert (html_dir / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").is_dir()
    assert (html_dir / "book" / "bibliography.html").is_file() and (html_dir / "search.html").is_file()
    assert (html_dir / "book" / "protocol.html").is_file()
    assert (html_dir / "favicon.ico").is_file() and (html_dir / "_static" / "favicon.ico").is_file()
    for page in ("book/intro.html", "book/generated/table.html", "book/generated/leaderboard.html",
                 "book/generated/methods/alibi.html"):
        text = (html_dir / page).read_text(encoding="utf-8")
        # no page loads a script, stylesheet or font from another host (MathJax, DataTables are served locally)
        external = re.findall(r'<(?:script|link)\b[^>]*(?:src|href)="((?:https?:)?//[^"]+)"', text)
        assert external == [], (page, external)
        assert text.count("const THEBE_JS_URL") == 1, page  # declared twice is a JavaScript error
        assert re.search(r"posenc \d+\.\d+\.\d+.*built \d{4}-\d{2}-\d{2}", text), page  # the footer
        assert "issues/new" in text  # the issues button
    home = (html_dir / "book" / "intro.html").read_text(encoding="utf-8")
    assert 'id="cite-posenc"' in home and "highlight-bibtex" in home and "posenc contributors" in home


@pytest.mark.slow
def test_a_warning_fails_the_build(site_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`posenc book` exits non-zero and names the warning (here: a hand-written page links a page that does not
    exist); the generated pages themselves are warning-free."""
    page = site_repo / "book" / "conventions.md"
    page.write_text(page.read_text(encoding="utf-8") + "\nSee {doc}`no_such_page`.\n", encoding="utf-8")
    for seed in (0, 1):
        write_result(site_repo, "rope", seed)
        write_result(site_repo, "alibi", seed)
    write_notebook(site_repo, "alibi")
    from posenc.cli import main

    assert main(["book", "--root", str(site_repo), "--build-dir", str(site_repo / "out" / "_build")]) != 0
    err = capsys.readouterr().err
    assert "WARNING" in err and "build FAILED" in err and "\x1b[" not in err
    assert "no_such_page" in err, err
    assert not [ln for ln in err.splitlines() if "WARNING" in ln and ("book/generated" in ln or "book/runs" in ln)], err
    html_dir = site_repo / "out" / "_build" / "html"
    page = (html_dir / "book" / "generated" / "methods" / "alibi.html").read_text(encoding="utf-8")
    assert "alibi.png" in page and (html_dir / "book" / "runs" / "smoke" / "alibi.html").is_file()
    assert "_downloads/" in page and "colab.research.google.com/github/posenc/posenc/blob/main/book/runs/smoke/" \
                                      "alibi.ipynb" in page


def test_command_line_parses() -> None:
    from posenc.cli import make_parser

    args = make_parser().parse_args(["book", "--no-build", "--strict"])
    assert args.no_build and args.keep_going is False
    assert make_parser().parse_args(["book"]).keep_going is True
    with pytest.raises(SystemExit):
        make_parser().parse_args(["book", "--strict", "--keep-going"])


def test_no_build_writes_pages_from_a_fresh_checkout(tmp_path: Path) -> None:
    """What a fresh clone has (no results of the current protocol): every page generates, results pending."""
    for rel in ("taxonomy", "src/posenc/pe", "book"):
        shutil.copytree(ROOT / rel, tmp_path / rel, ignore=shutil.ignore_patterns("generated", "runs"))
    for rel in ("references.bib", "CITATION.cff"):
        shutil.copy(ROOT / rel, tmp_path / rel)
    from posenc.cli import main

    assert main(["book", "--no-build", "--root", str(tmp_path)]) == 0
    assert (tmp_path / "_toc.yml").is_file()
    assert len(list((tmp_path / "book" / "generated" / "methods").glob("*.md"))) == len(taxonomy.card_ids(ROOT))
    home = (tmp_path / "book" / "generated" / "home_results.md").read_text()
    assert "Results are pending." in home


def test_a_card_the_book_cannot_show_is_named_by_the_command(site_repo: Path, capsys: pytest.CaptureFixture[str]
                                                            ) -> None:
    import yaml

    path = site_repo / "taxonomy" / "methods" / "rope.yaml"
    data = yaml.safe_load(path.read_text())
    data["formula"] = "```{include} /etc/passwd"
    path.write_text(yaml.safe_dump(data))
    from posenc.cli import main

    assert main(["book", "--no-build", "--root", str(site_repo)]) == 2
    assert "taxonomy/methods/rope.yaml: field 'formula'" in capsys.readouterr().err


def test_scripts_are_emitted_once() -> None:
    class JS(SimpleNamespace):
        pass

    a = JS(filename=None, attributes={"body": "const THEBE_JS_URL = 1"})
    b = JS(filename="", attributes={"body": "const THEBE_JS_URL = 1"})
    c = JS(filename="x.js", attributes={})
    scripts = [a, c, b, c]
    ctx = {"script_files": scripts}
    sphinx_ext._dedupe_scripts(None, "p", "page.html", ctx, None)
    assert ctx["script_files"] == [a, c]
    assert ctx["script_files"] is scripts  # the builder's list: later listeners (MathJax) add to it


def test_footer_names_version_commit_and_date(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    text = sphinx_ext.footer_text(ROOT)
    assert "posenc 0.1.0" in text and "built 2023-11-14" in text


def test_result_json_is_what_the_runner_writes() -> None:
    """The fixtures' results read through the one reader (a schema change would show here first)."""
    from posenc.experiment.results import Result

    from .conftest import result_json

    assert Result.from_json(json.loads(json.dumps(result_json("rope")))).current
