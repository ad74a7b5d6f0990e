"""The README's two set-up commands stay true: CI runs the test command verbatim."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _setup_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    return [b.strip() for b in blocks[:2]]


def test_readme_leads_with_two_setup_commands() -> None:
    cmds = _setup_commands()
    assert len(cmds) == 2
    assert all("\n" not in c for c in cmds), "each set-up command is one line"
    assert cmds[0].endswith("posenc book")
    assert "pytest" in cmds[1] and '".[test]"' in cmds[1]


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert _setup_commands()[1] in ci


def test_extras_use_ranges_and_the_readme_pins_the_cpu_build() -> None:
    # Extras with ranges keep Colab's or a GPU machine's torch; CI and the README pin one CPU build through the
    # constraints file (an unpinned torch would pull the multi-GB CUDA wheels on a fresh machine).
    text = (ROOT / "pyproject.toml").read_text()
    specs = re.findall(r'"torch([^"]*)"', text)
    assert specs and all(s == ">=2.4" for s in specs), specs
    pins = [ln for ln in (ROOT / "constraints-cpu.txt").read_text().splitlines() if ln and not ln.startswith("#")]
    assert pins == ["torch==2.13.0"]
    assert all("-c constraints-cpu.txt" in c for c in _setup_commands())
