"""Fault injection for the reliability tests: a small notebook template that kills the whole sweep at a named
stage, and a driver that runs ``posenc run`` in a subprocess the tests can kill or interrupt.

The template has the real template's parameters and results cells (``notebooks/extrapolation.ipynb``), so the
files a run writes are those of a real run; it leaves out the comparisons and figures, which write nothing
the completion logic depends on, and which would make each run take minutes instead of seconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import nbformat

from posenc import paths

#: Tiny runs: two seeds of a 1-layer model, a few steps, no tasks (smoke preset otherwise).
TINY_SET = ["--set", "steps=3", "--set", "task_seeds=[]", "--set", "eval_bytes=128", "--set", "log_every=1"]

#: Where a sweep is killed, in the order a run reaches them (handled by the template or the driver). At
#: ``kernel`` only the notebook's kernel dies (as when it runs out of memory); at the others the whole sweep.
STAGES = ("training", "seed-json", "kernel", "notebook", "marker")

_HOOKS = '''\
# Fault injection (tests only): POSENC_TEST_KILL names the stage at which the whole sweep is killed.
import os
import signal
import time

from posenc import experiment as E
from posenc.experiment import runner as R

STAGE = os.environ.get("POSENC_TEST_KILL", "")


def die():
    """SIGKILL the posenc process that runs this notebook, then this kernel: the sweep dies at once."""
    if STAGE != "kernel":
        os.kill(int(os.environ["JPY_PARENT_PID"]), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


if STAGE == "training":  # in the middle of the first training loop
    _loop = R.train_loop

    def _dying_loop(*args, **kw):
        kw["progress"] = lambda step, loss: die() if step >= 2 else None
        return _loop(*args, **kw)

    R.train_loop = _dying_loop
if STAGE in ("seed-json", "kernel", "pause"):  # just after the first result this run writes
    _write = R.write_json_atomic

    def _write_then_die(path, obj):
        out = _write(path, obj)
        if STAGE == "pause":  # wait there (for an interrupt), never writing another result
            time.sleep(3600)
        die()
        return out

    R.write_json_atomic = _write_then_die

run_seeds = E.check_notebook_parameters(method=method, preset=preset, seeds=seeds, device=device, hparams=hparams,
                                        overrides=overrides, results_dir=results_dir, force=force)
spec = E.RunSpec.create(method, preset, run_seeds[0], hparams=hparams, overrides=overrides, device=device)
'''


def write_template(path: Path) -> Path:
    """The fault template: the real parameters cell, the hooks, the real results cell, then a cell that dies
    at stage ``notebook`` (after the results, while papermill is still running the notebook)."""
    real = nbformat.read(paths.find_root() / "notebooks" / "extrapolation.ipynb", as_version=4)
    params = next(c for c in real.cells if "parameters" in c.metadata.get("tags", []))
    results = next(c for c in real.cells if c.cell_type == "code" and "E.run_seed(" in c.source)
    nb = nbformat.v4.new_notebook()
    nb.metadata = real.metadata
    nb.cells = [nbformat.v4.new_markdown_cell("# Fault template"), params, nbformat.v4.new_code_cell(_HOOKS),
                results, nbformat.v4.new_code_cell('if STAGE == "notebook":\n    die()'),
                nbformat.v4.new_code_cell('print("notebook finished")')]
    nbformat.write(nb, path)
    return path


_DRIVER = '''\
import os, signal, sys
from posenc.cli import main
from posenc.experiment import sweep

if os.environ.get("POSENC_TEST_KILL") == "marker":  # the notebook is written, its marker is not
    def _die(*args, **kw):
        os.kill(os.getpid(), signal.SIGKILL)
    sweep.write_marker = _die
if os.environ.get("POSENC_TEST_IDS"):  # what `--all` runs
    sweep.implemented_cards = lambda: os.environ["POSENC_TEST_IDS"].split(",")
sys.exit(main(sys.argv[1:]))
'''


def _default_sigint() -> None:
    # A child of a non-interactive shell may inherit SIGINT ignored; a user's terminal delivers it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(argv: list[str], *, cache: Path, kill: str = "", ids: str = "") -> subprocess.Popen[str]:
    """``posenc ARGV`` in a subprocess of its own session (as from a terminal), killed (or paused) at stage
    ``kill``; ``ids``: the comma-separated methods that ``--all`` runs."""
    env = {**os.environ, "POSENC_CACHE": str(cache), "POSENC_TEST_KILL": kill, "POSENC_TEST_IDS": ids,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(paths.find_root() / "src"), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([sys.executable, "-c", _DRIVER, *argv], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=_default_sigint)


def run(argv: list[str], *, cache: Path, kill: str = "", timeout: float = 300) -> tuple[int, str, str]:
    """Run ``posenc ARGV`` to its end (or its death); returns (exit status, stdout, stderr)."""
    p = start(argv, cache=cache, kill=kill)
    try:
        out, err = p.communicate(timeout=timeout)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    return p.returncode, out, err
