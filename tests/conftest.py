"""Shared fixtures."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A copy of the small valid repository in tests/fixtures/repo (three cards, categories, bibliography);
    modules may override it, e.g. to point POSENC_ROOT at it."""
    root = tmp_path / "repo"
    shutil.copytree(FIXTURES / "repo", root)
    return root
