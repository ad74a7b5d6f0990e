"""The claims ledger: thresholds from the paper's numbers, distinct tests, interval verdicts, controls."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from posenc.cards import Card, parse_expect
from posenc.cards.schema import Claim, Point
from posenc.experiment import claims as C
from posenc.experiment.presets import get_preset
from posenc.experiment.results import Result
from posenc.experiment.stats import Interval

from .conftest import make_result

P = get_preset("cpu")


def claim(expect: dict | None, points: Sequence[tuple[int, float]] = ((512, 20.07), (1012, 21.37)),
          cid: str = "c", train_length: int | None = 512) -> Claim:
    return Claim(cid, "survey_table3", "s", "d", "perplexity", train_length,
                 tuple(Point(a, b) for a, b in points), parse_expect(expect, "t"))


def test_threshold_and_length_come_from_the_papers_points() -> None:
    t = C.resolve(claim({"metric": "ppl_ratio", "op": ">="}), P)
    assert isinstance(t, C.Test)
    assert t.at == 2 and t.threshold == pytest.approx(21.37 / 20.07) and "21.37" in t.threshold_from
    assert t.paper_at == pytest.approx(1012 / 512)


def test_far_lengths_are_not_tested_and_nearest_factor_is_log_scale() -> None:
    assert C.nearest_factor(6.0, P.eval_factors) == 8
    assert C.nearest_factor(3.0, P.eval_factors) in (2, 4)
    far = C.resolve(claim({"metric": "ppl_ratio", "op": "<="}, points=((4096, 5.0), (4096 * 128, 6.0)),
                          train_length=4096), P)
    assert isinstance(far, str) and "128" in far


def test_explicit_values_carry_their_source_and_not_tested_keeps_its_reason() -> None:
    t = C.resolve(claim({"metric": "accuracy", "op": ">=", "task": "needle", "at": 4, "value": 0.9,
                         "value_from": "Table 4"}), P)
    assert isinstance(t, C.Test) and t.threshold == 0.9 and t.threshold_from == "Table 4" and t.at == 4
    assert C.resolve(claim({"not_tested": "7B only"}), P) == "7B only"
    assert C.resolve(claim(None), P).startswith("the card gives no")


@pytest.mark.parametrize(("op", "iv", "verdict"), [
    (">=", Interval(1.2, 1.1, 1.3, 3), "reproduced"),
    (">=", Interval(1.0, 0.9, 1.05, 3), "not reproduced"),
    (">=", Interval(1.06, 1.0, 1.12, 3), "inconclusive"),
    ("<", Interval(0.5, 0.4, 0.6, 3), "reproduced"),
])
def test_decide_by_where_the_interval_lies(op: str, iv: Interval, verdict: str) -> None:
    assert C.decide(op, 1.065, iv) == verdict


def _card(tmp_path: Path, claims: list[dict]) -> Card:
    return Card({"id": "m", "claims": claims}, tmp_path / "m.yaml")


def _raw(cid: str, expect: dict, points: list[dict] | None = None) -> dict:
    return {"id": cid, "source": "paper", "statement": "s", "dataset": "d", "metric": "perplexity",
            "train_length": 512, "points": points or [{"length": 512, "value": 20.0}, {"length": 1024, "value": 21.0}],
            "expect": expect}


def test_claims_that_reduce_to_one_test_are_counted_once(tmp_path: Path) -> None:
    card = _card(tmp_path, [_raw("a", {"metric": "ppl_ratio", "op": ">="}),
                            _raw("b", {"metric": "ppl_ratio", "op": ">="}),
                            _raw("c", {"metric": "ppl_ratio", "op": "<=", "at": 8, "value": 1.1,
                                       "value_from": "Fig. 1"})])
    results = {"m": [make_result("m", s, {"scratch": {1: 10.0, 2: 11.0 + 0.01 * s, 8: 12.0}}) for s in range(3)]}
    led = C.ledger(card, P, lambda m: results.get(m, []), applies_to=None, learned={})
    assert len(led) == 2
    first = next(v for v in led if v.claims == ["a", "b"])
    assert first.verdict == "reproduced" and first.measured is not None and first.measured.n == 3
    assert next(v for v in led if v.claims == ["c"]).verdict == "not reproduced"


def test_control_pairs_by_seed_with_the_bases_matching_variant(tmp_path: Path) -> None:
    card = _card(tmp_path, [_raw("ft", {"metric": "ppl_vs", "op": "<", "comparator": "control", "at": 4,
                                        "value": 1.0, "value_from": "Table 1"}, ),
                            _raw("zs", {"metric": "ppl_vs", "op": "<", "comparator": "control", "at": 4,
                                        "value": 1.0, "value_from": "Table 1", "variant": "zero_shot"})])
    rope = [make_result("rope", s, {"scratch": {1: 10.0, 4: 20.0 + s}, "finetuned": {1: 10.0, 4: 11.0 + s}})
            for s in range(3)]
    own = [make_result("m", s, {"zero_shot": {1: 10.0, 4: 12.0 + s}, "finetuned": {1: 10.0, 4: 11.0 + s}},
                       primary="finetuned", applies_to="rope") for s in range(3)]
    looked: list[str] = []

    def lookup(m: str) -> list[Result]:
        looked.append(m)
        return {"m": own, "rope": rope}.get(m, [])

    led = {v.claims[0]: v for v in C.ledger(card, P, lookup, applies_to="rope", learned={})}
    assert led["ft"].verdict == "not reproduced"  # the same fine-tune gives the same numbers: ratio 1, not < 1
    assert led["ft"].measured is not None and led["ft"].measured.mean == pytest.approx(1.0)
    assert led["zs"].verdict == "reproduced"  # zero-shot beats raw RoPE on the same weights
    assert "rope" in looked


def test_tasks_not_learned_enter_no_verdict(tmp_path: Path) -> None:
    card = _card(tmp_path, [_raw("t", {"metric": "accuracy", "op": ">=", "task": "needle", "at": 4, "value": 0.5,
                                       "value_from": "Fig. 2"})])
    own = [make_result("m", 0, {"scratch": {1: 10.0}}, tasks={"needle": {"scratch": {1: 1.0, 4: 0.9}}})]
    lookup = {"m": own}.get
    led = C.ledger(card, P, lambda m: lookup(m) or [], applies_to=None, learned={"needle": False})
    assert led[0].verdict == "not tested" and "not learned" in led[0].reason
    led = C.ledger(card, P, lambda m: lookup(m) or [], applies_to=None, learned={"needle": True})
    assert led[0].verdict == "reproduced"  # Wilson interval of 180/200 lies above 0.5
