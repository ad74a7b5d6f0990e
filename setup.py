"""The one build step pyproject.toml cannot state: ship the cards, the bibliography, CITATION.cff, the licence and
the notebook template inside the wheel, under ``posenc/_bundle`` (copied at build time, never kept twice in git).

An installed posenc (e.g. on Colab) then finds them through :func:`posenc.paths.find_root`, so a notebook run
outside a checkout judges the card's claims against the same cards and bibliography. Editable installs read the
checkout itself and get no copy.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
#: Repository files bundled into the wheel (relative to the repository root).
BUNDLE = ("taxonomy/categories.yaml", "taxonomy/methods", "references.bib", "CITATION.cff", "LICENSE",
          "notebooks/extrapolation.ipynb")


class BuildPyWithBundle(build_py):
    """``build_py`` that also copies :data:`BUNDLE` to ``<build_lib>/posenc/_bundle``."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        dest = Path(self.build_lib) / "posenc" / "_bundle"
        for rel in BUNDLE:
            src, out = ROOT / rel, dest / rel
            if not src.exists():
                raise FileNotFoundError(f"{rel}: missing from the source tree; the wheel must bundle it")
            out.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(src, out)


setup(cmdclass={"build_py": BuildPyWithBundle})
