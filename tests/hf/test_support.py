"""The support table and the native rope-type mapping, computed from the registry."""

from __future__ import annotations

import logging

import pytest

from posenc.hf import (
    ARCHITECTURES,
    NATIVE,
    UnsupportedError,
    support_table,
    support_table_markdown,
    supported_methods,
    to_rope_parameters,
)
from posenc.hf.support import check_supported, kind_of
from posenc.pe import available, build

DIMS = {"head_dim": 16, "num_heads": 2, "train_len": 32}


def test_every_registered_method_is_either_supported_or_explained() -> None:
    table = support_table()
    assert [r.method for r in table if r.kind == "rotary"] + [r.method for r in table if r.kind == "attention"] \
        == [r.method for r in table]
    assert sorted(r.method for r in table) == supported_methods()
    md = support_table_markdown()
    for mid in available():
        assert f"`{mid}`" in md
    assert all(r.architectures == tuple(ARCHITECTURES) for r in table)


@pytest.mark.parametrize("method", available())
def test_kind_and_support_follow_the_built_pe(method: str) -> None:
    pe = build(method, **DIMS)
    if method in supported_methods():
        kind = check_supported(method, pe)
        assert kind == kind_of(pe) == next(r.kind for r in support_table() if r.method == method)
    else:
        with pytest.raises(UnsupportedError, match=f"{method!r} is not supported.*Supported: .*yarn"):
            check_supported(method, pe)


def test_native_methods_are_rotary_and_listed_with_their_rope_type() -> None:
    rows = {r.method: r for r in support_table()}
    for mid, nat in NATIVE.items():
        assert rows[mid].kind == "rotary" and rows[mid].hf_rope_type == nat.rope_type
        assert f"`{nat.rope_type}` (parity tested)" in support_table_markdown()
    assert all(r.hf_rope_type is None for r in rows.values() if r.method not in NATIVE)


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def rope_warnings(rope_parameters: dict) -> list[str]:
    """transformers' warnings about ``rope_parameters`` when a config is built with them (its logger does not
    propagate, so a handler is attached to it)."""
    from transformers import LlamaConfig

    logger, handler = logging.getLogger("transformers"), Collect()
    logger.addHandler(handler)
    try:
        LlamaConfig(hidden_size=32, num_attention_heads=2, head_dim=16, max_position_embeddings=128,
                    rope_parameters=rope_parameters)
    finally:
        logger.removeHandler(handler)
    return [m for m in handler.messages if "rope" in m.lower()]


def test_the_warning_check_sees_warnings() -> None:
    assert rope_warnings({"rope_type": "linear", "rope_theta": 1e4, "factor": 2.0, "bogus": 1})


@pytest.mark.parametrize("method", sorted(NATIVE))
def test_rope_parameters_pass_transformers_validation_silently(method: str) -> None:
    rp = to_rope_parameters(method, train_len=32, head_dim=16)
    assert rp["rope_type"] == NATIVE[method].rope_type and rp["rope_theta"] == 10000.0
    assert not rope_warnings(rp)


def test_rope_parameters_errors_name_the_problem() -> None:
    with pytest.raises(UnsupportedError, match="no rope type for 'rerope'.*native methods: dynamic_ntk"):
        to_rope_parameters("rerope", train_len=32, head_dim=16)
    with pytest.raises(ValueError, match="did you mean yarn"):
        to_rope_parameters("yarm", train_len=32, head_dim=16)
    with pytest.raises(ValueError, match="unknown hyperparameter.*factor"):
        to_rope_parameters("yarn", train_len=32, head_dim=16, factor=4)
    with pytest.raises(ValueError, match="'scale' must be a number ≥ 1"):
        to_rope_parameters("pi", train_len=32, head_dim=16, scale=0.5)
    with pytest.raises(UnsupportedError, match="'n_hat'"):
        to_rope_parameters("longrope", train_len=32, head_dim=16, n_hat=4)
    with pytest.raises(ValueError, match="'train_len' must be a positive int"):
        to_rope_parameters("yarn", train_len=0, head_dim=16)
    with pytest.raises(ValueError, match=r"to_rope_parameters\('longrope'\): 'head_dim' is required"):
        to_rope_parameters("longrope", train_len=32)
    with pytest.raises(ValueError, match=r"to_rope_parameters\('yarn'\): 'train_len' is required"):
        to_rope_parameters("yarn")


def test_rope_parameters_without_dimensions_where_unused() -> None:
    assert to_rope_parameters("pi", scale=4) == {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0}
    assert to_rope_parameters("dynamic_ntk", base=5e5) == {"rope_type": "dynamic", "rope_theta": 5e5, "factor": 4.0}
