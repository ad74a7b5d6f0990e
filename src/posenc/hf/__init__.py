"""posenc on Hugging Face causal LMs (optional extra ``posenc[hf]``: transformers ≥ 5).

* :func:`apply` puts any supported posenc method into a loaded model of the Llama family (Llama, Mistral,
  Mixtral, Qwen2/3 and their MoE variants, OLMo 2) by replacing its rotary-embedding module and, for methods
  that change attention beyond the rotation, selecting the posenc attention function registered through
  transformers' ``AttentionInterface``.
* :func:`to_rope_parameters` gives the transformers ``rope_parameters`` producing the same frequencies, for the
  methods transformers implements itself.
* :func:`support_table` / :func:`support_table_markdown`: what is supported, computed from the registry.
* :mod:`posenc.hf.evaluate`: the pretrained-model protocol behind ``posenc eval-hf``.

``import posenc`` never imports this package; this package imports torch, and transformers only when a
model is touched (:func:`apply`, :mod:`posenc.hf.tiny`, :mod:`posenc.hf.evaluate`).
"""

from posenc.hf.rotary import PosencRotaryEmbedding, apply, model_dims
from posenc.hf.support import (
    ARCHITECTURES,
    NATIVE,
    SupportRow,
    UnsupportedError,
    support_table,
    support_table_markdown,
    supported_methods,
    to_rope_parameters,
)

__all__ = ["ARCHITECTURES", "NATIVE", "PosencRotaryEmbedding", "SupportRow", "UnsupportedError", "apply",
           "model_dims", "support_table", "support_table_markdown", "supported_methods", "to_rope_parameters"]
