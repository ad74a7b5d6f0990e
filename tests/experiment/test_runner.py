"""One method end to end on tiny presets: determinism, reuse, controls, and the model a notebook plots."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch

from posenc import data as D
from posenc.experiment import estimate as ES
from posenc.experiment import evaluate as EV
from posenc.experiment import runner as R
from posenc.experiment.presets import resolve_device
from posenc.experiment.spec import RunSpec
from posenc.model import Transformer
from posenc.pe import base as pe_base

# Smaller than the smoke preset: a handful of steps, two evaluation lengths, no tasks unless asked.
TINY = dict(steps=3, batch_size=4, eval_factors=(1, 2), eval_bytes=64, eval_batch_tokens=256, position_bins=4,
            finetune_steps=2, finetune_factor=2, task_steps=2, task_batch=2, task_examples=4, log_every=1,
            task_seeds=())


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSENC_CACHE", str(tmp_path / "cache"))


def _strip(res: dict) -> dict:
    res = json.loads(json.dumps(res))
    res.pop("metadata")
    for part in ("log", "base_log", "finetune_log"):
        for where in (res["train"].get(part) or {},):
            where.pop("wall_s", None)
    for task in res.get("tasks", {}).values():
        for log in task.get("logs", {}).values():
            log.pop("wall_s", None)
    return res


@pytest.mark.parametrize("method", ["alibi", "pi"])  # a scratch method; an applied one (zero-shot, fine-tuned)
def test_two_runs_with_one_seed_give_identical_results(method: str, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Two CPU runs of one seed give identical JSONs apart from timings: every variant and task, trained anew
    (each run has its own checkpoint cache)."""
    spec = RunSpec.create(method, "smoke", 0, overrides={**TINY, "task_seeds": (0,)}, device="cpu")
    a = R.run_seed(spec, results_dir=tmp_path / "a")
    monkeypatch.setenv("POSENC_CACHE", str(tmp_path / "cache-b"))
    b = R.run_seed(spec, results_dir=tmp_path / "b")
    assert set(a.variants) == ({"scratch"} if method == "alibi" else {"zero_shot", "finetuned"})
    assert a.data["tasks"] and all(len(v) >= 2 for v in a.data["tasks"].values())
    assert _strip(a.data) == _strip(b.data)
    c = R.run_seed(spec.with_seed(1), results_dir=tmp_path / "a")
    assert c.value(1) != a.value(1)


def test_a_stored_result_with_the_same_key_is_reused(tmp_path: Path) -> None:
    spec = RunSpec.create("nope", "smoke", 0, overrides=TINY, device="cpu")
    first = R.run_seed(spec, results_dir=tmp_path)
    assert R.run_seed(spec, results_dir=tmp_path).data["metadata"]["finished"] == first.data["metadata"]["finished"]
    other = RunSpec.create("nope", "smoke", 0, overrides={**TINY, "steps": 4}, device="cpu")
    assert other.result_path(tmp_path) != spec.result_path(tmp_path)


def test_rope_stores_its_control_and_applied_methods_pair_with_it(tmp_path: Path) -> None:
    rope = R.run_seed(RunSpec.create("rope", "smoke", 0, overrides=TINY, device="cpu"), results_dir=tmp_path)
    assert set(rope.variants) == {"scratch", "finetuned"}
    pi = R.run_seed(RunSpec.create("pi", "smoke", 0, overrides=TINY, device="cpu"), results_dir=tmp_path)
    assert set(pi.variants) == {"zero_shot", "finetuned"} and pi.primary == "finetuned"
    # Zero-shot PI at 1x (scale 1) is RoPE on the same weights: the same numbers.
    assert pi.value(1, variant="zero_shot") == pytest.approx(rope.value(1, variant="scratch"), rel=1e-6)
    assert pi.data["train"]["base_log"]["loss"] == rope.data["train"]["log"]["loss"]


def test_learned_pe_parameters_train_and_their_movement_is_recorded(tmp_path: Path) -> None:
    res = R.run_seed(RunSpec.create("t5_bias", "smoke", 0, overrides={**TINY, "steps": 20}, device="cpu"),
                     results_dir=tmp_path)
    shift = res.data["train"]["log"]["pe_shift"]
    assert shift["moved"] and shift["parameters"]["table"]["max_abs"] > 0.05
    assert R.run_seed(RunSpec.create("alibi", "smoke", 0, overrides=TINY, device="cpu"),
                      results_dir=tmp_path).data["train"]["log"]["pe_shift"] == {}


def test_task_specific_tasks_are_trained_only_where_they_belong() -> None:
    assert R.tasks_for("rope") == ["needle", "latest", "addition"]  # a baseline
    assert R.tasks_for("t5_bias") == ["needle", "latest"]


@pytest.mark.parametrize("method", [m for m in pe_base.available()])
def test_the_notebooks_model_is_the_measured_one(method: str, tmp_path: Path) -> None:
    """load_model (the notebook's figures) rebuilds, from the same RunSpec and caches, the model whose numbers
    run_seed stored: recomputing a stored perplexity with it gives the same value."""
    spec = RunSpec.create(method, "smoke", 0, overrides=TINY, device="cpu")
    res = R.run_seed(spec, results_dir=tmp_path)
    model = R.load_model(spec)
    # A zero-shot model is rebuilt per length; load_model gives it at the fine-tune length's scale.
    factor = spec.preset.finetune_factor if res.primary == "zero_shot" else 1
    again = EV.lm_curves(lambda _length: model, spec.preset, D.load_corpus(), resolve_device("cpu"))
    measured = next(pt for pt in again["lm"] if pt["factor"] == factor)
    assert measured.get("ppl") == pytest.approx(res.value(factor), rel=1e-6)


@pytest.mark.parametrize("method", ["cope", "pi"])  # a scratch method on the explicit path; an applied one
def test_the_estimates_workload_lists_the_evaluation_forwards_a_run_makes(method: str, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """:func:`posenc.experiment.estimate.workload` (the gpu dry run's count) names every evaluation forward
    that ``run_seed`` makes, with its batch, length and the final rows it computes (``last``)."""
    tiny = {**TINY, "task_seeds": (0,), "eval_factors": (1, 2, 4), "eval_bytes": 128}
    spec = RunSpec.create(method, "smoke", 0, overrides=tiny, device="cpu")
    seen: Counter = Counter()
    forward = Transformer.forward

    def counted(self: Transformer, tokens: torch.Tensor, pos: torch.Tensor | None = None,
                targets: torch.Tensor | None = None, *, last: int | None = None) -> tuple:
        if not torch.is_grad_enabled():
            seen[(tokens.size(0), tokens.size(1), last)] += 1
        return forward(self, tokens, pos, targets, last=last)

    monkeypatch.setattr(Transformer, "forward", counted)
    if spec.applies_to:  # the base is trained by its own unit first (its forwards are not this unit's)
        R.run_seed(RunSpec.create(spec.applies_to, spec.preset, 0, device="cpu"), results_dir=tmp_path)
        seen.clear()
    R.run_seed(spec, results_dir=tmp_path)
    expected: Counter = Counter()
    for w in ES.workload(spec):
        if not w.train:
            expected[(w.batch, w.length, w.last)] += w.calls
    assert seen == expected
    assert any(last for _, _, last in expected)  # sliding windows and task answers score their final rows only
