"""The run specification: one method, its hyperparameters (the user's and the protocol's), a preset and a seed.

A :class:`RunSpec` is built once, validates everything before any work, and is passed down: training, the
zero-shot scale policy, evaluation, the notebook's figures and the result's key all read it, so the model a
notebook plots is the model whose numbers are stored. The path of a hyperparameter such as ``scale`` from the
command line to the rotation is: ``posenc run --hp scale=8`` → :meth:`RunSpec.create` (``hparams``) →
:meth:`RunSpec.pe` → :func:`posenc.pe.build` → the method's registry spec → the RoPE scaling function.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from posenc import paths
from posenc.experiment.presets import PROTOCOL_VERSION, Arch, Preset, get_preset, resolve_device
from posenc.experiment.train import COMPILE_CHOICES
from posenc.model import ModelConfig, Transformer
from posenc.pe import base as pe_base

__all__ = ["RunSpec", "check_notebook_parameters", "protocol_hparams", "method_traits", "config_hash", "BASELINES"]

#: Baselines shown in every figure: one absolute, one rotary, one bias, and none.
BASELINES: tuple[str, ...] = ("sinusoidal", "rope", "alibi", "nope")


def config_hash(obj: Any, n: int = 20) -> str:
    """A short, stable hash of a JSON-able configuration."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def protocol_hparams(method: str, p: Preset) -> dict[str, Any]:
    """Hyperparameters the protocol sets so that a method's own protocol survives at this model's size.

    * ``randomized``: Ruoss et al.'s released code samples ordered positions at test time too.
    * ``irope``: Llama 4 makes every 4th layer NoPE; a model with fewer layers makes its last layer NoPE.
    * ``ssmax``: one learned s per layer and head, as in the paper.
    * ``entropy_abf``: the authors' code leaves the first 2 of LLaMA 2's 32 layers unscaled; the same
      fraction of this model's layers (none at 2 layers) is left unscaled, so some layers are scaled.
    * ``swan_gpt``, ``rnope_swa``: one NoPE global layer per group of 4 layers; a model with fewer layers makes
      the whole stack one group (at least 2 layers long), so from 2 layers it has both kinds, and a one-layer
      model keeps the group's first layer (NoPE for SWAN-GPT, sliding-window RoPE for RNoPE-SWA) rather than
      degenerating into plain NoPE.
    * ``nope_headscale``, ``path``: parameters per layer (and head), as in the released code.
    * ``local_global_rope``: Gemma 3 makes every 6th layer global; a model with fewer layers makes its last layer
      global (and the others local).
    """
    table: dict[str, dict[str, Any]] = {
        "randomized": {"sample_at_eval": True},
        "irope": {"nope_every": min(4, p.n_layer)},
        "swan_gpt": {"nope_every": max(2, min(4, p.n_layer))},
        "rnope_swa": {"nope_every": max(2, min(4, p.n_layer))},
        "ssmax": {"num_layers": p.n_layer},
        "nope_headscale": {"num_layers": p.n_layer},
        "path": {"num_layers": p.n_layer},
        "entropy_abf": {"unscaled_layers": int(p.n_layer * 2 / 32)},
        "local_global_rope": {"global_every": min(6, p.n_layer)},
    }
    return dict(table.get(method, {}))


@dataclass(frozen=True)
class MethodTraits:
    """What the experiment needs to know about a registered method."""

    applies_to: str | None
    #: ``per_length``: zero-shot at length l uses scale = l/L; ``fixed``: the method adapts to the length itself
    #: and keeps its configured factor; None: no extension factor.
    scale_policy: str | None
    hyperparameters: dict[str, Any]


def method_traits(method: str) -> MethodTraits:
    """Traits of a registered method (``ValueError`` naming the id when unknown)."""
    s = pe_base.spec(method)
    return MethodTraits(s.applies_to, s.scale_policy, dict(s.hyperparameters))


def _card_implementation(method: str) -> None:
    """When the card exists but states no implementation, say so (with the card's reason) before anything."""
    from posenc.cards import TaxonomyError, card_path, load_card  # the card store is torch-free and light

    try:
        if not card_path(method).exists():
            return
        card = load_card(method)
    except TaxonomyError:
        raise
    if not card.get("implementation"):
        note = card.get("implementation_note") or "the card states no implementation"
        raise ValueError(f"{method}: no implementation to run ({paths.relative(card_path(method))}: "
                         f"'implementation' is null: {note})")


def check_notebook_parameters(*, method: Any, preset: Any, seeds: Any, device: Any, hparams: Any, overrides: Any,
                   results_dir: Any, force: Any) -> list[int]:
    """Check the types of the notebook's parameters (as papermill injects them, e.g. ``-p seeds abc``) before any
    work, each error naming the parameter; returns the seeds to run (the preset's when ``seeds`` is None).
    The values themselves are then checked by :meth:`RunSpec.create`."""

    def bad(name: str, want: str, got: Any) -> ValueError:
        return ValueError(f"notebook parameter '{name}' must be {want}, got {got!r} ({type(got).__name__})")

    if not isinstance(method, str) or not method:
        raise bad("method", "a registry id (a non-empty string)", method)
    if not isinstance(preset, str):
        raise bad("preset", "a preset name (a string)", preset)
    if not isinstance(device, str):
        raise bad("device", "auto, cpu or cuda[:N] (a string)", device)
    for name, value in (("hparams", hparams), ("overrides", overrides)):
        if not isinstance(value, Mapping):
            raise bad(name, "a mapping of names to values (e.g. {})", value)
    if results_dir is not None and not isinstance(results_dir, (str, os.PathLike)):
        raise bad("results_dir", "None or a folder (a string)", results_dir)
    if not isinstance(force, bool):
        raise bad("force", "True or False", force)
    if seeds is None:
        return list(get_preset(preset, **dict(overrides)).seeds)
    if (not isinstance(seeds, (list, tuple)) or not seeds or len(set(map(repr, seeds))) != len(seeds)
            or any(not isinstance(x, int) or isinstance(x, bool) or x < 0 for x in seeds)):
        raise bad("seeds", "None or a list of distinct ints >= 0 (e.g. [0, 1])", seeds)
    return list(seeds)


@dataclass(frozen=True)
class RunSpec:
    """One (method, hyperparameters, preset, seed); build with :meth:`create`, which validates everything."""

    method: str
    preset: Preset
    seed: int
    #: Hyperparameters passed to the PE: the protocol's, overridden by the user's.
    hparams: Mapping[str, Any]
    #: The user's own hyperparameters and preset overrides (both empty for the canonical run).
    user_hparams: Mapping[str, Any] = field(default_factory=dict)
    overrides: Mapping[str, Any] = field(default_factory=dict)
    device: str = "auto"
    traits: MethodTraits | None = None
    #: ``torch.compile`` for training: ``auto`` (on CUDA only), ``on`` or ``off``. Like the device, an
    #: execution choice: it is not part of the configuration key, and each result records what happened.
    compile: str = "auto"

    @classmethod
    def create(cls, method: str, preset: str | Preset = "smoke", seed: int = 0, *,
               hparams: Mapping[str, Any] | None = None, overrides: Mapping[str, Any] | None = None,
               device: str = "auto", compile: str = "auto") -> RunSpec:
        """Validate every parameter, naming it, before any work; returns the resolved spec."""
        if not isinstance(method, str) or not method:
            raise ValueError(f"'method' must be a registry id (a non-empty string), got {method!r}")
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"'seed' must be an int >= 0, got {seed!r}")
        for name, value in (("hparams", hparams), ("overrides", overrides)):
            if value is not None and not isinstance(value, Mapping):
                raise ValueError(f"'{name}' must be a mapping of names to values, got {value!r}")
        if not isinstance(device, str):
            raise ValueError(f"'device' must be auto, cpu or cuda[:N], got {device!r}")
        if compile not in COMPILE_CHOICES:
            raise ValueError(f"'compile' must be one of {', '.join(COMPILE_CHOICES)}, got {compile!r}")
        p = get_preset(preset, **dict(overrides or {}))
        resolve_device(device)
        _card_implementation(method)
        traits = method_traits(method)
        user = dict(hparams or {})
        hp = {**protocol_hparams(method, p), **user}
        spec = cls(method, p, seed, hp, user, dict(overrides or {}), device, traits, compile)
        spec.pe()  # building once checks every hyperparameter's name and value
        if traits.applies_to:
            spec.pe(spec.finetune_scale())
        return spec

    # ------------------------------------------------------------------ identity
    @property
    def is_canonical(self) -> bool:
        """True for the preset's own configuration: no overrides and no user hyperparameters."""
        return not self.user_hparams and not self.overrides

    @property
    def tag(self) -> str:
        """'' for the canonical run, else ``@`` + a hash of the overrides and hyperparameters: a non-default
        run never writes where the canonical one lives."""
        if self.is_canonical:
            return ""
        return "@" + config_hash({"hparams": dict(self.user_hparams), "overrides": dict(self.overrides)}, 8)

    @property
    def key(self) -> str:
        """The configuration key: method, resolved hyperparameters, every preset field, the protocol version.
        (The seed is part of the result's name, not of this key.)"""
        return config_hash({"method": self.method, "hparams": dict(self.hparams), "preset": self.preset.fields(),
                            "protocol": PROTOCOL_VERSION})

    @property
    def name(self) -> str:
        """File stem shared by the method's notebook and marker: ``<method><tag>``."""
        return f"{self.method}{self.tag}"

    def result_path(self, results_dir: str | Path | None = None, seed: int | None = None) -> Path:
        s = self.seed if seed is None else seed
        return paths.results_dir(results_dir) / self.preset.name / f"{self.name}-seed{s}.json"

    def with_seed(self, seed: int) -> RunSpec:
        return dataclasses.replace(self, seed=seed)

    def describe(self) -> dict[str, Any]:
        return {"method": self.method, "preset": self.preset.name, "seed": self.seed, "hparams": dict(self.hparams),
                "user_hparams": dict(self.user_hparams), "overrides": dict(self.overrides), "key": self.key,
                "tag": self.tag}

    # ------------------------------------------------------------------ building
    @property
    def applies_to(self) -> str | None:
        assert self.traits is not None
        return self.traits.applies_to

    def finetune_scale(self) -> float | None:
        """The extension factor of the fine-tune (the user's ``scale`` when given, else the fine-tune's
        length factor); None for methods without one."""
        assert self.traits is not None
        if self.traits.scale_policy is None:
            return None
        return float(self.user_hparams.get("scale", self.preset.finetune_factor))

    def scale_for(self, length: int) -> float | None:
        """The zero-shot policy: the extension factor used at evaluation length ``length`` (one place).

        ``per_length`` (static scalings: PI, NTK, YaRN ...): s = max(1, l/L), the paper's setting for a model
        run at l, unless the user fixed ``scale``; ``fixed`` (dynamic NTK, CLEX ...): the configured factor,
        since the method adapts to l itself; None: no factor.
        """
        assert self.traits is not None
        if self.traits.scale_policy is None:
            return None
        if "scale" in self.user_hparams or self.traits.scale_policy == "fixed":
            return self.finetune_scale()
        return max(1.0, length / self.preset.train_len)

    def pe(self, scale: float | None = None, arch: Arch | None = None) -> pe_base.PositionalEncoding:
        """The method's PE for ``arch`` (default: the language model's), at ``scale`` when given."""
        hp = dict(self.hparams)
        if scale is not None:
            if not math.isfinite(scale):
                raise ValueError(f"{self.method}: scale must be finite, got {scale!r}")
            hp["scale"] = scale
        a = arch or self.preset.arch()
        return pe_base.build(self.method, head_dim=a.head_dim, num_heads=a.n_head, train_len=self.preset.train_len,
                             **hp)

    def model(self, scale: float | None = None, arch: Arch | None = None) -> Transformer:
        """A fresh model with this method's PE (weights initialised from the current torch seed)."""
        a = arch or self.preset.arch()
        return Transformer(ModelConfig(n_layer=a.n_layer, n_head=a.n_head, d_model=a.d_model), self.pe(scale, a))
