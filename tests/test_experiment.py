"""Training, evaluation, caches, results store and claim verdicts on a tiny preset (CPU, seconds)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

from posenc import experiment as E
from posenc.pe.base import PositionalEncoding, registered
from posenc.pe.rope import RoPE

# Smaller than the smoke preset: a handful of steps, two evaluation lengths.
TINY: dict[str, Any] = dict(steps=4, batch_size=4, task_batch=1, eval_factors=(1, 2), eval_tokens=128,
                            task_examples=4, eval_batch_tokens=512, finetune_steps=2, log_every=1)


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSENC_CACHE", str(tmp_path / "cache"))


class _NaNPE(PositionalEncoding):
    """Adds NaN to the embeddings: the first loss is NaN."""

    id = "test_nan_pe"

    def embed(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return x + float("nan")


class _ScaledRoPE(RoPE):
    """A stand-in RoPE scaling (position interpolation) applied to the rope base model."""

    id = "test_scaled_rope"
    applies_to: ClassVar[str | None] = "rope"

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, base: float = 10000.0,
                 scale: float = 1.0) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len, base=base)
        self._check("scale", scale, scale >= 1, ">= 1")
        self.scale = float(scale)

    def inv_freq(self, seq_len: int, device: Any = None) -> torch.Tensor:
        return super().inv_freq(seq_len, device) / self.scale


@pytest.fixture(autouse=True)
def _test_pes() -> Iterator[None]:
    """The two test-only PEs exist in the registry only while this module's tests run."""
    with registered(_NaNPE, _ScaledRoPE):
        yield


# --------------------------------------------------------------------------- parameters
def test_presets_match_the_design() -> None:
    cpu = E.get_preset("cpu")
    assert (cpu.n_layer, cpu.d_model, cpu.n_head, cpu.steps, cpu.batch_size, cpu.train_len) == (2, 128, 4, 600, 32, 64)
    assert cpu.eval_factors == (1, 2, 4, 8, 16, 32) and E.get_preset("gpu").eval_factors[-1] == 32
    assert E.get_preset("smoke", steps=3).steps == 3
    assert E.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        (dict(method="rope", preset="huge"), "unknown preset 'huge'"),
        (dict(method="ropee", preset="smoke"), "unknown positional encoding id 'ropee'"),
        (dict(method="rope", preset="smoke", device="tpu"), "unknown device 'tpu'"),
        (dict(method="rope", preset="smoke", hparams={"base": -1.0}), "'base'"),
        (dict(method="rope", preset="smoke", hparams={"bse": 10.0}), "bse"),
        (dict(method="rope", preset="smoke", overrides={"steps": 0}), "'steps'"),
        (dict(method="rope", preset="smoke", overrides={"stepz": 3}), "stepz"),
        (dict(method="rope", preset="smoke", overrides={"lr": float("nan")}), "'lr'"),
        (dict(method="rope", preset="smoke", overrides={"eval_factors": (2, 4)}), "'eval_factors'"),
    ],
)
def test_bad_parameters_are_named_before_training(kwargs: dict[str, Any], named: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(E, "_train_loop", lambda *a, **k: pytest.fail("training started"))
    with pytest.raises(ValueError, match=named):
        E.train(kwargs.pop("method"), kwargs.pop("preset"), 0, **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error when CUDA is absent")
def test_cuda_without_cuda_is_rejected() -> None:
    with pytest.raises(ValueError, match="CUDA is not available"):
        E.resolve_device("cuda")


# --------------------------------------------------------------------------- training
def test_two_runs_with_one_seed_give_identical_numbers() -> None:
    a = E.train("rope", "smoke", 0, overrides=TINY, cache=False)
    b = E.train("rope", "smoke", 0, overrides=TINY, cache=False)
    assert a.loss == b.loss
    for (k, v), w in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert torch.equal(v, w), k
    p = E.get_preset("smoke", **TINY)
    assert E.evaluate(a.model, p, seed=0) == E.evaluate(b.model, p, seed=0)
    c = E.train("rope", "smoke", 1, overrides=TINY, cache=False)
    assert c.loss != a.loss  # the seed matters


def test_checkpoint_cache_hit_and_miss() -> None:
    first = E.train("nope", "smoke", 0, overrides=TINY)
    assert not first.from_cache
    files = list(E.checkpoint_dir().glob("nope-*.pt"))
    assert len(files) == 1
    second = E.train("nope", "smoke", 0, overrides=TINY)
    assert second.from_cache and second.key == first.key and second.loss == first.loss
    for v, w in zip(first.model.state_dict().values(), second.model.state_dict().values(), strict=True):
        assert torch.equal(v.cpu(), w.cpu())
    other = E.train("nope", "smoke", 0, overrides={**TINY, "steps": 5})
    assert not other.from_cache and other.key != first.key


def test_nan_loss_stops_with_method_and_step() -> None:
    with pytest.raises(FloatingPointError, match=r"test_nan_pe.*nan at step 0"):
        E.train("test_nan_pe", "smoke", 0, overrides=TINY, cache=False)


def test_loss_decreases_on_the_smoke_preset() -> None:
    tr = E.train("rope", "smoke", 0, cache=False)
    assert tr.loss[-1]["lm"] < tr.loss[0]["lm"] - 0.5


# --------------------------------------------------------------------------- results store
def test_result_json_schema_and_reuse(tmp_path: Path) -> None:
    res = E.run_method("rope", "smoke", 0, results_dir=tmp_path, overrides=TINY)
    path = E.result_path("rope", "smoke", 0, tmp_path)
    stored = json.loads(path.read_text())
    assert stored == json.loads(json.dumps(res))
    assert stored["complete"] and stored["method"] == "rope" and stored["primary"] == "scratch"
    md = stored["metadata"]
    for key in ("device", "torch", "git_commit", "corpus_sha256", "seed", "wall_time_s", "peak_memory_mb"):
        assert key in md
    assert len(md["corpus_sha256"]) == 64
    assert [pt["length"] for pt in stored["curves"]["lm_nonoverlap"]] == [64, 128]
    for key in ("lm_nonoverlap", "lm_sliding"):
        assert all(pt["ppl"] > 1 and math.isclose(pt["bpb"], math.log2(pt["ppl"])) for pt in stored["curves"][key])
    assert all(0 <= pt["accuracy"] <= 1 for pt in stored["curves"]["arithmetic"] + stored["curves"]["passkey"])
    assert stored["train"]["loss"][0]["step"] == 0
    assert {c["verdict"] for c in stored["claims"]} <= set(E.VERDICTS)
    # Reused unchanged when complete; recomputed when the configuration changes.
    again = E.run_method("rope", "smoke", 0, results_dir=tmp_path, overrides=TINY)
    assert again["metadata"]["finished"] == res["metadata"]["finished"]
    assert not list(path.parent.glob(".*tmp"))


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    E.write_json_atomic(path, {"a": 1})
    with pytest.raises(TypeError):
        E.write_json_atomic(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


class _Killed(Exception):
    """Stands for the process being killed mid-sweep."""


def test_killed_sweep_resumes_without_losing_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_train = E.train
    calls: list[str] = []
    killed: list[bool] = []

    def killing_train(method: str, *a: Any, **k: Any) -> Any:
        calls.append(method)
        if method == "nope" and not killed:
            killed.append(True)
            raise _Killed  # the sweep is killed while training the second method
        return real_train(method, *a, **k)

    monkeypatch.setattr(E, "train", killing_train)
    with pytest.raises(_Killed):
        E.sweep(["rope", "nope"], "smoke", results_dir=tmp_path, overrides=TINY, progress=False)
    assert E.load_result("rope", "smoke", 0, tmp_path) is not None
    assert E.load_result("nope", "smoke", 0, tmp_path) is None
    rope_json = E.result_path("rope", "smoke", 0, tmp_path).read_text()
    calls.clear()
    E.sweep(["rope", "nope"], "smoke", results_dir=tmp_path, overrides=TINY, progress=False)
    assert calls[0] == "nope" and "rope" not in calls  # rope was skipped, not retrained
    assert E.result_path("rope", "smoke", 0, tmp_path).read_text() == rope_json
    assert E.load_result("nope", "smoke", 0, tmp_path) is not None


def test_applied_method_reuses_the_cached_base_model(tmp_path: Path) -> None:
    base = E.train("rope", "smoke", 0, overrides=TINY)
    res = E.run_method("test_scaled_rope", "smoke", 0, results_dir=tmp_path, overrides=TINY)
    assert res["kind"] == "applied" and res["applies_to"] == "rope"
    assert set(res["variants"]) == {"zero_shot", "finetuned"} and res["primary"] == "finetuned"
    assert res["metadata"]["base_from_cache"] and res["metadata"]["base_checkpoint"] == base.key
    assert res["metadata"]["finetune_hyperparameters"]["scale"] == 4.0
    assert res["train"]["finetune_loss"] and res["train"]["loss"] == base.loss
    # Zero-shot at 1x is exactly the rope base model (scale 1 = identity).
    p = E.get_preset("smoke", **TINY)
    rope_1x = E.evaluate(base.model, p, seed=0)["lm_nonoverlap"][0]
    assert math.isclose(res["variants"]["zero_shot"]["curves"]["lm_nonoverlap"][0]["ppl"], rope_1x["ppl"], rel_tol=1e-6)


# --------------------------------------------------------------------------- verdicts
def _curves(ppl: dict[int, float], acc: dict[int, float] | None = None) -> dict[str, list[dict[str, Any]]]:
    return {"lm_nonoverlap": [{"factor": f, "length": 64 * f, "ppl": v} for f, v in ppl.items()],
            "arithmetic": [{"factor": f, "length": 64 * f, "accuracy": v} for f, v in (acc or {}).items()]}


def test_verdicts() -> None:
    c = _curves({1: 10.0, 4: 12.0, 8: 30.0}, {1: 0.5, 8: 0.1})
    ratio = {"metric": "ppl_ratio", "at": 4, "op": "<=", "value": 1.3}
    assert E.claim_verdict(ratio, c) | {"reason": ""} == {"verdict": "reproduced", "measured": 1.2, "reason": ""}
    assert E.claim_verdict({**ratio, "at": 8}, c)["verdict"] == "not reproduced at this scale"
    assert E.claim_verdict({**ratio, "at": 32}, c)["verdict"] == "not applicable"  # not measured
    assert E.claim_verdict(None, c)["verdict"] == "not applicable"
    vs = {"metric": "ppl_vs_baseline", "at": 8, "op": "<", "value": 1.0, "baseline": "alibi"}
    assert E.claim_verdict(vs, c, _curves({8: 40.0}))["verdict"] == "reproduced"
    assert E.claim_verdict(vs, c, _curves({8: 20.0}))["verdict"] == "not reproduced at this scale"
    assert E.claim_verdict(vs, c, None)["verdict"] == "not applicable"
    acc = {"metric": "accuracy", "at": 1, "op": ">", "value": 0.3}
    assert E.claim_verdict(acc, c)["verdict"] == "reproduced"
    assert E.claim_verdict({**acc, "at": 8}, c)["verdict"] == "not reproduced at this scale"
    failed = {"lm_nonoverlap": [{"factor": 1, "ppl": 10.0}, {"factor": 4, "ppl": None, "error": "past table"}]}
    assert E.claim_verdict(ratio, failed)["verdict"] == "not reproduced at this scale"


@pytest.mark.parametrize("bad, field", [({"metric": "bleu", "at": 4, "op": "<", "value": 1}, "expect.metric"),
                                        ({"metric": "ppl_ratio", "at": 4, "op": "=<", "value": 1}, "expect.op"),
                                        ({"metric": "ppl_ratio", "at": "4x", "op": "<", "value": 1}, "expect.at"),
                                        ({"metric": "ppl_vs_baseline", "at": 4, "op": "<", "value": 1},
                                         "expect.baseline")])
def test_bad_expect_is_named(bad: dict[str, Any], field: str) -> None:
    card = {"_path": "taxonomy/methods/x.yaml", "claims": [{"id": "c", "expect": bad}]}
    with pytest.raises(ValueError, match=rf"x\.yaml: claims\[0\]: {field}"):
        E.judge_claims(card, _curves({1: 1.0}))


def test_judge_claims_uses_the_baseline_lookup() -> None:
    card = {"claims": [
        {"id": "a", "statement": "s", "points": [{"length": 512, "value": 19.7}],
         "expect": {"metric": "ppl_vs_baseline", "at": 4, "op": "<", "value": 1.0, "baseline": "rope"}},
        {"id": "b", "statement": "t", "expect": None}]}
    seen: list[str] = []

    def lookup(bid: str) -> Any:
        seen.append(bid)
        return _curves({4: 100.0})

    out = E.judge_claims(card, _curves({1: 10.0, 4: 50.0}), lookup)
    assert seen == ["rope"]
    assert [c["verdict"] for c in out] == ["reproduced", "not applicable"]
    assert out[0]["points"] == [{"length": 512, "value": 19.7}] and out[0]["measured"] == 0.5


def test_local_window_check_is_at_chance() -> None:
    rows = E.local_window_check("cpu", n=300)
    assert [r["length"] for r in rows] == [64 * f for f in (1, 2, 4, 8, 16, 32)]
    assert all(r["accuracy"] < 0.2 for r in rows)
    assert max(r["bounded_accuracy"] for r in rows) > 0.4


def test_leaderboard_files(tmp_path: Path) -> None:
    for m in ("rope", "nope"):
        E.run_method(m, "smoke", 0, results_dir=tmp_path, overrides=TINY)
    df = E.leaderboard("smoke", tmp_path)
    assert {"rope", "nope"} <= set(df["method"])  # nope's card also brings its baseline, sinusoidal
    assert {"ppl@1x", "ppl_ratio@4x", "arithmetic@1x", "passkey@2x", "claims_reproduced"} <= set(df.columns)
    for ext in ("csv", "md", "png"):
        assert (tmp_path / "smoke" / f"leaderboard.{ext}").stat().st_size > 0
    with pytest.raises(ValueError, match="no complete results"):
        E.leaderboard("gpu", tmp_path)


def test_expect_variant_selects_the_curves() -> None:
    variants = {"zero_shot": {"curves": _curves({1: 10.0, 4: 40.0})},
                "finetuned": {"curves": _curves({1: 10.0, 4: 11.0})}}
    ratio = {"metric": "ppl_ratio", "at": 4, "op": "<=", "value": 1.2}
    card = {"claims": [{"id": "zs", "expect": {**ratio, "variant": "zero_shot"}}, {"id": "primary", "expect": ratio},
                       {"id": "missing", "expect": {**ratio, "variant": "finetuned"}}]}
    out = E.judge_claims(card, variants["finetuned"]["curves"], variants=variants)
    assert [c["verdict"] for c in out[:2]] == ["not reproduced at this scale", "reproduced"]
    only_scratch = {"scratch": {"curves": _curves({1: 10.0, 4: 11.0})}}
    judged = E.judge_claims(card, only_scratch["scratch"]["curves"], variants=only_scratch)
    assert judged[2]["verdict"] == "not applicable"
    with pytest.raises(ValueError, match="expect.variant"):
        E.judge_claims({"claims": [{"id": "x", "expect": {**ratio, "variant": "zeroshot"}}]}, _curves({1: 1.0}))


def test_gpu_preset_runs_on_cpu_with_a_tiny_override(tmp_path: Path) -> None:
    tiny = dict(n_layer=1, d_model=32, n_head=2, steps=2, batch_size=4, task_batch=1, eval_factors=(1, 2),
                eval_tokens=256, task_examples=2, task_tokens=256, eval_batch_tokens=1024)
    res = E.run_method("alibi", "gpu", 0, device="cpu", results_dir=tmp_path, overrides=tiny, baselines=False)
    assert res["preset"] == "gpu" and res["config"]["train_len"] == 128 and res["metadata"]["device"] == "cpu"
    assert [pt["length"] for pt in res["curves"]["lm_sliding"]] == [128, 256]
