"""The pretrained-model protocol on a tiny random Llama saved to disk: the same scored tokens at every length,
the NLL against a direct computation, passkey scoring, the resumable cache, the JSON and the figure."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from posenc import data as D
from posenc.hf import apply
from posenc.hf import evaluate as E
from posenc.hf.passkey import passkey_example
from posenc.hf.tiny import save_tiny_model, tiny_tokenizer

from ._tiny import tiny

LENGTHS = (256, 384)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("hf") / "tiny-llama", "llama", max_position_embeddings=64,
                           initializer_range=0.2)


def spec(model_dir: Path, **kw: Any) -> E.EvalSpec:
    base: dict[str, Any] = {"model_dir": str(model_dir), "method": "yarn", "hparams": {"scale": 4.0},
                            "lengths": LENGTHS, "passkey": True, "depths": (0.0, 1.0), "passkey_trials": 1,
                            "device": "cpu"}
    return E.EvalSpec(**{**base, **kw})


@pytest.mark.parametrize(("scored", "length"), [(384, 256), (384, 384), (100, 256), (1000, 64), (64, 1000)])
def test_windows_score_every_target_once(scored: int, length: int) -> None:
    start = max(scored, length)
    hit = np.zeros(start + scored + 1, dtype=int)
    for a, keep in E.score_windows(start, scored, length):
        assert a >= 0 and keep <= length
        hit[a + 1 + length - keep:a + 1 + length] += 1  # targets of the window's last `keep` inputs
    assert (hit[start + 1:] == 1).all() and hit[:start + 1].sum() == 0


def test_run_writes_json_figure_and_resumes(model_dir: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    lines: list[str] = []
    out, cache = tmp_path / "res" / "yarn.json", tmp_path / "cache"
    res = E.run_eval(spec(model_dir), out=out, cache=cache, progress=False, log=lines.append)
    assert lines[0].startswith("memory estimate: weights") and "rotary path" in lines[0]
    assert json.loads(out.read_text()) == json.loads(json.dumps(res)) and res["complete"]
    assert out.with_suffix(".png").stat().st_size > 1000
    assert [p["length"] for p in res["lm"]] == list(LENGTHS)
    assert {p["tokens"] for p in res["lm"]} == {max(LENGTHS)}  # the same scored tokens at every length
    assert all(math.isfinite(p["ppl"]) for p in res["lm"])
    assert res["method"] == {"id": "yarn", "kind": "rotary", "hyperparameters": {"scale": 4.0, "base": 10000.0},
                             "user_hparams": {"scale": 4.0}}
    assert res["model"]["train_len"] == 64 and res["lm"][0]["factor"] == 4.0
    cells = res["passkey"]["cells"]
    assert [(c["length"], c["depth"]) for c in cells] == [(n, d) for n in LENGTHS for d in (0.0, 1.0)]
    assert "/" not in res["model"]["name"] and str(model_dir) not in out.read_text()  # no machine paths

    # Direct check of the NLL at the longest length: one window of 384 tokens over the span.
    tok = tiny_tokenizer()
    ids = np.asarray(tok(D.default_corpus_bytes().decode("utf-8", errors="replace")[:4000],
                         add_special_tokens=False)["input_ids"])
    stream, start = D.eval_span(ids, 384, 384)
    x = torch.from_numpy(stream[start:start + 385])
    model, _ = E.load(model_dir, torch.device("cpu"), torch.float32)
    apply(model, "yarn", scale=4.0)
    with torch.no_grad():
        ref = F.cross_entropy(model(x[None, :-1], use_cache=False).logits[0], x[1:]).item()
    assert res["lm"][1]["nll"] == pytest.approx(ref, rel=1e-5)

    # A second run reads every length from the cache, computing nothing.
    def boom(*a: Any, **k: Any) -> None:
        raise AssertionError("recomputed a cached length")

    monkeypatch.setattr(E, "token_nll", boom)
    monkeypatch.setattr(E, "passkey_correct", boom)
    lines.clear()
    again = E.run_eval(spec(model_dir), out=out, cache=cache, progress=False, log=lines.append)
    assert all(line.endswith("(cached)") for line in lines[1:-1]) and again["lm"] == res["lm"]
    (cache / "lm-256.json").write_text("{trunc")  # a corrupt entry is set aside and recomputed
    monkeypatch.undo()
    E.run_eval(spec(model_dir), out=out, cache=cache, progress=False, log=lines.append)
    assert (cache / "lm-256.json.corrupt").exists() and json.loads((cache / "lm-256.json").read_text())


def test_attention_methods_run_and_the_estimate_counts_their_chunks(model_dir: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    res = E.run_eval(spec(model_dir, method="self_extend", hparams={"group_size": 4}, passkey=False, lengths=(128,)),
                     out=tmp_path / "se.json", cache=tmp_path / "c", progress=False, log=lines.append)
    assert res["method"]["kind"] == "attention" and "attention path" in lines[0]
    assert res["passkey"] is None and not any("passkey" in line for line in lines)


def test_passkey_scoring_is_greedy_decoding(model_dir: Path) -> None:
    """One teacher-forced forward says whether greedy decoding reproduces the key; a model that copies the key
    scores 1."""
    model, tok = E.load(model_dir, torch.device("cpu"), torch.float32)
    ex = passkey_example(tok, 300, 0.5, 12345)
    n = ex.tokens.size - ex.answer_start
    with torch.no_grad():
        gen = model.generate(torch.from_numpy(ex.tokens[None, :ex.answer_start]), max_new_tokens=n, do_sample=False,
                             pad_token_id=0)[0, ex.answer_start:]
    assert E.passkey_correct(model, ex) == torch.equal(gen, torch.from_numpy(ex.tokens[ex.answer_start:]))

    class Oracle(torch.nn.Module):
        """Predicts each next token of ``ex`` exactly (the hidden state is the one-hot of the next token)."""

        def __init__(self, nxt: np.ndarray) -> None:
            super().__init__()
            self.nxt = torch.from_numpy(nxt)
            self.head = torch.nn.Identity()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def get_decoder(self) -> Any:
            return lambda input_ids, use_cache: type("O", (), {
                "last_hidden_state": F.one_hot(self.nxt[:input_ids.size(1)], 259).float()[None]})

        def get_output_embeddings(self) -> torch.nn.Module:
            return self.head

    assert E.passkey_correct(Oracle(ex.tokens[1:]), ex)
    wrong = ex.tokens[1:].copy()
    wrong[-1] = (wrong[-1] + 1) % 259
    assert not E.passkey_correct(Oracle(wrong), ex)


@pytest.mark.parametrize(("kw", "message"), [
    ({"lengths": ()}, "--lengths must be distinct positive ints"),
    ({"lengths": (128, 128)}, "--lengths must be distinct positive ints"),
    ({"method": "alibi"}, "--method must be a supported method"),
    ({"hparams": {"scael": 4}}, "--hp must be hyperparameters of yarn.*scael"),
    ({"depths": (0.5, 2.0)}, "--depths must be numbers in"),
    ({"passkey_trials": 0}, "--passkey-trials must be a positive int"),
    ({"eval_tokens": 0}, "--eval-tokens must be a positive int"),
    ({"dtype": "float8"}, "--dtype must be"),
    ({"device": "tpu"}, "--device: unknown device"),
    ({"corpus": "/nonexistent/text.txt"}, "--corpus must be an existing text file"),
    ({"train_len": -1}, "--train-len must be a positive int"),
])
def test_bad_specs_name_the_flag(model_dir: Path, kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        spec(model_dir, **kw)


def test_missing_model_dir_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="MODEL_DIR must be a local folder with a config.json"):
        spec(tmp_path / "nothing")


def test_run_time_errors_name_the_flag(model_dir: Path, tmp_path: Path) -> None:
    short = tmp_path / "short.txt"
    short.write_text("a few words only", encoding="utf-8")
    with pytest.raises(ValueError, match="--corpus has 16 tokens; --lengths up to 384"):
        E.run_eval(spec(model_dir, corpus=str(short), passkey=False), out=tmp_path / "x.json", progress=False,
                   log=lambda s: None)
    with pytest.raises(ValueError, match="--lengths: 128 is too short for a passkey prompt"):
        E.run_eval(spec(model_dir, lengths=(128,)), out=tmp_path / "x.json", progress=False, log=lambda s: None)
    with pytest.raises(ValueError, match="--hp: yarn: hyperparameter 'scale' must be a number ≥ 1"):
        E.run_eval(spec(model_dir, hparams={"scale": 0.5}), out=tmp_path / "x.json", progress=False,
                   log=lambda s: None)
    assert not (tmp_path / "x.json").exists()


def test_memory_estimate_grows_with_length_and_counts_attention_chunks() -> None:
    model = tiny()
    n = sum(p.numel() for p in model.parameters())
    rot = [E.memory_estimate(model.config, n, torch.float32, t, "rotary", 256) for t in (1024, 4096)]
    att = E.memory_estimate(model.config, n, torch.float32, 4096, "attention", 256)
    assert rot[0]["weights"] == pytest.approx(n * 4 / 2**30)
    assert rot[1]["activations"] > rot[0]["activations"] and att["peak"] > rot[1]["peak"]
