"""The notebook's positional-signal panel draws for every implemented method (registry-driven)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from posenc.experiment import plots as PL  # noqa: E402
from posenc.experiment.spec import RunSpec  # noqa: E402
from posenc.experiment.sweep import implemented_cards  # noqa: E402


@pytest.mark.parametrize("method", implemented_cards())
def test_positional_signal_draws_for_every_method(method: str) -> None:
    # An untrained model of the smoke preset: the panel needs the model's PE, not its training.
    spec = RunSpec.create(method, "smoke")
    fig, ax = plt.subplots()
    try:
        PL.positional_signal(spec, spec.model(), ax=ax)
        assert ax.get_title().startswith(method)
    finally:
        plt.close(fig)


def test_a_learned_table_is_drawn_at_its_own_length_and_says_so() -> None:
    spec = RunSpec.create("learned", "smoke")
    fig, ax = plt.subplots()
    try:
        PL.positional_signal(spec, spec.model(), ax=ax)
        assert f"at the training length ({2 * spec.preset.train_len} tokens raise ValueError)" in ax.get_title()
    finally:
        plt.close(fig)
