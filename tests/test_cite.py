"""posenc.cite: BibTeX round trip, APA and Markdown formatting (names, 'and others', braces, LaTeX escapes)
and the project's own citation from CITATION.cff. Card citations are tests/cards/test_citation.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import bibtexparser
import pytest

import posenc
from posenc import cite, paths

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parents[1]
SURVEY_DOI = "10.18653/v1/2024.findings-emnlp.582"


@pytest.fixture
def bib() -> cite.Bibliography:
    return cite.read_bibliography(FIXTURES / "repo" / "references.bib")


def entry(text: str) -> bibtexparser.model.Entry:
    lib = bibtexparser.parse_string(text)
    assert not lib.failed_blocks
    return lib.entries[0]


# ---------------------------------------------------------------------------------------------- APA
@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("press2022train",
         "Press, O., Smith, N. A., & Lewis, M. (2022). Train Short, Test Long: Attention with Linear Biases Enables "
         "Input Length Extrapolation. In International Conference on Learning Representations. "
         "https://arxiv.org/abs/2108.12409"),
        ("su2024roformer",
         "Su, J., Ahmed, M., Lu, Y., Pan, S., Bo, W., & Liu, Y. (2024). RoFormer: Enhanced Transformer with Rotary "
         "Position Embedding. Neurocomputing, 568, 127063. https://doi.org/10.1016/j.neucom.2023.127063"),
        ("raffel2020exploring",
         "Raffel, C., Shazeer, N., Roberts, A., et al. (2020). Exploring the Limits of Transfer Learning with a "
         "Unified Text-to-Text Transformer. Journal of Machine Learning Research, 21(140), 1–67."),
        ("vaswani2017attention",
         "Vaswani, A., Shazeer, N., Parmar, N., Uszkoreit, J., Jones, L., Gomez, A. N., Kaiser, Ł., & Polosukhin, I. "
         "(2017). Attention Is All You Need. In Advances in Neural Information Processing Systems."),
        ("goedel2023accents",
         "Gödel, K., François, J.-P., & van der Waals, J. D. (2023). On Über-Long Contexts: a Test of LaTeX "
         "Escapes. Blog post."),
        ("metaai2024llama",
         "Meta AI. (2024). The Llama 3 Herd of Models. arXiv preprint arXiv:2407.21783. "
         "https://arxiv.org/abs/2407.21783"),
    ],
)
def test_apa_fixture_entries(bib: cite.Bibliography, key: str, expected: str) -> None:
    assert cite.apa(bib.get(key)) == expected


@pytest.mark.parametrize(
    ("authors", "expected"),
    [
        ("Press, Ofir", "Press, O."),
        ("Ofir Press and Noah A. Smith", "Press, O., & Smith, N. A."),
        ("A, Bob and C, Dan and E, Fay", "A, B., C, D., & E, F."),
        ("Press, Ofir and others", "Press, O., et al."),
        ("{\\\"O}zt{\\\"u}rk, {\\\"U}mit", "Öztürk, Ü."),
        ("Smith, Jr., John", "Smith, J., Jr."),
        ("{Google DeepMind} and Doe, Jane", "Google DeepMind, & Doe, J."),
        ("Li, M.H.", "Li, M. H."),
        (" and ".join(f"Last{i}, First{i}" for i in range(1, 23)),
         ", ".join(f"Last{i}, F." for i in range(1, 20)) + ", . . . Last22, F."),
    ],
)
def test_apa_authors(authors: str, expected: str) -> None:
    assert cite.apa_authors(authors) == expected


def test_apa_without_authors_editors_and_question_title() -> None:
    e = entry("@misc{k, title = {Does It Extrapolate?}, year = {2023}, howpublished = {Blog post}}")
    assert cite.apa(e) == "Does It Extrapolate? (2023). Blog post."
    e = entry("@book{k, title = {Long Contexts}, editor = {Doe, Jane and Roe, Rick}, publisher = {P}, year = 2020}")
    assert cite.apa(e) == "Doe, J., & Roe, R. (Eds.). (2020). Long Contexts. P."
    e = entry("@misc{k, title = {Undated}, author = {Doe, Jane}}")
    assert cite.apa(e) == "Doe, J. (n.d.). Undated."


def test_latex_to_text() -> None:
    assert cite.latex_to_text("G{\\\"o}del \\& {M}\\\"{u}ller --- 1--2") == "Gödel & Müller — 1–2"
    assert cite.latex_to_text("{{RoFormer}}:  Enhanced\n  Transformer") == "RoFormer: Enhanced Transformer"


# ---------------------------------------------------------------------------------------------- Markdown
def test_markdown_links_arxiv_then_doi(bib: cite.Bibliography) -> None:
    assert cite.markdown(bib.get("press2022train")) == (
        "- [Train Short, Test Long: Attention with Linear Biases Enables Input Length Extrapolation]"
        "(https://arxiv.org/abs/2108.12409). Press, O., Smith, N. A., & Lewis, M. (2022). "
        "In International Conference on Learning Representations."
    )
    assert cite.markdown(bib.get("su2024roformer")).startswith(
        "- [RoFormer: Enhanced Transformer with Rotary Position Embedding](https://doi.org/10.1016/j.neucom.2023.127063)."
    )
    # no link in the entry: the card's arXiv id is used, and no link at all without one
    vaswani = bib.get("vaswani2017attention")
    assert cite.markdown(vaswani, card_arxiv="1706.03762").startswith(
        "- [Attention Is All You Need](https://arxiv.org/abs/1706.03762). Vaswani, A.,"
    )
    assert cite.markdown(vaswani).startswith("- Attention Is All You Need. Vaswani, A.,")


def test_markdown_escapes_brackets() -> None:
    e = entry("@misc{k, title = {A [bracketed] title}, author = {Doe, Jane}, year = 2020, doi = {10.1/x}}")
    assert cite.markdown(e) == "- [A \\[bracketed\\] title](https://doi.org/10.1/x). Doe, J. (2020)."


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ("eprint = {2108.12409}, archiveprefix = {arXiv}", "2108.12409"),
        ("journal = {arXiv preprint arXiv:2309.00071}", "2309.00071"),
        ("url = {https://arxiv.org/abs/2306.15595v2}", "2306.15595v2"),
        ("note = {arXiv:hep-th/9901001}", "hep-th/9901001"),
        ("url = {https://example.org}", None),
    ],
)
def test_arxiv_id(fields: str, expected: str | None) -> None:
    assert cite.arxiv_id(cite.entry_fields(entry(f"@misc{{k, title={{T}}, {fields}}}"))) == expected


# ---------------------------------------------------------------------------------------------- BibTeX
def test_bibtex_round_trip(bib: cite.Bibliography) -> None:
    text = cite.to_bibtex(list(bib.entries.values()))
    again = bibtexparser.parse_string(text)
    assert not again.failed_blocks
    assert [e.key for e in again.entries] == list(bib.entries)
    for e in again.entries:
        assert cite.entry_fields(e) == cite.entry_fields(bib.entries[e.key])


def test_bibliography_errors_are_collected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "x.bib"
    path.write_text("@misc{a, title={x}, year={2020}}\n@misc{a, title={y}}\n@misc{b title={z}}\n")
    b = cite.read_bibliography(path)
    assert list(b.entries) == ["a"]
    assert b.errors == [(2, "duplicate key 'a'"),
                        (3, "BibTeX syntax error: Expected comma after entry key, but found =")]
    assert capsys.readouterr().err == ""  # reported through `errors`, not logged
    with pytest.raises(KeyError, match=r"'aa' is not a key of .*x.bib; did you mean a\?"):
        b.get("aa")


# ---------------------------------------------------------------------------------------------- the project
def test_citation_cff_matches_package_and_fallback() -> None:
    cff = paths.read_yaml(REPO / "CITATION.cff")  # the strict reader the module uses
    assert cff["cff-version"] == "1.2.0"
    assert cff["version"] == posenc.__version__ == cite._PROJECT_FALLBACK["version"]
    assert cff["authors"] == [{"name": "posenc contributors"}]
    assert cff["license"] == "MIT"
    pref = cff["preferred-citation"]
    assert pref["doi"] == SURVEY_DOI
    assert pref["collection-title"] == "Findings of the Association for Computational Linguistics: EMNLP 2024"
    assert pref["authors"][0] == {"family-names": "Zhao", "given-names": "Liang"}
    fallback = cite._PROJECT_FALLBACK
    assert cff["title"] == fallback["title"]
    # complete enough to cite: where the code is, and when this version was released (no "n.d.")
    assert cff["repository-code"] == fallback["repository-code"] == "https://github.com/posenc/posenc"
    assert str(cff["date-released"]) == fallback["date-released"]
    for key in ("title", "authors", "doi", "year", "start", "end", "collection-title"):
        assert pref[key] == fallback["preferred-citation"][key], key


@pytest.mark.parametrize("use_cff", [True, False])
def test_project_entries(repo: Path, use_cff: bool) -> None:
    if use_cff:
        shutil.copy(REPO / "CITATION.cff", repo / "CITATION.cff")
    software, survey = cite.project_entries(repo)
    f = cite.entry_fields(software)
    assert software.entry_type == "software" and software.key == "posenc"
    assert f["version"] == "0.1.0" and f["author"] == "{posenc contributors}"
    s = cite.entry_fields(survey)
    assert s["doi"] == SURVEY_DOI and survey.key == "zhao2024length"
    assert cite.apa(survey) == (
        "Zhao, L., Feng, X., Feng, X., Zhong, W., Xu, D., Yang, Q., Liu, H., Qin, B., & Liu, T. (2024). "
        "Length Extrapolation of Transformers: A Survey from the Perspective of Positional Encoding. In Findings "
        "of the Association for Computational Linguistics: EMNLP 2024 (pp. 9959–9977). "
        "https://doi.org/10.18653/v1/2024.findings-emnlp.582"
    )
    year = str(paths.read_yaml(REPO / "CITATION.cff")["date-released"])[:4]
    assert cite.apa(software) == (
        f"posenc contributors. ({year}). posenc: a reproducible atlas of positional encodings for Transformer "
        "length extrapolation (Version 0.1.0) [Computer software]. https://github.com/posenc/posenc"
    )


def test_project_uses_the_bibliography_entry_of_the_survey(repo: Path) -> None:
    with (repo / "references.bib").open("a") as f:
        f.write("\n@inproceedings{zhao2024survey, title = {Length Extrapolation of Transformers}, "
                f"author = {{Zhao, Liang}}, year = {{2024}}, doi = {{{SURVEY_DOI}}}}}\n")
    assert [e.key for e in cite.project_entries(repo)] == ["posenc", "zhao2024survey"]
    assert cite.format_entries(cite.project_entries(repo), "bibtex").count("@") == 2


def test_url_inside_howpublished() -> None:
    e = entry("@misc{k, title = {{NTK}-Aware Scaled {RoPE}}, author = {{bloc97}}, year = {2023},\n"
              "  howpublished = {Reddit post, r/LocalLLaMA, \\url{https://www.reddit.com/r/x/}}}")
    assert cite.apa(e) == "bloc97. (2023). NTK-Aware Scaled RoPE. Reddit post, r/LocalLLaMA. https://www.reddit.com/r/x/"
    assert cite.markdown(e) == (
        "- [NTK-Aware Scaled RoPE](https://www.reddit.com/r/x/). bloc97. (2023). Reddit post, r/LocalLLaMA."
    )


def test_real_bibliography_renders_plain_text() -> None:
    """Every entry of the repository's references.bib formats without leftover LaTeX."""
    path = REPO / "references.bib"
    if not path.is_file():
        pytest.skip("references.bib not written yet")
    b = cite.read_bibliography(path)
    assert b.errors == []
    for key, e in b.entries.items():
        text = cite.apa(e)
        assert not any(c in text for c in "{}\\"), (key, text)
        assert cite.markdown(e).startswith("- "), key
    assert bibtexparser.parse_string(cite.to_bibtex(list(b.entries.values()))).entries


def test_broken_citation_cff_is_named(repo: Path) -> None:
    (repo / "CITATION.cff").write_text("title: posenc\ntitle: again\n", encoding="utf-8")
    with pytest.raises(paths.YAMLReadError, match=r"^CITATION.cff:2: YAML error: found duplicate key 'title'"):
        cite.project_entries(repo)
    (repo / "CITATION.cff").write_text("- a list\n", encoding="utf-8")
    with pytest.raises(paths.YAMLReadError, match="CITATION.cff: expected a mapping at the top level"):
        cite.project_entries(repo)


def test_cite_does_not_know_cards() -> None:
    """cards imports cite, never the reverse (no import cycle)."""
    import ast
    import inspect

    imported = set()
    for node in ast.walk(ast.parse(inspect.getsource(cite))):  # function-level imports included
        if isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported |= {f"{node.module}.{a.name}" for a in node.names}
    assert "posenc.paths" in imported
    assert not any(m.startswith(("posenc.cards", "posenc.taxonomy")) for m in imported), imported
