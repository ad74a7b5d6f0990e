"""posenc.cards.validate: every bad input reported with file and field, all at once, and the static registry.
Fixture trees are copies of tests/fixtures/repo (the ``repo`` fixture)."""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from posenc import cards, paths

FIXTURES = Path(__file__).parents[1] / "fixtures"
REPO = Path(__file__).resolve().parents[2]
ALIBI = "taxonomy/methods/alibi.yaml"


def edit(root: Path, card_id: str, fn: Callable[[dict[str, Any]], Any]) -> None:
    path = root / paths.METHODS_DIR / f"{card_id}.yaml"
    card = yaml.safe_load(path.read_text(encoding="utf-8"))
    fn(card)
    path.write_text(yaml.safe_dump(card, sort_keys=False, allow_unicode=True), encoding="utf-8")


def messages(root: Path) -> list[str]:
    return [str(p) for p in cards.validate(root)]


def test_fixture_is_valid(repo: Path) -> None:
    assert cards.validate(repo) == []


# ---------------------------------------------------------------------------------------------- bad cards
def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def fn(card: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = card
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return fn


def _del(path: str) -> Callable[[dict[str, Any]], None]:
    def fn(card: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = card
        for p in parents:
            node = node[p]
        del node[last]

    return fn


def _claim0(**changes: Any) -> Callable[[dict[str, Any]], None]:
    def fn(card: dict[str, Any]) -> None:
        card["claims"][0].update(changes)

    return fn


# (case id, card edited, edit, every problem expected, in order)
BAD_CARDS: list[tuple[str, str, Callable[[dict[str, Any]], Any], list[str]]] = [
    ("bool_as_word", "alibi", _set("table1.learnable", "no"),
     [f"{ALIBI}: table1.learnable: expected bool, got 'no'"]),
    ("unknown_key", "alibi", _set("colour", "red"),
     [f"{ALIBI}: colour: unknown key"]),
    ("misspelt_key", "alibi", lambda c: c["table1"].update(learnble=c["table1"].pop("learnable")),
     [f"{ALIBI}: table1.learnble: unknown key; did you mean 'learnable'?",
      f"{ALIBI}: table1.learnable: missing key"]),
    ("missing_key", "alibi", _del("needs"),
     [f"{ALIBI}: needs: missing key"]),
    ("year_as_string", "alibi", _set("year", "2021"),
     [f"{ALIBI}: year: expected int, got '2021'"]),
    ("year_bool", "alibi", _set("year_venue", True),
     [f"{ALIBI}: year_venue: expected int or null, got True"]),
    ("arxiv_unquoted", "alibi", _set("arxiv", 2108.12409),
     [f"{ALIBI}: arxiv: expected string or null, got 2108.12409 (quote it)"]),
    ("bad_enum", "alibi", _set("coverage", "surveyed"),
     [f"{ALIBI}: coverage: expected one of survey, baseline, not_in_survey, after_survey, got 'surveyed'; "
      "did you mean 'survey'?"]),
    ("bad_joined_enum", "alibi", _set("table1.manifestation", "bias+gat"),
     [f"{ALIBI}: table1.manifestation: expected one or more of embedding, bias, gate, mask, scale, none joined "
      "by '+', got 'bias+gat' ('gat' is not allowed); did you mean 'gate'?"]),
    ("none_combined", "alibi", _set("table1.integration", "add+none"),
     [f"{ALIBI}: table1.integration: 'add+none': 'none' cannot be combined with other values"]),
    ("id_pattern", "alibi", _set("id", "ALiBi"),
     [f"{ALIBI}: id: 'ALiBi' does not match the pattern [a-z][a-z0-9_]*",
      f"{ALIBI}: id: 'ALiBi' differs from the file name 'alibi.yaml'"]),
    ("duplicate_id", "rope", _set("id", "alibi"),
     ["taxonomy/methods/rope.yaml: id: 'alibi' differs from the file name 'rope.yaml'",
      "taxonomy/methods/rope.yaml: id: duplicate id 'alibi' (also in taxonomy/methods/alibi.yaml)"]),
    ("category_missing", "alibi", _set("category", "extrapolatable_pe/rpe/t5_family"),
     [f"{ALIBI}: category: 'extrapolatable_pe/rpe/t5_family' is not a path of taxonomy/categories.yaml; "
      "did you mean 'extrapolatable_pe/rpe/t5_bias_family', 'extrapolatable_pe/rpe/rope_family', "
      "'extrapolatable_pe/rpe'?"]),
    ("bibkey_unresolved", "alibi", _set("bibkey", "press2021train"),
     [f"{ALIBI}: bibkey: 'press2021train' is not a key of references.bib; did you mean 'press2022train'?"]),
    ("extra_bibkey_unresolved", "alibi", _set("extra_bibkeys", ["vaswani2017attention", "nobody1999"]),
     [f"{ALIBI}: extra_bibkeys[1]: 'nobody1999' is not a key of references.bib"]),
    ("relation_unresolved", "alibi", _set("relations.builds_on", ["t5bias"]),
     [f"{ALIBI}: relations.builds_on[0]: 't5bias' is not a card id; did you mean 't5_bias'?"]),
    ("relation_to_self", "alibi", _set("relations.variant_of", ["alibi"]),
     [f"{ALIBI}: relations.variant_of[0]: a card cannot relate to itself"]),
    ("implementation_unregistered", "t5_bias", _set("implementation", "t5_bias"),
     ["taxonomy/methods/t5_bias.yaml: implementation: 't5_bias' is not a registry id of posenc.available()"]),
    ("implementation_other_id", "rope", _set("implementation", "alibi"),
     ["taxonomy/methods/rope.yaml: implementation: 'alibi' differs from the card id 'rope' (registry id = card id)"]),
    ("implementation_null_without_note", "t5_bias", _set("implementation_note", None),
     ["taxonomy/methods/t5_bias.yaml: implementation_note: required when implementation is null"]),
    ("implementation_null_but_registered", "alibi",
     lambda c: c.update(implementation=None, implementation_note="Pending."),
     [f"{ALIBI}: implementation: null, but registry id 'alibi' exists"]),
    ("notebook_missing", "alibi", _set("notebook", "notebooks/executed/alibi.ipynb"),
     [f"{ALIBI}: notebook: 'notebooks/executed/alibi.ipynb' does not exist"]),
    ("claim_ids_duplicate", "alibi", _set("claims.1.id", "wt103_l512"),
     [f"{ALIBI}: claims[1].id: duplicate claim id 'wt103_l512'"]),
    ("claim_missing_key", "alibi", lambda c: c["claims"][0].pop("dataset"),
     [f"{ALIBI}: claims[0].dataset: missing key"]),
    ("points_length_float", "alibi", lambda c: c["claims"][0]["points"][0].update(length=512.5),
     [f"{ALIBI}: claims[0].points[0].length: expected int, got 512.5"]),
    ("train_length_zero", "alibi", _claim0(train_length=0),
     [f"{ALIBI}: claims[0].train_length: must be >= 1, got 0"]),
    ("claim_source", "alibi", _claim0(source="blog"),
     [f"{ALIBI}: claims[0].source: expected one of paper, survey_table3, got 'blog'"]),
    ("expect_op", "alibi", lambda c: c["claims"][0]["expect"].update(op="=<"),
     [f"{ALIBI}: claims[0].expect.op: expected one of <, <=, >, >=, got '=<'"]),
    ("expect_metric", "alibi", lambda c: c["claims"][0]["expect"].update(metric="ppl"),
     [f"{ALIBI}: claims[0].expect.metric: expected one of ppl_ratio, ppl_vs, accuracy, accuracy_vs, got 'ppl'"]),
    ("expect_old_baseline_key", "alibi", lambda c: c["claims"][1]["expect"].update(baseline="rope"),
     [f"{ALIBI}: claims[1].expect.baseline: unknown key"]),
    ("expect_comparator_missing", "alibi", lambda c: c["claims"][1]["expect"].pop("comparator"),
     [f"{ALIBI}: claims[1].expect.comparator: required when metric is 'ppl_vs'"]),
    ("expect_comparator_unresolved", "alibi", lambda c: c["claims"][1]["expect"].update(comparator="sinusoidal"),
     [f"{ALIBI}: claims[1].expect.comparator: 'sinusoidal' is not a card id or 'control'"]),
    ("expect_comparator_hint", "alibi", lambda c: c["claims"][1]["expect"].update(comparator="t5bias"),
     [f"{ALIBI}: claims[1].expect.comparator: 't5bias' is not a card id or 'control'; did you mean 't5_bias'?"]),
    ("expect_comparator_not_allowed", "alibi", lambda c: c["claims"][0]["expect"].update(comparator="rope"),
     [f"{ALIBI}: claims[0].expect.comparator: only allowed when metric is ppl_vs or accuracy_vs, not 'ppl_ratio'"]),
    ("expect_control", "alibi", lambda c: c["claims"][1]["expect"].update(comparator="control"), []),
    ("expect_not_mapping", "alibi", _claim0(expect="reproduced"),
     [f"{ALIBI}: claims[0].expect: expected mapping or null, got 'reproduced'"]),
    ("expect_value_without_source", "alibi", lambda c: c["claims"][0]["expect"].update(value=0.95),
     [f"{ALIBI}: claims[0].expect.value_from: required with an explicit value: where in the paper the number "
      "comes from"]),
    ("expect_not_tested_alone", "alibi", lambda c: c["claims"][0]["expect"].update(not_tested="7B only"),
     [f"{ALIBI}: claims[0].expect.op: not allowed with 'not_tested' (an untested claim states only why)"]),
    ("expect_not_tested_skips_cross_checks", "alibi",
     lambda c: c["claims"][1].update(expect={"not_tested": "a 7B benchmark"}, train_length=None), []),
    ("expect_accuracy_needs_task_and_value", "alibi",
     lambda c: c["claims"][1].update(expect={"metric": "accuracy", "op": ">=", "at": 2}),
     [f"{ALIBI}: claims[1].expect.task: required when metric is 'accuracy'",
      f"{ALIBI}: claims[1].expect.value: required for accuracy claims (with value_from)"]),
    ("summary_one_sentence", "alibi", _set("summary", "A linear bias, e.g. -m(i - j), on the logits."),
     [f"{ALIBI}: summary: expected 2-5 sentences, got 1"]),
    ("summary_six_sentences", "alibi", _set("summary", "One. Two. Three. Four. Five. Six."),
     [f"{ALIBI}: summary: expected 2-5 sentences, got 6"]),
    ("formula_dollars", "alibi", _set("formula", "$q_i k_j^\\top$"),
     [f"{ALIBI}: formula: must not contain '$' delimiters (the page adds them)"]),
    ("code_not_https", "alibi", _set("code", "github.com/ofirpress"),
     [f"{ALIBI}: code: 'github.com/ofirpress' does not match the pattern https://\\S+"]),
    ("aliases_not_list", "alibi", _set("aliases", "Attention with Linear Biases"),
     [f"{ALIBI}: aliases: expected list, got 'Attention with Linear Biases'"]),
    ("hyperparameter_mapping_default", "alibi", lambda c: c["hyperparameters"][0].update(default={"a": 1}),
     [f"{ALIBI}: hyperparameters[0].default: expected scalar or list or null, got a mapping"]),
    ("survey_section_after_survey", "alibi", lambda c: c.update(coverage="after_survey"),
     [f"{ALIBI}: survey_section: must be null when coverage is 'after_survey'",
      f"{ALIBI}: table1.source: 'survey' but coverage is 'after_survey' (use 'ours')"]),
    ("survey_section_missing", "alibi", _set("survey_section", None),
     [f"{ALIBI}: survey_section: required when coverage is 'survey'"]),
    ("year_venue_before_year", "alibi", _set("year_venue", 2019),
     [f"{ALIBI}: year_venue: 2019 is before the first public version (2021)"]),
    ("empty_name", "alibi", _set("name", "  "),
     [f"{ALIBI}: name: must not be empty"]),
    ("expect_value_nan", "alibi",
     lambda c: c["claims"][0]["expect"].update(value=math.nan, value_from="Table 5"),
     [f"{ALIBI}: claims[0].expect.value: expected a finite number, got nan"]),
    ("expect_at_inf", "alibi", lambda c: c["claims"][1]["expect"].update(at=math.inf),
     [f"{ALIBI}: claims[1].expect.at: expected a finite number, got inf"]),
    ("expect_value_text", "alibi", lambda c: c["claims"][0]["expect"].update(value="1.05", value_from="Table 5"),
     [f"{ALIBI}: claims[0].expect.value: expected number, got '1.05'"]),
    ("expect_variant", "alibi", lambda c: c["claims"][0]["expect"].update(variant="fine_tuned"),
     [f"{ALIBI}: claims[0].expect.variant: expected one of zero_shot, finetuned, scratch or null, "
      "got 'fine_tuned'; did you mean 'finetuned'?"]),
    ("expect_comparator_self", "alibi", lambda c: c["claims"][1]["expect"].update(comparator="alibi"),
     [f"{ALIBI}: claims[1].expect.comparator: a card cannot be its own comparator"]),
    # thresholds and lengths that cannot be derived from the claim's own numbers are named
    ("ratio_needs_two_points", "alibi", lambda c: c["claims"][0]["points"].pop(),
     [f"{ALIBI}: claims[0].expect.value: cannot be derived: ppl_ratio needs two points (the train length and the "
      "test length), or an explicit value with value_from"]),
    ("ratio_with_explicit_value", "alibi",
     lambda c: (c["claims"][0]["points"].pop(), c["claims"][0]["expect"].update(value=0.93, value_from="Table 5")),
     []),
    ("vs_needs_comparator_points", "alibi",
     lambda c: (c["claims"][1]["expect"].pop("value"), c["claims"][1]["expect"].pop("value_from"),
                c["claims"][1].update(points=[{"length": 4096, "value": 18.4}])),
     [f"{ALIBI}: claims[1].expect.value: cannot be derived: ppl_vs needs comparator_points at the claim's last "
      "point's length, or an explicit value with value_from"]),
    ("vs_comparator_point_at_another_length", "alibi",
     lambda c: (c["claims"][1]["expect"].pop("value"), c["claims"][1]["expect"].pop("value_from"),
                c["claims"][1]["expect"].update(comparator_points=[{"length": 2048, "value": 30.0}]),
                c["claims"][1].update(points=[{"length": 4096, "value": 18.4}])),
     [f"{ALIBI}: claims[1].expect.value: cannot be derived: ppl_vs needs comparator_points at the claim's last "
      "point's length, or an explicit value with value_from"]),
    ("vs_derived_from_comparator_points", "alibi",
     lambda c: (c["claims"][1]["expect"].pop("value"), c["claims"][1]["expect"].pop("value_from"),
                c["claims"][1]["expect"].update(comparator_points=[{"length": 4096, "value": 30.0}]),
                c["claims"][1].update(points=[{"length": 4096, "value": 18.4}])),
     []),
    ("length_underivable", "alibi", lambda c: c["claims"][1]["expect"].pop("at"),
     [f"{ALIBI}: claims[1].expect.at: missing: give 'at', or points and a train_length to derive it from"]),
    ("length_from_two_points", "alibi", _claim0(train_length=None), []),
    ("point_value_nan", "alibi", lambda c: c["claims"][0]["points"][0].update(value=math.nan),
     [f"{ALIBI}: claims[0].points[0].value: expected a finite number, got nan"]),
]


@pytest.mark.parametrize(("card_id", "fn", "expected"), [c[1:] for c in BAD_CARDS], ids=[c[0] for c in BAD_CARDS])
def test_bad_card(repo: Path, card_id: str, fn: Callable[[dict[str, Any]], Any], expected: list[str]) -> None:
    edit(repo, card_id, fn)
    assert messages(repo) == expected


def test_every_problem_reported_at_once(repo: Path) -> None:
    def many(card: dict[str, Any]) -> None:
        card["table1"]["learnable"] = "no"
        card["year"] = "2021"
        card["bibkey"] = "nobody1999"
        del card["notes"]

    edit(repo, "alibi", many)
    assert messages(repo) == [
        f"{ALIBI}: year: expected int, got '2021'",
        f"{ALIBI}: table1.learnable: expected bool, got 'no'",
        f"{ALIBI}: notes: missing key",
        f"{ALIBI}: bibkey: 'nobody1999' is not a key of references.bib",
    ]


# ---------------------------------------------------------------------------------------------- bad files
def test_yaml_booleans_are_only_true_and_false(repo: Path) -> None:
    p = repo / ALIBI
    p.write_text(p.read_text(encoding="utf-8").replace("learnable: false", "learnable: no"), encoding="utf-8")
    assert messages(repo) == [f"{ALIBI}: table1.learnable: expected bool, got 'no'"]


def test_yaml_nan_in_expect_is_named(repo: Path) -> None:
    """YAML's own spelling of NaN (`.nan`) in a threshold: reported, never judged."""
    p = repo / ALIBI
    p.write_text(p.read_text(encoding="utf-8").replace("value: 1.0,", "value: .nan,"), encoding="utf-8")
    assert messages(repo) == [f"{ALIBI}: claims[1].expect.value: expected a finite number, got nan"]


def test_oversized_card_is_one_problem(repo: Path) -> None:
    with (repo / paths.METHODS_DIR / "huge.yaml").open("wb") as f:
        f.truncate(paths.MAX_YAML_BYTES + 1)
    assert messages(repo) == [f"taxonomy/methods/huge.yaml: file is {paths.MAX_YAML_BYTES + 1:,} bytes, over the "
                              f"{paths.MAX_YAML_BYTES:,}-byte limit for YAML files"]


def test_yaml_syntax_error_has_line(repo: Path) -> None:
    shutil.copy(FIXTURES / "bad" / "syntax_error.yaml", repo / paths.METHODS_DIR / "broken.yaml")
    assert messages(repo) == [
        "taxonomy/methods/broken.yaml:5: YAML error: did not find expected ',' or ']' "
        "(while parsing a flow sequence on line 4)"
    ]


def test_duplicate_yaml_key(repo: Path) -> None:
    shutil.copy(FIXTURES / "bad" / "duplicate_key.yaml", repo / paths.METHODS_DIR / "duplicate_key.yaml")
    assert messages(repo) == [
        "taxonomy/methods/duplicate_key.yaml:3: YAML error: found duplicate key 'name' "
        "(while constructing a mapping on line 1)"
    ]


def test_card_not_a_mapping_and_yml_extension(repo: Path) -> None:
    shutil.copy(FIXTURES / "bad" / "not_a_mapping.yaml", repo / paths.METHODS_DIR / "not_a_mapping.yaml")
    shutil.copy(repo / ALIBI, repo / paths.METHODS_DIR / "alibi2.yml")
    (repo / paths.METHODS_DIR / "empty.yaml").write_text("# nothing yet\n")
    (repo / paths.METHODS_DIR / ".alibi.yaml.swp").write_text("editor state")
    assert messages(repo) == [
        "taxonomy/methods/alibi2.yml: not a card: card files are named <id>.yaml",
        "taxonomy/methods/empty.yaml: empty file",
        "taxonomy/methods/not_a_mapping.yaml: expected a mapping at the top level, got a list",
    ]


def test_bad_categories(repo: Path) -> None:
    shutil.copy(FIXTURES / "bad" / "categories_bad.yaml", repo / paths.CATEGORIES_FILE)
    got = messages(repo)
    cat = "taxonomy/categories.yaml"
    assert got[:5] == [
        f"{cat}: extrapolatable_pe/rpe.in_survey: expected bool, got 'yes please'",
        f"{cat}: extrapolatable_pe/rpe.colour: unknown key",
        f"{cat}: extrapolatable_pe/rpe.id: duplicate id 'rpe' among siblings (entries 1 and 2)",
        f"{cat}: [1].id: 'Beyond' does not match the pattern [a-z][a-z0-9_]*",
        f"{cat}: [1].in_survey: missing key",
    ]
    # the cards' deeper categories no longer exist in this tree
    assert f"{ALIBI}: category: 'extrapolatable_pe/rpe/t5_bias_family' is not a path of {cat}; " \
           "did you mean 'extrapolatable_pe/rpe'?" in got


def test_bad_bibliography(repo: Path) -> None:
    with (repo / "references.bib").open("a", encoding="utf-8") as f:
        f.write("\n" + (FIXTURES / "bad" / "references_bad.bib").read_text(encoding="utf-8"))
    lines = (repo / "references.bib").read_text(encoding="utf-8").splitlines()
    dup = lines.index("@misc{press2022train,") + 1
    notitle = lines.index("@misc{notitle,") + 1
    broken = next(i for i, x in enumerate(lines) if x.startswith("@misc{broken")) + 1
    assert messages(repo) == [
        f"references.bib:{dup}: duplicate key 'press2022train'",
        f"references.bib:{broken}: BibTeX syntax error: Expected comma after entry key, but found =",
        f"references.bib:{notitle}: notitle: missing field 'title'",
    ]


def test_missing_bibliography(repo: Path) -> None:
    (repo / "references.bib").unlink()
    assert messages(repo) == ["references.bib: file not found"]


def test_registered_id_without_card(repo: Path) -> None:
    """Both registration forms are checked: a class (fake.py) and a scaling function (rope.py)."""
    (repo / "taxonomy/methods/rope.yaml").unlink()
    edit(repo, "alibi", lambda c: c["claims"].pop(1))  # its comparator was rope
    assert messages(repo) == [
        "src/posenc/pe/rope.py:8: default_inv_freq: registry id 'rope' has no card taxonomy/methods/rope.yaml"
    ]
    (repo / ALIBI).unlink()
    edit(repo, "t5_bias", lambda c: c["relations"].update(builds_on=[]))
    assert "src/posenc/pe/fake.py:8: ALiBi.id: registry id 'alibi' has no card taxonomy/methods/alibi.yaml" \
        in messages(repo)


def test_explicit_registry(repo: Path) -> None:
    got = [str(p) for p in cards.validate(repo, registry=["alibi"])]
    assert got == ["taxonomy/methods/rope.yaml: implementation: 'rope' is not a registry id of posenc.available()"]


# ---------------------------------------------------------------------------------------------- registry
def test_static_registry_reads_decorated_classes(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text(
        "from posenc.pe.base import PositionalEncoding, register\n"
        "_REGISTRY: dict = {'nope': PositionalEncoding}\n"
        "@register\nclass A(PositionalEncoding):\n    id = 'a'\n"
        "class B(A):\n    pass\n"
        "@register\nclass C(B):\n    id: str = 'c'\n"
        "class D(PositionalEncoding):\n    id = 'not_registered'\n"
        "class E(PositionalEncoding):\n    id = 'e'\n"
        "register(E)\n"
    )
    (tmp_path / "b.py").write_text("import posenc.pe.base as base\n@base.register\nclass F(base.PositionalEncoding):\n"
                                   "    pass\n")
    (tmp_path / "c.py").write_text("def broken(:\n")
    entries, problems = cards.static_registry(tmp_path, tmp_path)
    assert sorted(entries) == ["a", "c", "e", "nope"]
    assert entries["c"].cls == "C" and entries["c"].line == 9
    assert [str(p) for p in problems] == [
        "c.py:1: Python syntax error: invalid syntax",
        "b.py:3: F.id: registered class has no literal string id",
    ]


def test_static_registry_reads_rope_scaling_functions(tmp_path: Path) -> None:
    """RoPE scalings registered as plain functions: ``@rope_scaling("<id>", ...)`` at module level."""
    (tmp_path / "rope.py").write_text(
        "from posenc.pe import rope\n"
        "from posenc.pe.rope import rope_scaling\n"
        "@rope_scaling('pi', kind='interpolation')\ndef linear(*, scale): ...\n"
        "@rope.rope_scaling('yarn')\ndef yarn_inv_freq(*, scale): ...\n"
        "@rope_scaling(name)\ndef computed(*, scale): ...\n"
        "@rope_scaling\ndef bare(*, scale): ...\n"
        "@functools.cache\ndef not_registered(): ...\n"
        "def helper(): ...\n"
        "class Holder:\n    @rope_scaling('nested')\n    def method(self): ...\n"
        "@register\nclass XPos(RoPE):\n    id = 'xpos'\n"
        "@rope_scaling('xpos')\ndef xpos_inv_freq(*, scale): ...\n"
        "@rope_scaling('pi')\ndef linear_again(*, scale): ...\n"
    )
    entries, problems = cards.static_registry(tmp_path, tmp_path)
    assert sorted(entries) == ["pi", "xpos", "yarn"]
    assert (entries["pi"].cls, entries["pi"].kind, entries["pi"].line) == ("linear", "function", 4)
    assert entries["yarn"].cls == "yarn_inv_freq"
    assert (entries["xpos"].cls, entries["xpos"].kind) == ("XPos", "class")  # the class whose rotation differs
    assert [str(p) for p in problems] == [
        "rope.py:8: computed: @rope_scaling needs the registry id as a literal string first argument",
        "rope.py:10: bare: @rope_scaling needs the registry id as a literal string first argument",
        "rope.py:23: linear_again: registry id 'pi' is also used by linear (rope.py)",
    ]


def test_static_registry_matches_runtime() -> None:
    """The ast-based registry used by `posenc validate` equals the runtime one (this imports torch)."""
    import posenc

    entries, problems = cards.static_registry(REPO / paths.PE_DIR, REPO)
    assert problems == []
    assert sorted(entries) == sorted(posenc.available())


def test_real_repository_validates() -> None:
    """The repository's own cards, categories, bibliography and registry are consistent."""
    problems = cards.validate(REPO)
    assert problems == [], "\n".join(map(str, problems))


# ---------------------------------------------------------------------------------------------- sentences
@pytest.mark.parametrize(
    ("text", "n"),
    [
        ("One sentence only.", 1),
        ("First. Second!", 2),
        ("It uses a bias, e.g. ALiBi, i.e. a fixed one. Press et al. (2022) show it works.", 2),
        ("Scaled by s = 2.5 here. Then it extrapolates to L. Done", 3),
        ('He said "stop." Then left.', 2),
    ],
)
def test_count_sentences(text: str, n: int) -> None:
    assert cards.count_sentences(text) == n


