"""The claims ledger: one test per distinct claim, at the claim's own length and metric, judged over seeds.

Each claim of a card (``book/card_format.md``) states what its paper measured (``points``) and how it is tested
here (``expect``). :func:`resolve` turns it into a :class:`Test`:

* the **length**: ``expect.at``, or the claim's own length ratio (its last point over its training length)
  rounded to the nearest evaluated factor in log scale; a ratio more than 2× away from every evaluated
  factor is *not tested*;
* the **threshold**: ``expect.value`` (with ``value_from``, where the paper gives it), or derived from the
  claim's own numbers: ``ppl_ratio`` is the paper's last point over its first, ``ppl_vs`` the paper's point
  over the comparator's at the same length. No threshold is invented here.

Claims that reduce to the same test (same metric, variant, length, comparator, task, direction and
threshold) are one test: the ledger counts distinct tests. A test is judged on the 95% interval of the
measured value over seeds (paired by seed against a comparator): *reproduced* when the whole interval
satisfies the claim, *not reproduced* when none of it does, *inconclusive* when it straddles the threshold,
and *not tested* with the reason when the scale, the task or the variant does not allow it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from posenc.cards import CONTROL, Card, Claim, Expect
from posenc.experiment.aggregate import paired_ratio_at, ratio_at, task_series
from posenc.experiment.presets import Preset
from posenc.experiment.results import Result
from posenc.experiment.stats import Interval, newcombe

__all__ = ["VERDICTS", "Test", "Verdict", "resolve", "judge", "ledger", "comparators", "decide",
           "nearest_factor"]

VERDICTS = ("reproduced", "not reproduced", "inconclusive", "not tested")
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}


@dataclass(frozen=True)
class Test:
    """One distinct test of the ledger."""

    metric: str
    op: str
    at: int
    threshold: float
    threshold_from: str
    variant: str | None = None
    comparator: str | None = None
    task: str | None = None
    paper_at: float | None = None

    @property
    def key(self) -> tuple[Any, ...]:
        return (self.metric, self.op, self.at, round(self.threshold, 6), self.variant, self.comparator, self.task)

    def describe(self) -> str:
        what = {"ppl_ratio": "ppl({at}×L)/ppl(1×L)", "ppl_vs": "ppl({at}×L) / {cmp}'s",
                "accuracy": "{task} accuracy at {at}×L", "accuracy_vs": "{task} accuracy at {at}×L − {cmp}'s"}
        text = what[self.metric].format(at=self.at, cmp=self.comparator, task=self.task)
        if self.variant:
            text += f" [{self.variant}]"
        paper = ""
        if self.paper_at is not None and abs(self.paper_at - self.at) > 1e-9:
            paper = f" (paper at {self.paper_at:.3g}×)"
        return f"{text} {self.op} {self.threshold:.4g}{paper}"


@dataclass
class Verdict:
    """The verdict of one distinct test, the claims it covers, and what was measured."""

    test: Test | None
    claims: list[str]
    verdict: str
    reason: str
    measured: Interval | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        t = self.test
        return {"claims": self.claims, "verdict": self.verdict, "reason": self.reason,
                "test": None if t is None else {"metric": t.metric, "op": t.op, "at": t.at, "threshold": t.threshold,
                                                "threshold_from": t.threshold_from, "variant": t.variant,
                                                "comparator": t.comparator, "task": t.task, "paper_at": t.paper_at,
                                                "description": t.describe()},
                "measured": None if self.measured is None else self.measured.as_dict(), **self.extra}


def nearest_factor(ratio: float, factors: Sequence[int]) -> int | None:
    """The evaluated factor nearest to ``ratio`` in log scale, or None when every one is more than 2× away."""
    if not ratio > 0:
        return None
    best = min(factors, key=lambda f: abs(math.log2(f / ratio)))
    return best if abs(math.log2(best / ratio)) <= 1.0 + 1e-9 else None


def resolve(claim: Claim, p: Preset) -> Test | str:
    """The claim's test at this preset, or the reason it is not tested."""
    e: Expect | None = claim.expect
    if e is None:
        return "the card gives no testable expectation for this claim"
    if e.not_tested:
        return e.not_tested
    assert e.metric is not None and e.op is not None  # the schema requires them without not_tested
    pts = claim.points
    train = claim.train_length or (pts[0].length if pts else None)
    paper_at = pts[-1].length / train if pts and train else None
    if e.at is not None:
        at: int | None = nearest_factor(float(e.at), p.eval_factors)
        if at is None or abs(at - float(e.at)) > 1e-9:
            return f"the claim is tested at {e.at:g}×, which this preset does not evaluate ({list(p.eval_factors)})"
    else:
        at = nearest_factor(paper_at, p.eval_factors) if paper_at is not None else None
        if at is None:
            return (f"the claim's length ratio {paper_at:.3g}× is more than 2× away from every evaluated factor "
                    f"({list(p.eval_factors)})" if paper_at else "the claim gives no lengths to test at")
    if e.value is not None:
        threshold, source = float(e.value), str(e.value_from)
    elif e.metric == "ppl_ratio":
        threshold = pts[-1].value / pts[0].value
        source = f"the paper's {pts[-1].value:g} at {pts[-1].length} over {pts[0].value:g} at {pts[0].length}"
    else:  # ppl_vs: the paper's point over the comparator's at the same length (checked by the validator)
        other = next(c for c in e.comparator_points if c.length == pts[-1].length)
        threshold = pts[-1].value / other.value
        source = f"the paper's {pts[-1].value:g} over {e.comparator}'s {other.value:g} at {other.length}"
    return Test(e.metric, e.op, at, threshold, source, e.variant, e.comparator, e.task, paper_at)


def decide(op: str, threshold: float, iv: Interval) -> str:
    """reproduced / not reproduced / inconclusive, from where the interval lies relative to the threshold."""
    if math.isnan(iv.mean):
        return "not tested"
    ok_lo, ok_hi = _OPS[op](iv.lo, threshold), _OPS[op](iv.hi, threshold)
    if ok_lo and ok_hi:
        return "reproduced"
    if not ok_lo and not ok_hi:
        return "not reproduced"
    return "inconclusive"


def comparators(card: Card) -> set[str]:
    """Every comparator the card's tests use (``control`` included): each must appear in the method's figure."""
    out = set()
    for c in card.claims:
        if c.expect is not None and c.expect.comparator:
            out.add(c.expect.comparator)
    return out


Lookup = Callable[[str], Sequence[Result]]


def _control_variant(variant: str) -> str:
    # Zero-shot methods are compared with the base on the same weights; fine-tuned ones with the base given the
    # same fine-tune (the base's "finetuned" control variant).
    return "scratch" if variant == "zero_shot" else variant


def judge(test: Test, own: Sequence[Result], lookup: Lookup, applies_to: str | None,
          learned: Mapping[str, bool]) -> tuple[str, str, Interval | None]:
    """``(verdict, reason, measured interval)`` of one test. ``lookup(id)`` gives a method's per-seed results."""
    if not own:
        return "not tested", "no results for this method at this preset", None
    variant = test.variant or own[0].primary
    if variant not in own[0].variants:
        return "not tested", f"variant {variant!r} is not measured for this method", None
    if test.task is not None and not learned.get(test.task, False):
        return "not tested", f"task {test.task!r} is not learned at this scale (no baseline reaches 0.9 at 1×)", None
    other: Sequence[Result] = ()
    other_variant: str | None = None
    if test.comparator == CONTROL:
        if not applies_to:
            return "not tested", "'control' compares an applied method with its base; this method has none", None
        other, other_variant = lookup(applies_to), _control_variant(variant)
    elif test.comparator:
        other = lookup(test.comparator)
        other_variant = None
    if test.comparator and not other:
        return "not tested", f"comparator {test.comparator!r} has no results at this preset", None
    if test.metric == "ppl_ratio":
        iv = ratio_at(own, test.at, variant=variant)
    elif test.metric == "ppl_vs":
        iv = paired_ratio_at(own, other, test.at, variant=variant, other_variant=other_variant)
    elif test.metric == "accuracy":
        s = task_series(own, test.task or "", "", variant=variant)
        iv = next((y for x, y in zip(s.x, s.y, strict=True) if x == test.at * own[0].data["config"]["train_len"]),
                  None)
    else:
        iv = _accuracy_difference(own, other, test, variant, other_variant)
    if iv is None:
        return "not tested", f"{test.at}× was not measured", None
    verdict = decide(test.op, test.threshold, iv)
    seeds = f"{iv.n} seed{'s' if iv.n != 1 else ''}" if test.metric.startswith("ppl") else f"{iv.n} examples"
    where = {"reproduced": "entirely satisfies", "not reproduced": "entirely fails",
             "inconclusive": "straddles", "not tested": "is undefined for"}[verdict]
    return verdict, f"95% interval [{iv.lo:.4g}, {iv.hi:.4g}] over {seeds} {where} {test.op} {test.threshold:.4g}", iv


def _accuracy_difference(own: Sequence[Result], other: Sequence[Result], test: Test, variant: str,
                         other_variant: str | None) -> Interval | None:
    length = test.at * own[0].data["config"]["train_len"]
    a = task_series(own, test.task or "", "", variant=variant)
    b = task_series(other, test.task or "", "", variant=other_variant)
    pa = next((y for x, y in zip(a.x, a.y, strict=True) if x == length), None)
    pb = next((y for x, y in zip(b.x, b.y, strict=True) if x == length), None)
    if pa is None or pb is None:
        return None
    lo, hi = newcombe(round(pa.mean * pa.n), pa.n, round(pb.mean * pb.n), pb.n)
    return Interval(pa.mean - pb.mean, lo, hi, min(pa.n, pb.n))


def ledger(card: Card, p: Preset, lookup: Lookup, *, applies_to: str | None,
           learned: Mapping[str, bool]) -> list[Verdict]:
    """Every distinct test of the card's claims with its verdict; untested claims keep their reason."""
    own = lookup(card.id)
    groups: dict[tuple[Any, ...], tuple[Test, list[str]]] = {}
    untested: list[Verdict] = []
    for claim in card.claims:
        t = resolve(claim, p)
        if isinstance(t, str):
            untested.append(Verdict(None, [claim.id], "not tested", t))
            continue
        groups.setdefault(t.key, (t, []))[1].append(claim.id)
    out = []
    for t, ids in groups.values():
        verdict, reason, iv = judge(t, own, lookup, applies_to, learned)
        out.append(Verdict(t, ids, verdict, reason, iv))
    return out + untested
