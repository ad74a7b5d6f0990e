"""The interface and the registry (posenc.pe.base): specs, errors, test-only registration, no cycles."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import posenc
from posenc.pe import base
from posenc.pe.base import MethodSpec, PositionalEncoding, build, get_class, hyperparameters, registered, spec

PE_DIR = Path(base.__file__).parent


def test_base_imports_no_family_module() -> None:
    tree = ast.parse((PE_DIR / "base.py").read_text(encoding="utf-8"))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    families = {f"posenc.pe.{p.stem}" for p in PE_DIR.glob("*.py")} - {"posenc.pe.base", "posenc.pe.context"}
    assert not imported & families


def test_every_module_is_under_600_lines() -> None:
    for path in PE_DIR.glob("*.py"):
        assert len(path.read_text(encoding="utf-8").splitlines()) < 600, path.name


def test_spec_is_typed_and_complete() -> None:
    s = spec("yarn")
    assert isinstance(s, MethodSpec) and s.id == "yarn" and s.applies_to == "rope"
    assert s.scale_policy == "per_length" and s.relative and not s.learnable and not s.explicit
    assert spec("cope").explicit and spec("cope").learnable and spec("cope").applies_to is None
    assert spec("nope").cls is PositionalEncoding and get_class("rope").__name__ == "RoPE"
    with pytest.raises(TypeError):
        s.hyperparameters["scale"] = 2.0  # type: ignore[index]  # read-only
    assert hyperparameters("yarn") == dict(s.hyperparameters)


def test_unknown_ids_and_hyperparameters_are_named() -> None:
    with pytest.raises(ValueError, match="did you mean yarn"):
        spec("yran")
    with pytest.raises(ValueError, match="unknown positional encoding id"):
        posenc.build("no_such_pe", head_dim=8, num_heads=2, train_len=8)
    with pytest.raises(ValueError, match=r"yarn: unknown hyperparameter\(s\) sclae"):
        build("yarn", head_dim=8, num_heads=2, train_len=8, sclae=2.0)


def test_head_dim_of_the_wrong_type_is_a_value_error() -> None:
    for pe_id in ("nope", "rope", "yarn", "alibi", "rope_base_scaling_laws"):
        with pytest.raises(ValueError, match="head_dim"):
            posenc.build(pe_id, head_dim="16", num_heads=2, train_len=8)  # type: ignore[arg-type]


def test_registered_adds_and_removes_a_test_only_pe() -> None:
    class Scaled(PositionalEncoding):
        id = "scaled_test_only"
        learnable = True

        def __init__(self, *, head_dim: int, num_heads: int, train_len: int, factor: float = 2.0) -> None:
            super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len)
            self.w = torch.nn.Parameter(torch.ones(1) * factor)

    with registered(Scaled):
        assert hyperparameters("scaled_test_only") == {"factor": 2.0} and spec("scaled_test_only").learnable
        assert posenc.build("scaled_test_only", head_dim=8, num_heads=2, train_len=8).w.item() == 2.0
        with pytest.raises(ValueError, match="already registered"):
            base.register(type("Other", (PositionalEncoding,), {"id": "scaled_test_only"}))
    assert "scaled_test_only" not in posenc.available()
