"""The training loop's execution choices: torch.compile with a fallback that says so, and determinism that is
relaxed (and recorded) only for a kernel that has no deterministic implementation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from posenc.experiment import train as TR
from posenc.experiment.presets import get_preset
from posenc.experiment.spec import RunSpec

P = get_preset("smoke", steps=4, log_every=1, warmup=1)
CPU = torch.device("cpu")


def _model(method: str = "randomized") -> nn.Module:
    torch.manual_seed(0)
    return RunSpec.create(method, P, 0, device="cpu").model()


def _sample(g: torch.Generator) -> tuple[Tensor, Tensor]:
    x = torch.randint(0, 256, (2, 16), generator=g)
    return x, torch.roll(x, -1, dims=1)


def _train(model: nn.Module, **kw: Any) -> TR.TrainLog:
    torch.manual_seed(1)
    return TR.train_loop(model, _sample, steps=P.steps, lr=P.lr, p=P, device=CPU,
                         generator=torch.Generator().manual_seed(0), label="test", **kw)


def _weights(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_compile_is_on_by_default_on_cuda_only() -> None:
    assert not TR.use_compile("auto", CPU) and TR.use_compile("auto", torch.device("cuda"))
    assert TR.use_compile("on", CPU) and not TR.use_compile("off", torch.device("cuda"))
    with pytest.raises(ValueError, match="'compile' must be one of auto, on, off, got 'fast'"):
        TR.use_compile("fast", CPU)


def test_a_model_that_fails_to_compile_trains_eagerly_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """The failed first step is retried from the same batch and random state: the run equals an eager one.
    (The randomized PE draws positions from the global RNG, which the failed attempt also consumed.)"""
    eager = _model()
    ref = _train(eager)
    assert ref.compile == "off"

    def failing_compile(model: nn.Module, **_: Any) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            model(*args, **kwargs)  # tracing ran the forward (and drew positions) before failing
            raise RuntimeError("backend compiler failed\nC++ compile error: no compiler found")
        return call

    monkeypatch.setattr(TR.torch, "compile", failing_compile)
    model = _model()
    log = _train(model, compile=True)
    assert log.compile == "failed: RuntimeError: backend compiler failed"
    assert log.loss == ref.loss
    assert all(torch.equal(a, b) for a, b in zip(_weights(model).values(), _weights(eager).values(), strict=True))


class _Alerting(nn.Module):
    """A model whose first forward meets a kernel without a deterministic implementation: it raises as PyTorch
    does under strict deterministic algorithms, and runs once they are relaxed to warn-only."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.pe = inner, inner.pe

    def forward(self, x: Tensor) -> Any:
        if torch.are_deterministic_algorithms_enabled() and not torch.is_deterministic_algorithms_warn_only_enabled():
            torch.rand(3)  # the forward got that far before the kernel
            raise RuntimeError("scatter_add_cuda_kernel does not have a deterministic implementation, but you set "
                               "'torch.use_deterministic_algorithms(True)'.")
        return self.inner(x)


def test_a_kernel_without_a_deterministic_version_is_allowed_and_recorded() -> None:
    ref = _train(_model())
    det = TR.Determinism(strict=True)
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        log = _train(_Alerting(_model()), det=det)
    finally:
        torch.use_deterministic_algorithms(prev)
    assert det.info == {"bitwise_reproducible": False, "nondeterministic": ["scatter_add_cuda_kernel"]}
    assert log.loss == ref.loss  # the retried step drew the same positions


def test_an_error_that_eager_training_also_meets_is_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken(_Alerting):
        def forward(self, x: Tensor) -> Any:
            raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        _train(Broken(_model()), det=TR.Determinism(strict=True))
    monkeypatch.setattr(TR.torch, "compile", lambda model, **_: model)
    with pytest.raises(RuntimeError, match="shape mismatch"):  # the eager retry fails the same way
        _train(Broken(_model()), compile=True)
