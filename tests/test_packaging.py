"""The wheel and the Colab path: what `pip install posenc` gives someone who downloads a method's notebook.

The slow test builds the wheel from a copy of the checkout's files, installs it into a fresh virtual environment
outside the checkout (torch pinned by constraints-cpu.txt, so no CUDA wheels), and runs the downloaded alibi
notebook there with papermill at the smoke preset: the setup cell must be a no-op, and the card's claims must be
judged from the cards bundled in the wheel (not "the card states no claims").
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _source_copy(dest: Path) -> Path:
    """The files a fresh clone has (tracked and new, not ignored), copied to ``dest``."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                         capture_output=True, check=True).stdout.decode()
    for rel in filter(None, out.split("\0")):
        src = ROOT / rel
        if src.is_file() and not rel.startswith(("book/runs/", "results/")):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def _build_wheel(tmp: Path) -> Path:
    src = _source_copy(tmp / "src")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(src),
                    "-w", str(tmp / "wheels")], check=True, capture_output=True, text=True)
    return next((tmp / "wheels").glob("posenc-*.whl"))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build_wheel(tmp_path_factory.mktemp("wheel"))


def test_wheel_bundles_cards_bibliography_and_notebook(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    n_cards = len(list((ROOT / "taxonomy" / "methods").glob("*.yaml")))
    assert sum(n.startswith("posenc/_bundle/taxonomy/methods/") for n in names) == n_cards
    for rel in ("taxonomy/categories.yaml", "references.bib", "CITATION.cff", "LICENSE",
                "notebooks/extrapolation.ipynb"):
        assert f"posenc/_bundle/{rel}" in names, rel
    assert "posenc/book/templates/method.md.j2" in names
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    torch_reqs = [ln for ln in meta.splitlines() if ln.startswith("Requires-Dist: torch")]
    assert torch_reqs and all(ln.split(";")[0] == "Requires-Dist: torch>=2.4" for ln in torch_reqs), torch_reqs


def test_notebook_template_has_no_machine_path_and_installs_itself() -> None:
    nb = json.loads((ROOT / "notebooks" / "extrapolation.ipynb").read_text())
    params = "".join(nb["cells"][1]["source"])
    assert 'device = "auto"' in params and "results_dir = None" in params and "/work" not in params
    setup = "".join(nb["cells"][2]["source"])
    assert 'find_spec("posenc") is None' in setup and "posenc_commit" in setup


@pytest.mark.slow
def test_colab_path_from_an_installed_wheel_judges_the_claims(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py, pip = venv / "bin" / "python", [str(venv / "bin" / "python"), "-m", "pip"]
    env = {k: v for k, v in os.environ.items() if k not in ("POSENC_ROOT", "PYTHONPATH", "POSENC_RESULTS",
                                                            "VIRTUAL_ENV", "JUPYTER_PATH")}
    install = subprocess.run([*pip, "install", "-q", "-c", str(ROOT / "constraints-cpu.txt"), f"{wheel}[run]"],
                             capture_output=True, text=True, env=env)
    assert install.returncode == 0, install.stderr[-3000:]
    work = tmp_path / "colab"  # outside the checkout: the cards can only come from the wheel
    work.mkdir()
    where = subprocess.run([str(py), "-c", "from posenc import paths, cards; print(paths.find_root()); "
                            "print(len(cards.find_card('alibi').claims))"], cwd=work, capture_output=True, text=True,
                           env=env)
    assert where.returncode == 0, where.stderr
    root, n_claims = where.stdout.split()
    assert root.endswith("posenc/_bundle") and int(n_claims) > 0
    # The notebook a reader downloads from the alibi page: the executed one the book publishes, else (nothing
    # published in this checkout) the template the sweep executes, which has the same cells.
    from posenc import book

    published = book.load_context(ROOT).notebook("alibi")
    notebook = ROOT / published if published else ROOT / "notebooks" / "extrapolation.ipynb"
    shutil.copy(notebook, work / "alibi.ipynb")
    run = subprocess.run([str(venv / "bin" / "papermill"), "alibi.ipynb", "out.ipynb", "-k", "python3",
                          "-p", "method", "alibi", "-p", "preset", "smoke", "-p", "results_dir", str(work / "results"),
                          "--no-progress-bar"], cwd=work, capture_output=True, text=True,
                         env={**env, "POSENC_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-4000:]
    out = json.loads((work / "out.ipynb").read_text())
    text = "\n".join("".join(o.get("text", "")) + "".join((o.get("data") or {}).get("text/plain", ""))
                     for c in out["cells"] if c["cell_type"] == "code" for o in c.get("outputs", []))
    assert "the card states no claims" not in text
    judged = [v for v in ("reproduced", "not reproduced", "inconclusive", "not tested") if v in text]
    assert judged, text[-3000:]
    assert (work / "results" / "smoke" / "alibi-seed0.json").is_file()
    assert str(ROOT) not in (work / "out.ipynb").read_text()  # nothing from the checkout leaked in
