"""Experiments: train short, test long, on identical text, over seeds, against controls.

One question, one module:

* :mod:`~posenc.experiment.presets` — the protocol's sizes and budgets (``smoke``, ``cpu``, ``gpu``);
* :mod:`~posenc.experiment.spec` — :class:`RunSpec`, the one specification passed down (method, hyperparameters,
  preset, seed) and the zero-shot scale policy;
* :mod:`~posenc.experiment.train` — optimiser, schedule, the device-side loop, checkpoints;
* :mod:`~posenc.experiment.evaluate` — language modelling on identical text, loss against position, tasks;
* :mod:`~posenc.experiment.runner` — one method and seed end to end (variants, controls, tasks);
* :mod:`~posenc.experiment.results` — the typed result record, atomic writes, the one reader, completion markers;
* :mod:`~posenc.experiment.stats` and :mod:`~posenc.experiment.aggregate` — intervals over seeds and examples;
* :mod:`~posenc.experiment.claims` — the claims ledger (one test per distinct claim);
* :mod:`~posenc.experiment.leaderboard`, :mod:`~posenc.experiment.plots` — tables and figures;
* :mod:`~posenc.experiment.sweep` — planning and running notebooks (papermill), resumably.
"""

from __future__ import annotations

from posenc.experiment.presets import PRESETS, PROTOCOL_VERSION, Preset, get_preset, resolve_device
from posenc.experiment.results import Result, ResultError, iter_results, read_result, write_json_atomic
from posenc.experiment.runner import load_model, primary_variant, run_seed
from posenc.experiment.spec import BASELINES, RunSpec, check_notebook_parameters, protocol_hparams

__all__ = [
    "BASELINES",
    "PRESETS",
    "PROTOCOL_VERSION",
    "Preset",
    "Result",
    "ResultError",
    "RunSpec",
    "check_notebook_parameters",
    "get_preset",
    "iter_results",
    "load_model",
    "primary_variant",
    "protocol_hparams",
    "read_result",
    "resolve_device",
    "run_seed",
    "write_json_atomic",
]
