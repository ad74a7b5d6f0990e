"""posenc.cards.schema: the schema engine, the one ``expect`` validator and typed cards."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest

from posenc.cards import schema as S
from posenc.cards.schema import Card, Expect, TaxonomyError, parse_expect

WHERE = "taxonomy/methods/x.yaml: claims[0]"
GOOD = {"metric": "ppl_ratio", "op": "<="}
VS = {"metric": "ppl_vs", "op": "<=", "comparator": "rope"}
ACC = {"metric": "accuracy_vs", "op": ">=", "comparator": "control", "task": "needle", "at": 2, "value": 0.4,
       "value_from": "Table 1"}


# ---------------------------------------------------------------------------------------------- the engine
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_numbers_must_be_finite(bad: float) -> None:
    assert S.check_value(S.Spec("number"), bad, "x") == [("x", f"expected a finite number, got {bad!r}")]
    assert S.check_value(S.Spec("number", minimum=0), 2.5, "x") == []


def test_map_rules_run_after_the_fields() -> None:
    def rule(m: Any, path: str) -> list[tuple[str, str]]:
        return [(f"{path}.b", "b must exceed a")] if m["b"] <= m["a"] else []

    spec = S._map(rules=(rule,), a=S.Spec("int"), b=S.Spec("int"))
    assert S.check_value(spec, {"a": 2, "b": 1}, "m") == [("m.b", "b must exceed a")]
    assert S.check_value(spec, {"a": 1, "b": 2}, "m") == []


# ---------------------------------------------------------------------------------------------- expect
def test_parse_expect_types_the_mapping() -> None:
    assert parse_expect(None, WHERE) is None
    e = parse_expect({**GOOD, "variant": "zero_shot"}, WHERE)
    assert e == Expect(metric="ppl_ratio", op="<=", variant="zero_shot")
    vs = parse_expect({**VS, "comparator_points": [{"length": 1024, "value": 2.5}]}, WHERE)
    assert vs is not None and vs.comparator == "rope" and vs.variant is None
    assert vs.comparator_points == (S.Point(1024, 2.5),)
    acc = parse_expect(ACC, WHERE)
    assert acc == Expect("accuracy_vs", ">=", comparator="control", task="needle", at=2, value=0.4,
                         value_from="Table 1")
    assert parse_expect({"not_tested": "no counterpart"}, WHERE) == Expect(not_tested="no counterpart")


def test_expect_dataclass_and_schema_have_the_same_fields() -> None:
    """Adding an expect field means one schema entry and one dataclass field; they must not drift apart."""
    assert [f.name for f in dataclasses.fields(Expect)] == list(S.EXPECT_SCHEMA.fields or {})


def test_expect_tasks_are_the_task_suite() -> None:
    """The schema names the tasks without importing posenc.tasks (numpy); the two lists must stay equal."""
    from posenc.tasks import TASKS

    assert set(S.EXPECT_TASKS) == set(TASKS)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"value": math.nan, "value_from": "T1"}, "expect.value: expected a finite number, got nan"),
        ({"value": math.inf, "value_from": "T1"}, "expect.value: expected a finite number, got inf"),
        ({"at": -math.inf}, "expect.at: expected a finite number, got -inf"),
        ({"at": math.nan}, "expect.at: expected a finite number, got nan"),
        ({"value": "1.05", "value_from": "T1"}, "expect.value: expected number, got '1.05'"),
        ({"value": True, "value_from": "T1"}, "expect.value: expected number, got True"),
        ({"at": "4x"}, "expect.at: expected number, got '4x'"),
        ({"at": -1}, "expect.at: must be >= 1, got -1"),
        ({"at": 0.5}, "expect.at: must be >= 1, got 0.5"),
        ({"metric": "bleu"}, "expect.metric: expected one of ppl_ratio, ppl_vs, accuracy, accuracy_vs, got 'bleu'"),
        ({"metric": "ppl_vs_baseline"},
         "expect.metric: expected one of ppl_ratio, ppl_vs, accuracy, accuracy_vs, got 'ppl_vs_baseline'"),
        ({"op": "=<"}, "expect.op: expected one of <, <=, >, >=, got '=<'"),
        ({"variant": "fine_tuned"},
         "expect.variant: expected one of zero_shot, finetuned, scratch or null, got 'fine_tuned'; "
         "did you mean 'finetuned'?"),
        ({"variant": "primary"}, "expect.variant: expected one of zero_shot, finetuned, scratch or null, "
                                 "got 'primary'"),
        ({"baseline": "rope"}, "expect.baseline: unknown key"),
        ({"colour": "red"}, "expect.colour: unknown key"),
        ({"comparator": "Rope!"}, "expect.comparator: 'Rope!' does not match the pattern [a-z][a-z0-9_]*"),
    ],
)
def test_parse_expect_names_file_and_field(change: dict[str, Any], message: str) -> None:
    raw = {**GOOD, **change}
    if "comparator" in change:
        raw["metric"] = "ppl_vs"
    with pytest.raises(TaxonomyError) as err:
        parse_expect(raw, WHERE)
    assert str(err.value) == f"{WHERE}: {message}"


# Each between-field rule of _expect_rules, and the not_tested reason: (expect, every message in order).
RULES: list[tuple[str, dict[str, Any], list[str]]] = [
    ("metric_and_op_required", {"variant": "scratch"},
     ["expect.metric: missing key (or give 'not_tested' with the reason)",
      "expect.op: missing key (or give 'not_tested' with the reason)"]),
    ("ppl_vs_needs_comparator", {"metric": "ppl_vs", "op": "<="},
     ["expect.comparator: required when metric is 'ppl_vs'"]),
    ("accuracy_vs_needs_comparator", {**{k: v for k, v in ACC.items() if k != "comparator"}},
     ["expect.comparator: required when metric is 'accuracy_vs'"]),
    ("comparator_only_for_vs", {**GOOD, "comparator": "rope"},
     ["expect.comparator: only allowed when metric is ppl_vs or accuracy_vs, not 'ppl_ratio'"]),
    ("accuracy_needs_task", {"metric": "accuracy", "op": ">=", "value": 0.9, "value_from": "Table 1"},
     ["expect.task: required when metric is 'accuracy'"]),
    ("task_only_for_accuracy", {**GOOD, "task": "needle"},
     ["expect.task: only allowed when metric is accuracy or accuracy_vs, not 'ppl_ratio'"]),
    ("value_needs_value_from", {**GOOD, "value": 1.05},
     ["expect.value_from: required with an explicit value: where in the paper the number comes from"]),
    ("value_from_needs_value", {**GOOD, "value_from": "Table 2"},
     ["expect.value: required with value_from"]),
    ("accuracy_needs_value", {"metric": "accuracy", "op": ">=", "task": "latest"},
     ["expect.value: required for accuracy claims (with value_from)"]),
    ("accuracy_vs_needs_value", {k: v for k, v in ACC.items() if k not in ("value", "value_from")},
     ["expect.value: required for accuracy claims (with value_from)"]),
    ("comparator_points_only_for_ppl_vs", {**GOOD, "comparator_points": [{"length": 1024, "value": 2.0}]},
     ["expect.comparator_points: only allowed when metric is 'ppl_vs'"]),
    ("not_tested_excludes_other_keys", {"not_tested": "7B MMLU", "op": "<=", "at": 2},
     ["expect.op: not allowed with 'not_tested' (an untested claim states only why)",
      "expect.at: not allowed with 'not_tested' (an untested claim states only why)"]),
    ("not_tested_must_say_why", {"not_tested": "  "}, ["expect.not_tested: must not be empty"]),
]


@pytest.mark.parametrize(("raw", "messages"), [r[1:] for r in RULES], ids=[r[0] for r in RULES])
def test_expect_rules(raw: dict[str, Any], messages: list[str]) -> None:
    """Every rule is reported by parse_expect (experiments) and by check_value over the schema (validate)."""
    with pytest.raises(TaxonomyError) as err:
        parse_expect(raw, WHERE)
    assert str(err.value).splitlines() == [f"{WHERE}: {m}" for m in messages]
    assert [f"{f}: {m}" for f, m in S.check_value(S.EXPECT_SCHEMA, raw, "expect")] == messages


@pytest.mark.parametrize(
    "raw",
    [GOOD, VS, ACC, {**VS, "comparator": "control", "variant": "finetuned", "at": 4},
     {"metric": "accuracy", "op": ">=", "task": "latest", "value": 0.9, "value_from": "Table 1"},
     {**GOOD, "value": 0.93, "value_from": "Table 5: 18.40/19.73"},
     {"not_tested": "no counterpart at 0.4M parameters"},
     {"not_tested": "BLEU, not perplexity", "metric": "ppl_ratio"}],
    ids=["derived_ratio", "derived_vs", "accuracy_vs", "control", "accuracy", "explicit_value", "not_tested",
         "not_tested_with_metric"],
)
def test_valid_expects(raw: dict[str, Any]) -> None:
    assert S.check_value(S.EXPECT_SCHEMA, raw, "expect") == []
    assert parse_expect(raw, WHERE) is not None


def test_parse_expect_reports_every_problem_and_non_mappings() -> None:
    with pytest.raises(TaxonomyError) as err:
        parse_expect({"metric": "ppl_ratio", "op": "<", "value": math.nan}, WHERE)
    assert str(err.value).splitlines() == [
        f"{WHERE}: expect.value: expected a finite number, got nan",
        f"{WHERE}: expect.value_from: required with an explicit value: where in the paper the number comes from"]
    with pytest.raises(TaxonomyError, match=r"claims\[0\]: expect: expected mapping or null, got 'reproduced'"):
        parse_expect("reproduced", WHERE)


@pytest.mark.parametrize("variant", [*S.EXPECT_VARIANTS, None])
def test_every_variant_is_accepted_by_parse_expect_and_the_card_schema(variant: str | None) -> None:
    raw = {**GOOD, "variant": variant}
    parsed = parse_expect(raw, WHERE)
    assert parsed is not None and parsed.variant == variant
    assert S.check_value(S.EXPECT_SCHEMA, raw, "expect") == []


# ---------------------------------------------------------------------------------------------- typed cards
def _claim(**expect: Any) -> dict[str, Any]:
    return {"id": "c", "source": "paper", "statement": "s", "dataset": "d", "metric": "perplexity",
            "train_length": 512, "points": [{"length": 512, "value": 19.7}], "expect": {**GOOD, **expect}}


def test_card_is_a_read_only_mapping_over_its_data() -> None:
    data = {"id": "alibi", "name": "ALiBi", "claims": [_claim()]}
    card = Card(data, Path("/r/taxonomy/methods/alibi.yaml"), "taxonomy/methods/alibi.yaml")
    assert card["id"] == "alibi" and card.get("missing", 3) == 3 and "name" in card
    assert dict(card) == data and card == data and len(card) == 3
    with pytest.raises(TypeError):
        card["name"] = "x"  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        card.file = "other.yaml"  # type: ignore[misc]


def test_card_typed_accessors() -> None:
    card = Card({"id": "alibi", "name": "ALiBi", "implementation": "alibi", "claims": [_claim(variant="scratch")]},
                Path("/r/taxonomy/methods/alibi.yaml"), "taxonomy/methods/alibi.yaml")
    assert (card.id, card.name, card.implementation, card.path.name) == ("alibi", "ALiBi", "alibi", "alibi.yaml")
    (claim,) = card.claims
    assert claim.points == (S.Point(512, 19.7),) and claim.train_length == 512
    assert claim.expect == Expect("ppl_ratio", "<=", variant="scratch")


def test_card_id_is_the_file_stem() -> None:
    card = Card({"id": "other"}, Path("taxonomy/methods/alibi.yaml"))
    assert card.id == "alibi" and card["id"] == "other" and card.file == "taxonomy/methods/alibi.yaml"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"implementation": 3}, "taxonomy/methods/x.yaml: implementation: expected string or null, got 3 (quote it)"),
        ({"claims": [_claim(value=math.nan, value_from="Table 2")]},
         "taxonomy/methods/x.yaml: claims[0].expect.value: expected a finite number, got nan"),
        ({"claims": [_claim(variant="both")]},
         "taxonomy/methods/x.yaml: claims[0].expect.variant: expected one of zero_shot, finetuned, scratch or "
         "null, got 'both'"),
    ],
)
def test_typed_accessors_name_file_and_field(data: dict[str, Any], message: str) -> None:
    card = Card(data, Path("taxonomy/methods/x.yaml"))
    accessor = "implementation" if "implementation" in data else "claims"
    with pytest.raises(TaxonomyError) as err:
        getattr(card, accessor)
    assert str(err.value) == message
