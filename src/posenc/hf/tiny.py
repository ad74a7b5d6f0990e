"""Tiny random-weight models of every supported architecture, built from configs (nothing is downloaded).

Used by the tests and the worked example: hidden size 64, 2 layers, 4 query heads sharing 2 key-value heads
(grouped-query attention) of size 16 (set explicitly: some rope types read ``config.head_dim``), a short
original context (``max_position_embeddings`` = 64 by default), and a byte-level tokenizer (one token per
UTF-8 byte, offset by 3 special tokens, as ByT5's), saved as a standard ``tokenizer.json`` so that
``save_tiny_model`` writes a directory that ``posenc eval-hf`` reads like any checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from posenc.hf.support import ARCHITECTURES, UnsupportedError

__all__ = ["TINY", "tiny_config", "tiny_model", "tiny_tokenizer", "save_tiny_model", "progress_bars"]

#: Shared sizes of the tiny models.
TINY: dict[str, Any] = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                        "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 64, "vocab_size": 259,
                        "pad_token_id": 0, "eos_token_id": 1, "bos_token_id": None, "tie_word_embeddings": False}
#: Per-architecture settings that keep a tiny model tiny (few experts).
_EXTRA: dict[str, dict[str, Any]] = {
    "mixtral": {"num_local_experts": 2, "num_experts_per_tok": 1},
    "qwen2_moe": {"num_experts": 2, "num_experts_per_tok": 1, "moe_intermediate_size": 32,
                  "shared_expert_intermediate_size": 32},
    "qwen3_moe": {"num_experts": 2, "num_experts_per_tok": 1, "moe_intermediate_size": 32},
}


def tiny_config(model_type: str = "llama", **overrides: Any) -> Any:
    """A transformers config of ``model_type`` (one of :data:`~posenc.hf.support.ARCHITECTURES`) with the tiny
    sizes; ``overrides`` replace any field (e.g. ``rope_parameters``, ``initializer_range``)."""
    from transformers import AutoConfig  # lazy: transformers is an optional dependency

    if model_type not in ARCHITECTURES:
        raise UnsupportedError(f"tiny_config: model_type {model_type!r} is not supported; supported: "
                               f"{', '.join(ARCHITECTURES)}")
    return AutoConfig.for_model(model_type, **{**TINY, **_EXTRA.get(model_type, {}), **overrides})


def tiny_model(model_type: str = "llama", *, seed: int = 0, **overrides: Any) -> nn.Module:
    """A random-weight ``*ForCausalLM`` (float32, eval mode) of the tiny config, initialised from ``seed``."""
    from transformers import AutoModelForCausalLM  # lazy: transformers is an optional dependency

    config = tiny_config(model_type, **overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model.eval()


def _byte_chars() -> dict[int, str]:
    """Byte → printable character of GPT-2's byte-level BPE alphabet (Radford et al. 2019), which the
    ``tokenizers`` ByteLevel pre-tokenizer emits: printable Latin-1 bytes map to themselves, the other 68
    bytes to the code points 256, 257, ... in byte order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    out, extra = {b: chr(b) for b in keep}, 256
    for b in range(256):
        if b not in out:
            out[b], extra = chr(extra), extra + 1
    return out


def tiny_tokenizer() -> Any:
    """The byte-level tokenizer of the tiny models: 259 ids, ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2, then byte b
    at id b + 3 (a BPE without merges over the byte alphabet; any UTF-8 text round-trips)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers  # lazy: installed with transformers
    from transformers import PreTrainedTokenizerFast  # lazy: transformers is an optional dependency

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{c: b + 3 for b, c in _byte_chars().items()}}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def save_tiny_model(path: str | Path, model_type: str = "llama", *, seed: int = 0, **overrides: Any) -> Path:
    """Write a tiny random model and its tokenizer to ``path`` (``save_pretrained``); returns the path."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    with progress_bars(False):
        tiny_model(model_type, seed=seed, **overrides).save_pretrained(out)
    tiny_tokenizer().save_pretrained(out)
    return out


@contextmanager
def progress_bars(enabled: bool) -> Iterator[None]:
    """transformers' loading/saving progress bars on or off inside the block (restored after)."""
    from transformers.utils import logging as hf_logging  # lazy: transformers is an optional dependency

    before = hf_logging.is_progress_bar_enabled()
    (hf_logging.enable_progress_bar if enabled else hf_logging.disable_progress_bar)()
    try:
        yield
    finally:
        (hf_logging.enable_progress_bar if before else hf_logging.disable_progress_bar)()
