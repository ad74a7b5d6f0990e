"""The tiny models: every supported architecture builds, saves and reloads with its tokenizer, and its logits are
``lm_head(last hidden state)`` (what the evaluation scores in chunks)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from posenc.hf import ARCHITECTURES, UnsupportedError
from posenc.hf.tiny import save_tiny_model, tiny_model, tiny_tokenizer

from ._tiny import logits


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_logits_are_the_head_of_the_last_hidden_state(arch: str, tokens: torch.Tensor) -> None:
    model = tiny_model(arch)
    with torch.no_grad():
        hidden = model.get_decoder()(input_ids=tokens, use_cache=False).last_hidden_state
        torch.testing.assert_close(model.get_output_embeddings()(hidden), logits(model, tokens))


def test_saved_model_and_tokenizer_reload(tmp_path: Path, tokens: torch.Tensor) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    save_tiny_model(tmp_path / "m", "qwen2", seed=3)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m", local_files_only=True)
    torch.testing.assert_close(logits(model, tokens), logits(tiny_model("qwen2", seed=3), tokens))
    tok = AutoTokenizer.from_pretrained(tmp_path / "m", local_files_only=True)
    ids = tok("aé", add_special_tokens=False)["input_ids"]
    assert ids == [b + 3 for b in "aé".encode()] and tok.decode(ids) == "aé"
    assert len(tiny_tokenizer()) == model.config.vocab_size


def test_seeds_give_different_weights() -> None:
    a, b = tiny_model(seed=0), tiny_model(seed=1)
    assert not torch.equal(a.model.embed_tokens.weight, b.model.embed_tokens.weight)


def test_unsupported_architecture_is_named() -> None:
    with pytest.raises(UnsupportedError, match="'gpt2'.*supported: llama"):
        tiny_model("gpt2")
