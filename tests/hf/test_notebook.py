"""notebooks/pretrained.ipynb: the committed worked example is an execution of the current template, has outputs
and no machine paths; executing the template with papermill works (slow)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from posenc.hf.notebook import EXAMPLE, EXAMPLE_PARAMETERS, TEMPLATE, absolute_paths, execute

ROOT = Path(__file__).resolve().parents[2]


def _sources(nb: nbformat.NotebookNode) -> list[str]:
    """Cell sources without papermill's injected-parameters cell."""
    return [c.source for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])]


def _outputs(nb: nbformat.NotebookNode) -> tuple[int, list[str], str]:
    pngs, errors, text = 0, [], []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            pngs += "image/png" in out.get("data", {})
            text.append(out.get("text", ""))
            if out.get("output_type") == "error":
                errors.append(f"{out['ename']}: {out['evalue']}")
    return pngs, errors, "".join(text)


def test_the_committed_example_is_the_current_template_executed() -> None:
    template = nbformat.read(ROOT / TEMPLATE, as_version=4)
    example = nbformat.read(ROOT / EXAMPLE, as_version=4)
    assert _sources(example) == _sources(template), "re-run scripts/hf_pretrained_example.py"
    assert all(not c.get("outputs") for c in template.cells if c.cell_type == "code")  # the template has none
    assert "parameters" in template.cells[1].metadata["tags"]
    pngs, errors, text = _outputs(example)
    assert pngs == 1 and not errors and "memory estimate" in text and "1024 tokens (16x): ppl" in text
    assert example.metadata["papermill"]["parameters"] == EXAMPLE_PARAMETERS
    assert example.metadata["papermill"]["input_path"] == "pretrained.ipynb"
    assert absolute_paths(ROOT / EXAMPLE) == []


def test_absolute_paths_are_found(tmp_path: Path) -> None:
    nb = tmp_path / "x.ipynb"
    nb.write_text('{"text": "wrote /tmp/abc/model.json and results/hf/x.json, see https://example.org/tmp/x"}')
    assert absolute_paths(nb) == ["/tmp/abc/model.json"]


@pytest.mark.slow
def test_papermill_executes_the_template(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSENC_CACHE", str(tmp_path / "cache"))
    out = execute(tmp_path / "run.ipynb", {**EXAMPLE_PARAMETERS, "lengths": [256, 320], "passkey_trials": 1,
                                           "depths": [0.5]})
    nb = nbformat.read(out, as_version=4)
    pngs, errors, text = _outputs(nb)
    assert pngs == 1 and not errors and "320 tokens (5x): ppl" in text
    assert nb.metadata["papermill"]["output_path"] == "run.ipynb"
    assert absolute_paths(out) == []
