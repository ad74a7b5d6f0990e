"""`posenc eval-hf`: runs on a tiny random Llama saved to disk; bad arguments fail before any work, naming the
flag."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from posenc.cli import main

pytest.importorskip("transformers", minversion="5.0")

from posenc.hf.tiny import save_tiny_model  # noqa: E402


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("cli") / "tiny-llama", "llama", max_position_embeddings=64)


def test_eval_hf_writes_the_result_and_figure(model_dir: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r" / "yarn.json"
    rc = main(["eval-hf", str(model_dir), "--method", "yarn", "--hp", "scale=4", "--lengths", "128,64",
               "--eval-tokens", "128", "--out", str(out), "--cache", str(tmp_path / "c"), "--device", "cpu",
               "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    res = json.loads(out.read_text())
    assert [p["length"] for p in res["lm"]] == [64, 128] and res["method"]["hyperparameters"]["scale"] == 4
    assert out.with_suffix(".png").exists()
    text = capsys.readouterr().out
    assert "memory estimate" in text and "64 tokens (1x): ppl" in text and "wrote" in text


@pytest.mark.parametrize(("argv", "message"), [
    (["--method", "yarn", "--lengths", "12a"], "--lengths expects comma-separated positive ints"),
    (["--method", "yarn", "--lengths", "0,64"], "--lengths must be distinct positive ints"),
    (["--method", "alibi", "--lengths", "64"], "--method must be a supported method"),
    (["--method", "yarn", "--lengths", "64", "--hp", "scale"], "--hp expects NAME=VALUE"),
    (["--method", "yarn", "--lengths", "64", "--hp", "sclae=4"], "--hp must be hyperparameters of yarn"),
    (["--method", "yarn", "--lengths", "64", "--hp", "scale=0.5"], "--hp: yarn: hyperparameter 'scale'"),
    (["--method", "yarn", "--lengths", "64", "--depths", "0,x"], "--depths expects comma-separated numbers"),
    (["--method", "yarn", "--lengths", "64", "--corpus", "/no/such/file"], "--corpus must be an existing"),
])
def test_bad_arguments_are_named(model_dir: Path, tmp_path: Path, argv: list[str], message: str,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["eval-hf", str(model_dir), *argv, "--device", "cpu", "--out", str(tmp_path / "x.json"),
               "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("posenc eval-hf: ") and message in err, err
    assert not (tmp_path / "x.json").exists()


def test_missing_model_dir_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval-hf", str(tmp_path / "none"), "--method", "yarn", "--lengths", "64"]) == 2
    assert "MODEL_DIR must be a local folder with a config.json" in capsys.readouterr().err
