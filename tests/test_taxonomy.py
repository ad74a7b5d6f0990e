"""posenc.taxonomy: the old import path re-exports posenc.cards and posenc.paths for one release."""

from __future__ import annotations

from pathlib import Path

from posenc import cards, paths, taxonomy


def test_old_public_api_still_works(repo: Path) -> None:
    assert taxonomy.load(repo).equals(cards.load(repo))
    assert list(taxonomy.query("learnable=true", repo)["id"]) == ["t5_bias"]
    assert taxonomy.load_card("alibi", repo) == cards.load_card("alibi", repo)
    assert taxonomy.validate(repo) == []
    assert taxonomy.find_root(repo) == paths.find_root(repo)


def test_every_old_name_is_the_new_object() -> None:
    for name in taxonomy.__all__:
        new = getattr(cards, name, None) or getattr(paths, name)
        assert getattr(taxonomy, name) is new, name
