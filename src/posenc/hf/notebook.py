"""Execute ``notebooks/pretrained.ipynb`` with papermill, as the book's worked example and for the tests.

The executed copy keeps no machine paths: papermill's ``input_path``/``output_path`` are reduced to file names,
and with ``model_dir = None`` the notebook works in a temporary folder and shows paths relative to it.
:func:`absolute_paths` finds any that remain.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from posenc import paths

__all__ = ["TEMPLATE", "EXAMPLE", "EXAMPLE_PARAMETERS", "execute", "absolute_paths"]

TEMPLATE = Path("notebooks") / "pretrained.ipynb"
#: Where the book's worked example is committed.
EXAMPLE = Path("book") / "runs" / "pretrained_example.ipynb"
#: The worked example: YaRN (s = 4) on a tiny random Llama with a 64-token context, at 4, 8 and 16× that.
EXAMPLE_PARAMETERS: dict[str, Any] = {"model_dir": None, "method": "yarn", "hparams": {"scale": 4},
                                      "lengths": [256, 512, 1024], "passkey": True, "passkey_trials": 2,
                                      "device": "cpu"}

_ABSOLUTE = re.compile(r"(?<![\w.:/])/(?:tmp|home|root|Users|work|var|private)/[^\s\"']*")


def execute(out: str | Path, parameters: dict[str, Any] | None = None, *, template: str | Path | None = None
            ) -> Path:
    """Run the template with ``parameters`` (default :data:`EXAMPLE_PARAMETERS`) into ``out``, strip machine
    paths from papermill's metadata, and return ``out``. Raises papermill's error when a cell fails."""
    import nbformat  # lazy: only when notebooks run
    import papermill as pm

    from posenc.experiment.sweep import _kernel_name  # the kernel `posenc run` uses (this interpreter's)

    root = paths.find_root()
    src = Path(template) if template is not None else root / TEMPLATE
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    params = dict(EXAMPLE_PARAMETERS if parameters is None else parameters)
    t0 = time.perf_counter()
    pm.execute_notebook(str(src), str(out), parameters=params, kernel_name=_kernel_name(), cwd=str(root),
                        progress_bar=False)
    nb = nbformat.read(out, as_version=4)
    pm_meta = nb.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):
        if pm_meta.get(key):
            pm_meta[key] = Path(pm_meta[key]).name
    nb.metadata["posenc"] = {"template": TEMPLATE.as_posix(), "parameters": params,
                             "wall_time_s": round(time.perf_counter() - t0, 1)}
    nbformat.write(nb, out)
    return out


def absolute_paths(notebook: str | Path) -> list[str]:
    """Absolute file-system paths found anywhere in a notebook file (sources, outputs, metadata)."""
    return sorted(set(_ABSOLUTE.findall(Path(notebook).read_text(encoding="utf-8"))))
