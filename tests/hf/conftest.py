"""Skip the Hugging Face integration tests when transformers 5 is absent (it is a test dependency)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

pytest.importorskip("transformers", minversion="5.0")


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """The tiny models' matrices are too small to gain from intra-op threads, and on a shared machine the
    threads' spinning makes a forward tens of times slower; restored after each test."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tokens() -> torch.Tensor:
    """(2, 80) token ids of the tiny models' byte vocabulary (special ids 0..2 excluded)."""
    return torch.randint(3, 259, (2, 80), generator=torch.Generator().manual_seed(0))
