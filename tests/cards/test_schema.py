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
GOOD = {"metric": "ppl_ratio", "at": 8, "op": "<=", "value": 1.05}


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
    assert e == Expect(metric="ppl_ratio", at=8, op="<=", value=1.05, variant="zero_shot")
    vs = parse_expect({"metric": "ppl_vs_baseline", "at": 4, "op": "<", "value": 1.0, "baseline": "rope"}, WHERE)
    assert vs is not None and vs.baseline == "rope" and vs.variant is None


def test_expect_dataclass_and_schema_have_the_same_fields() -> None:
    """Adding an expect field means one schema entry and one dataclass field; they must not drift apart."""
    assert [f.name for f in dataclasses.fields(Expect)] == list(S.EXPECT_SCHEMA.fields or {})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"value": math.nan}, "expect.value: expected a finite number, got nan"),
        ({"value": math.inf}, "expect.value: expected a finite number, got inf"),
        ({"at": -math.inf}, "expect.at: expected a finite number, got -inf"),
        ({"at": math.nan}, "expect.at: expected a finite number, got nan"),
        ({"value": "1.05"}, "expect.value: expected number, got '1.05'"),
        ({"value": True}, "expect.value: expected number, got True"),
        ({"at": "4x"}, "expect.at: expected number, got '4x'"),
        ({"at": -1}, "expect.at: must be >= 0, got -1"),
        ({"metric": "bleu"}, "expect.metric: expected one of ppl_ratio, ppl_vs_baseline, accuracy, got 'bleu'"),
        ({"op": "=<"}, "expect.op: expected one of <, <=, >, >=, got '=<'"),
        ({"variant": "fine_tuned"},
         "expect.variant: expected one of zero_shot, finetuned, scratch or null, got 'fine_tuned'; "
         "did you mean 'finetuned'?"),
        ({"variant": "primary"}, "expect.variant: expected one of zero_shot, finetuned, scratch or null, "
                                 "got 'primary'"),
        ({"baseline": "rope"}, "expect.baseline: only allowed when metric is 'ppl_vs_baseline', not 'ppl_ratio'"),
        ({"metric": "ppl_vs_baseline"}, "expect.baseline: required when metric is 'ppl_vs_baseline'"),
        ({"colour": "red"}, "expect.colour: unknown key"),
    ],
)
def test_parse_expect_names_file_and_field(change: dict[str, Any], message: str) -> None:
    with pytest.raises(TaxonomyError) as err:
        parse_expect({**GOOD, **change}, WHERE)
    assert str(err.value) == f"{WHERE}: {message}"


def test_parse_expect_reports_every_problem_and_non_mappings() -> None:
    with pytest.raises(TaxonomyError) as err:
        parse_expect({"metric": "ppl_ratio", "op": "<", "value": math.nan}, WHERE)
    assert str(err.value).splitlines() == [f"{WHERE}: expect.at: missing key",
                                           f"{WHERE}: expect.value: expected a finite number, got nan"]
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
    assert claim.expect == Expect("ppl_ratio", 8, "<=", 1.05, variant="scratch")


def test_card_id_is_the_file_stem() -> None:
    card = Card({"id": "other"}, Path("taxonomy/methods/alibi.yaml"))
    assert card.id == "alibi" and card["id"] == "other" and card.file == "taxonomy/methods/alibi.yaml"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"implementation": 3}, "taxonomy/methods/x.yaml: implementation: expected string or null, got 3 (quote it)"),
        ({"claims": [_claim(value=math.nan)]},
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
