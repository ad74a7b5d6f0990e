"""posenc.cards.store: loading cards and categories through the one root and the one strict YAML reader, ids
resolved by name or alias, and bad ids, bad files and oversized files refused with the file named."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from posenc import cards, paths
from posenc.cli import main

FIXTURES = Path(__file__).parents[1] / "fixtures"
METHODS = paths.METHODS_DIR


def test_load_card_is_a_card_named_by_its_file(repo: Path) -> None:
    card = cards.load_card("alibi", repo)
    assert isinstance(card, cards.Card)
    assert card.id == card["id"] == "alibi" and card.name == "ALiBi"
    assert card.file == f"{METHODS}/alibi.yaml" and card.path == repo.resolve() / METHODS / "alibi.yaml"
    assert [c.id for c in card.claims] == ["wt103_l512", "vs_rope"]
    assert card.claims[1].expect is not None and card.claims[1].expect.comparator == "rope"


def test_load_cards_in_file_order(repo: Path) -> None:
    loaded = cards.load_cards(repo)
    assert [c.id for c in loaded] == cards.card_ids(repo) == ["alibi", "rope", "t5_bias"]


def test_unknown_id_suggests_and_find_card_says_none(repo: Path) -> None:
    with pytest.raises(cards.TaxonomyError, match=r"^unknown card id 'alibx'; did you mean 'alibi'\?$"):
        cards.load_card("alibx", repo)
    assert cards.find_card("alibx", repo) is None
    assert cards.find_card("rope", repo) == cards.load_card("rope", repo)


@pytest.mark.parametrize("bad", ["../references", "../../etc/passwd", "/etc/passwd", "methods/alibi", "ALiBi",
                                 "alibi.yaml", "", "alibi\n"])
def test_ids_that_are_not_plain_are_refused_by_name(repo: Path, bad: str) -> None:
    for fn in (cards.load_card, cards.find_card, cards.card_path):
        with pytest.raises(cards.TaxonomyError) as err:
            fn(bad, repo)
        assert str(err.value).startswith(f"{bad!r} is not a card id")


def test_posenc_root_is_honoured(repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(paths.ROOT_ENV, str(repo))
    assert cards.load_card("t5_bias").file == f"{METHODS}/t5_bias.yaml"
    assert cards.card_ids() == ["alibi", "rope", "t5_bias"]
    monkeypatch.setenv(paths.ROOT_ENV, str(tmp_path))
    with pytest.raises(cards.TaxonomyError, match=r"^POSENC_ROOT=.*: not a posenc repository"):
        cards.load_card("alibi")
    with pytest.raises(cards.TaxonomyError, match="not a posenc repository"):
        cards.load_cards(tmp_path)


def test_resolve_id_by_alias_and_suggestion(repo: Path) -> None:
    assert cards.resolve_id("alibi", repo) == "alibi"
    assert cards.resolve_id("attention with linear biases", repo) == "alibi"
    assert cards.resolve_id("RoFormer", repo) == "rope"
    with pytest.raises(cards.TaxonomyError, match=r"unknown card id 'alibx'; did you mean 'alibi'\?"):
        cards.resolve_id("alibx", repo)
    p = repo / METHODS / "rope.yaml"
    p.write_text(p.read_text(encoding="utf-8").replace("aliases: [", "aliases: [ALiBi, "), encoding="utf-8")
    with pytest.raises(cards.TaxonomyError, match="'ALIBI' is ambiguous: it names alibi, rope"):
        cards.resolve_id("ALIBI", repo)


# ---------------------------------------------------------------------------------------------- bad files
def test_python_tag_is_an_error_never_executed(repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    shutil.copy(FIXTURES / "bad" / "python_tag.yaml", repo / METHODS / "python_tag.yaml")
    with pytest.raises(cards.TaxonomyError, match=r"^taxonomy/methods/python_tag.yaml:2: YAML error: could not "
                                                  r"determine a constructor .*\(tags are not allowed"):
        cards.load_cards(repo)
    with pytest.raises(cards.TaxonomyError, match="python_tag.yaml:2"):
        cards.load_card("python_tag", repo)
    assert not (tmp_path / "executed_marker").exists()


def test_not_a_mapping_and_syntax_errors_name_the_file(repo: Path) -> None:
    shutil.copy(FIXTURES / "bad" / "not_a_mapping.yaml", repo / METHODS / "not_a_mapping.yaml")
    with pytest.raises(cards.TaxonomyError,
                       match="^taxonomy/methods/not_a_mapping.yaml: expected a mapping at the top level, got a list$"):
        cards.load_card("not_a_mapping", repo)
    shutil.copy(FIXTURES / "bad" / "syntax_error.yaml", repo / METHODS / "broken.yaml")
    with pytest.raises(cards.TaxonomyError, match=r"^taxonomy/methods/broken.yaml:5: YAML error"):
        cards.find_card("broken", repo)


def test_categories(repo: Path) -> None:
    tree = cards.categories(repo)
    found = cards.category_paths(tree)
    assert "extrapolatable_pe/rpe/t5_bias_family" in found and "extrapolatable_pe" in found
    (repo / paths.CATEGORIES_FILE).write_text("rpe: {}\n", encoding="utf-8")
    with pytest.raises(cards.TaxonomyError, match="^taxonomy/categories.yaml: expected a list of root categories"):
        cards.categories(repo)


def test_a_50_mb_card_is_refused_by_show_naming_the_file(repo: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """A 50 MB card is refused from its size (a sparse file: nothing is read), with the file named."""
    size = 50 * 1024 * 1024
    with (repo / METHODS / "huge.yaml").open("wb") as f:
        f.truncate(size)
    monkeypatch.setenv(paths.ROOT_ENV, str(repo))
    assert main(["show", "huge"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (f"posenc show: error: taxonomy/methods/huge.yaml: file is {size:,} bytes, over the "
                   f"{paths.MAX_YAML_BYTES:,}-byte limit for YAML files\n")
    assert main(["list"]) == 2
    assert "taxonomy/methods/huge.yaml: file is" in capsys.readouterr().err
