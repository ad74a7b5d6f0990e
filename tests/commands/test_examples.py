"""Every example in the `--help` texts (src/posenc/commands/) and in the README's tour runs and succeeds.

Each runs in a copy of the repository (``POSENC_ROOT``), through the shell, as a user types it. Two kinds are
changed so that the test stays fast, and say so: `posenc run` examples get ``--dry-run`` (every parameter is
still validated; tests/test_notebooks.py executes the smoke-preset notebook for real), and `posenc book` gets
``--no-build`` (tests/book/test_build.py runs the whole build). `posenc leaderboard` reads results written here.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from posenc.cli import make_parser

ROOT = Path(__file__).resolve().parents[2]


def _book_fixtures() -> Any:
    """tests/book/conftest.py as a module (its result writer): test folders are not one importable package."""
    spec = importlib.util.spec_from_file_location("posenc_book_test_fixtures", ROOT / "tests" / "book" / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def help_examples() -> list[str]:
    """The ``examples:`` lines of every subcommand's --help."""
    parser = make_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    out = []
    for name, p in sub.choices.items():
        text = p.format_help()
        assert "examples:" in text, f"posenc {name} --help has no examples"
        block = text.split("examples:", 1)[1]
        out += [ln.strip() for ln in block.splitlines() if ln.strip().startswith("posenc ")]
        assert "``" not in text, f"posenc {name} --help shows raw RST literals"
    return out


def readme_tour() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("## A 30-second tour", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return [ln.split("  #", 1)[0].strip() for ln in block.splitlines() if ln.strip()]


def test_readme_says_how_to_activate_the_venv() -> None:
    text = (ROOT / "README.md").read_text()
    assert "source .venv/bin/activate" in text
    tour = text.split("## A 30-second tour", 1)[1].split("```", 1)[0]
    assert "activated" in tour


def _param(example: str) -> object:
    # Examples that import torch and papermill or generate the book take seconds each: slow-marked.
    heavy = example.split()[1] in ("run", "book", "leaderboard", "eval-hf")
    return pytest.param(example, marks=pytest.mark.slow) if heavy else example


EXAMPLES = [_param(e) for e in sorted(set(help_examples()) | set(readme_tour()))]


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("checkout")
    for rel in ("taxonomy", "notebooks", "src/posenc/pe", "book"):  # book/runs: cards name their notebooks
        shutil.copytree(ROOT / rel, root / rel, ignore=shutil.ignore_patterns("generated", "smoke", "__pycache__"))
    for rel in ("references.bib", "CITATION.cff", "pyproject.toml", "_config.yml"):
        shutil.copy(ROOT / rel, root / rel)
    for preset in ("cpu", "smoke"):
        for method in ("rope", "alibi", "nope", "sinusoidal"):
            for seed in (0, 1):
                _book_fixtures().write_result(root, method, seed, preset=preset)
    return root


@pytest.mark.parametrize("example", EXAMPLES)
def test_example_runs(example: str, checkout: Path, tmp_path: Path) -> None:
    words = shlex.split(example.split(" > ", 1)[0])
    assert words[0] == "posenc", example
    command = example
    if words[1] == "run" and "--dry-run" not in words:
        command = example.replace(" > ", " --dry-run > ") if " > " in example else example + " --dry-run"
    if words[1] == "book" and "--no-build" not in words:
        command = example + " --no-build"
    if words[1] == "eval-hf":  # the example's checkpoint folder: a tiny random model of the same family
        from posenc.hf.tiny import save_tiny_model

        save_tiny_model(tmp_path / words[2])
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "POSENC_ROOT": str(checkout), "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
           "POSENC_CACHE": str(tmp_path / "cache")}
    src = str(ROOT / "src")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))
    proc = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    if words[1] in ("list", "query"):
        assert len(re.findall(r"\n", proc.stdout)) >= 3, f"{command} found nothing:\n{proc.stdout}"
