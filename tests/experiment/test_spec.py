"""RunSpec: everything validated before any work, the zero-shot policy in one place, keys that never collide."""

from __future__ import annotations

import pytest
import torch

from posenc.experiment.presets import get_preset
from posenc.experiment.spec import RunSpec, protocol_hparams
from posenc.pe import base as pe_base


@pytest.mark.parametrize(("kwargs", "named"), [
    ({"method": "ropee"}, "unknown positional encoding id 'ropee'"),
    ({"method": 42}, "'method'"),
    ({"method": "rope", "seed": -1}, "'seed'"),
    ({"method": "rope", "seed": "abc"}, "'seed'"),
    ({"method": "rope", "preset": "huge"}, "unknown preset 'huge'"),
    ({"method": "rope", "device": "tpu"}, "unknown device 'tpu'"),
    ({"method": "rope", "hparams": {"base": -1.0}}, "'base'"),
    ({"method": "rope", "hparams": {"bse": 10.0}}, "bse"),
    ({"method": "rope", "hparams": ["scale"]}, "'hparams'"),
    ({"method": "rope", "overrides": {"steps": 0}}, "'steps'"),
    ({"method": "rope", "overrides": {"stepz": 3}}, "stepz"),
    ({"method": "rope", "overrides": {"lr": float("nan")}}, "'lr'"),
    ({"method": "rope", "overrides": {"eval_bytes": 1000}}, "'eval_bytes'"),
    ({"method": "rope", "overrides": {"seeds": [0, 0]}}, "'seeds'"),
    ({"method": "yarn", "hparams": {"scale": 0.5}}, "'scale'"),
    ({"method": "rope", "compile": "yes"}, "'compile' must be one of auto, on, off"),
])
def test_bad_parameters_are_named_before_any_work(kwargs: dict, named: str) -> None:
    with pytest.raises(ValueError, match=named.replace("(", r"\(").replace("[", r"\[")):
        RunSpec.create(**{"preset": "smoke", **kwargs})


def test_a_card_without_implementation_says_why() -> None:
    with pytest.raises(ValueError, match="infini_attention: no implementation to run .*'implementation' is null"):
        RunSpec.create("infini_attention", "smoke")


def test_canonical_and_custom_runs_never_share_a_file() -> None:
    a = RunSpec.create("yarn", "smoke")
    b = RunSpec.create("yarn", "smoke", hparams={"scale": 8})
    c = RunSpec.create("yarn", "smoke", overrides={"steps": 5})
    assert a.is_canonical and a.tag == "" and a.result_path().name == "yarn-seed0.json"
    assert b.tag.startswith("@") and c.tag.startswith("@") and len({a.tag, b.tag, c.tag}) == 3
    assert len({a.key, b.key, c.key}) == 3
    assert a.with_seed(2).result_path().name == "yarn-seed2.json" and a.with_seed(2).key == a.key


def test_scale_policy_per_registry_trait() -> None:
    for method in pe_base.available():
        s = RunSpec.create(method, "smoke") if pe_base.spec(method).applies_to is None else None
        if s is not None:
            assert s.scale_for(128) is None or pe_base.spec(method).scale_policy is not None
    yarn = RunSpec.create("yarn", "smoke")  # static: s = l/L at each length, never below 1
    assert pe_base.spec("yarn").scale_policy == "per_length"
    assert (yarn.scale_for(32), yarn.scale_for(128), yarn.finetune_scale()) == (1.0, 4.0, 4.0)
    dyn = RunSpec.create("dynamic_ntk", "smoke")  # adapts to the length itself: keeps its factor
    assert pe_base.spec("dynamic_ntk").scale_policy == "fixed" and dyn.scale_for(128) == dyn.finetune_scale()
    fixed = RunSpec.create("yarn", "smoke", hparams={"scale": 8})  # the user's scale is kept everywhere
    assert fixed.scale_for(32) == fixed.scale_for(128) == fixed.finetune_scale() == 8.0
    assert RunSpec.create("abf", "smoke").scale_for(128) is None  # no extension factor


def test_scale_travels_from_the_spec_to_the_rotation() -> None:
    s = RunSpec.create("yarn", "smoke", hparams={"scale": 8})
    pe = s.pe(s.finetune_scale())
    ref = pe_base.build("yarn", head_dim=s.preset.head_dim, num_heads=s.preset.n_head, train_len=s.preset.train_len,
                        scale=8.0)
    assert pe.inv_freq(256).tolist() == ref.inv_freq(256).tolist()
    assert pe.attention_scaling(256) == ref.attention_scaling(256) != 1.0


def test_protocol_hyperparameters_scale_with_the_model() -> None:
    cpu = get_preset("cpu")
    assert protocol_hparams("entropy_abf", cpu)["unscaled_layers"] < cpu.n_layer  # some layers are scaled
    assert protocol_hparams("irope", cpu)["nope_every"] <= cpu.n_layer
    assert protocol_hparams("ssmax", cpu) == {"num_layers": cpu.n_layer}
    assert RunSpec.create("ssmax", "cpu").hparams["num_layers"] == 2
    for method in ("swan_gpt", "rnope_swa"):  # both layer kinds from 2 layers; never all NoPE
        for name, n_global in (("smoke", {"swan_gpt": 1, "rnope_swa": 0}), ("cpu", {"swan_gpt": 1, "rnope_swa": 1})):
            p = get_preset(name)
            pe = RunSpec.create(method, name).pe()
            assert sum(pe.is_nope(layer) for layer in range(p.n_layer)) == n_global[method]
    for method in ("nope_headscale", "path"):
        assert protocol_hparams(method, cpu) == {"num_layers": cpu.n_layer}


def test_a_configuration_that_makes_two_methods_identical_is_an_error() -> None:
    from posenc.experiment.checks import check_distinct, relatives

    assert "abf" in relatives("entropy_abf")
    check_distinct(RunSpec.create("entropy_abf", "cpu"))  # the protocol leaves layers to scale
    msg = "entropy_abf: .* same positions, embeddings, attention logits and weights as 'abf'"
    with pytest.raises(ValueError, match=msg):
        check_distinct(RunSpec.create("entropy_abf", "cpu", hparams={"unscaled_layers": 2}))


def test_a_pe_that_replaces_the_softmax_is_told_apart_by_its_weights() -> None:
    """Stick-breaking attention has NoPE's logits; only its weights differ, and the check compares them."""
    from posenc.experiment import checks

    p = get_preset("smoke")
    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn(1, p.n_head, 8, p.head_dim, generator=g) for _ in range(2))
    probes = [(q, k, torch.randn(1, 8, p.d_model, generator=g), torch.randint(0, 256, (1, 8), generator=g))]
    sb, nope = RunSpec.create("stick_breaking", "smoke"), RunSpec.create("nope", "smoke")
    mine, theirs = checks._signature(sb, sb, probes), checks._signature(sb, nope, probes)
    assert p.n_layer == 1 and len(mine) == 8  # per mode (eval, train): positions, embedding, logits, weights
    for i in (2, 6):
        torch.testing.assert_close(mine[i], theirs[i])  # the same logits ...
    assert not checks._same(mine, theirs)  # ... told apart by the weights
