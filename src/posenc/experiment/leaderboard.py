"""The leaderboard: every canonical result of a preset over its seeds, with intervals, and the claims ledger.

:func:`collect` reads the results once (through the one result reader) and :func:`table` and :func:`ledgers`
summarise them; :func:`write_leaderboard` writes ``leaderboard.csv`` (mean, lo, hi columns), ``leaderboard.md``
(mean ± half-width), ``ledger.json`` (every distinct test with its verdict) and ``leaderboard.png`` beside the
results. A result file that cannot be read stops it with the file's name before anything is written.
"""

from __future__ import annotations

import csv
import io
import math
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from posenc import paths
from posenc.cards import Card, find_card
from posenc.experiment import claims as C
from posenc.experiment.aggregate import ratio_at, task_learned, task_series
from posenc.experiment.presets import PROTOCOL_VERSION, Preset, get_preset
from posenc.experiment.results import Result, iter_results, write_bytes_atomic, write_json_atomic
from posenc.experiment.spec import BASELINES
from posenc.experiment.stats import Interval, log_interval

__all__ = ["Collection", "collect", "table", "ledgers", "write_leaderboard", "RATIO_FACTORS", "TASK_FACTORS"]

RATIO_FACTORS = (2, 4, 16, 32)
TASK_FACTORS = (1, 4, 16)


@dataclass
class Collection:
    """Every current-protocol canonical result of one preset, by method, plus the older ones (not published):
    ``stale`` holds results of another protocol, ``older`` the files of an older result schema by method."""

    preset: Preset
    by_method: dict[str, list[Result]]
    stale: dict[str, list[Result]]
    older: dict[str, list[Path]] = field(default_factory=dict)

    def lookup(self, method: str) -> list[Result]:
        return self.by_method.get(method, [])

    def learned(self) -> dict[str, dict[str, Any]]:
        from posenc.tasks import TASKS

        base = {b: self.lookup(b) for b in BASELINES if self.lookup(b)}
        return {t: task_learned(base, t) for t in TASKS}


def collect(preset: str, results_dir: str | Path | None = None) -> Collection:
    by: dict[str, list[Result]] = defaultdict(list)
    stale: dict[str, list[Result]] = defaultdict(list)
    p: Preset | None = None
    older_files: list[Path] = []
    for r in iter_results(preset, results_dir, older=older_files):
        (by if r.current else stale)[r.method].append(r)
        if r.current and p is None:
            p = get_preset(preset, **{k: v for k, v in r.data["config"].items()
                                       if k != "name" and k in Preset.__dataclass_fields__})
    if not by:
        folder = paths.results_dir(results_dir) / preset
        raise ValueError(f"no complete protocol-{PROTOCOL_VERSION} results under {paths.relative(folder)}")
    for rs in by.values():
        rs.sort(key=lambda r: r.seed)
    older: dict[str, list[Path]] = defaultdict(list)
    for f in older_files:
        older[f.name.rsplit("-seed", 1)[0]].append(f)
    return Collection(p or get_preset(preset), dict(by), dict(stale), dict(older))


def _cell(iv: Interval | None) -> dict[str, float | None]:
    if iv is None:
        return {"mean": None, "lo": None, "hi": None}
    return {"mean": iv.mean, "lo": iv.lo, "hi": iv.hi}


def ledgers(col: Collection) -> dict[str, list[C.Verdict]]:
    """The claims ledger of every method with results."""
    learned = {t: v["learned"] for t, v in col.learned().items()}
    out = {}
    for method, results in col.by_method.items():
        card = find_card(method)
        if card is None:
            continue
        out[method] = C.ledger(card, col.preset, col.lookup, applies_to=results[0].data.get("applies_to"),
                               learned=learned)
    return out


def _moved(results: Sequence[Result]) -> bool | None:
    flags = []
    for r in results:
        tr = r.data.get("train", {})
        for log in (tr.get("log"), tr.get("finetune_log")):
            shift = (log or {}).get("pe_shift") or {}
            if shift:
                flags.append(bool(shift.get("moved")))
    return None if not flags else any(flags)


def table(col: Collection, verdicts: dict[str, list[C.Verdict]] | None = None) -> list[dict[str, Any]]:
    """One row per method: 1× perplexity, ratios, task accuracies (all with intervals), verdict counts."""
    verdicts = ledgers(col) if verdicts is None else verdicts
    rows = []
    for method, results in sorted(col.by_method.items()):
        card: Card | None = find_card(method)
        first = results[0]
        row: dict[str, Any] = {"method": method, "name": card.name if card else method,
                               "category": card.category if card else None, "base": first.data.get("applies_to"),
                               "variant": first.primary, "seeds": len(results)}
        ppl1 = [r.value(1) for r in results if r.value(1) is not None]
        row["ppl@1x"] = _cell(log_interval(ppl1) if ppl1 else None)
        for f in RATIO_FACTORS:
            row[f"ratio@{f}x"] = _cell(ratio_at(results, f))
        for task in ("needle", "latest"):
            s = task_series(results, task, task)
            by_x = dict(zip(s.x, s.y, strict=True))
            for f in TASK_FACTORS:
                row[f"{task}@{f}x"] = _cell(by_x.get(f * col.preset.train_len))
        v = verdicts.get(method, [])
        for name in C.VERDICTS:
            row[name] = sum(x.verdict == name for x in v)
        row["pe_moved"] = _moved(results)
        rows.append(row)
    return rows


def _flat(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        flat: dict[str, Any] = {}
        for k, v in row.items():
            if isinstance(v, dict):
                for part, x in v.items():
                    flat[k if part == "mean" else f"{k}_{part}"] = x
            else:
                flat[k] = v
        out.append(flat)
    return out


def _fmt(cell: dict[str, float | None], digits: int = 3) -> str:
    m, lo, hi = cell["mean"], cell["lo"], cell["hi"]
    if m is None:
        return "—"
    if not math.isfinite(m):
        return "∞"
    if lo is None or hi is None or lo == hi:
        return f"{m:.{digits}g}"
    return f"{m:.{digits}g} ± {(hi - lo) / 2:.{max(1, digits - 1)}g}"


def markdown(rows: list[dict[str, Any]]) -> str:
    cols = ["method", "variant", "seeds", "ppl@1x", *[f"ratio@{f}x" for f in RATIO_FACTORS],
            *[f"{t}@{f}x" for t in ("needle", "latest") for f in TASK_FACTORS], *C.VERDICTS]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [_fmt(r[c]) if isinstance(r[c], dict) else str(r[c]) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_leaderboard(preset: str = "cpu", results_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Write the leaderboard files beside the results; returns the rows."""
    col = collect(preset, results_dir)
    verdicts = ledgers(col)
    rows = table(col, verdicts)
    folder = paths.results_dir(results_dir) / preset
    flat = _flat(rows)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(flat[0]))
    w.writeheader()
    w.writerows(flat)
    learned = col.learned()
    ledger = {
        "protocol": PROTOCOL_VERSION, "preset": preset,
        "tasks": {t: {"learned": v["learned"], "best": v["best"]} for t, v in learned.items()},
        "methods": {m: [v.as_dict() for v in vs] for m, vs in sorted(verdicts.items())},
        "stale": sorted(col.stale),
        "older_schema": sorted(col.older),
    }
    from posenc.experiment.plots import leaderboard_figure  # matplotlib only when the figure is drawn

    # Everything is rendered before any file is replaced: a failure or an interrupt keeps the old files.
    with tempfile.TemporaryDirectory(dir=folder, prefix=".leaderboard-") as tmp:
        leaderboard_figure(col, Path(tmp) / "leaderboard.png")
        png = (Path(tmp) / "leaderboard.png").read_bytes()
    write_bytes_atomic(folder / "leaderboard.csv", buf.getvalue().encode("utf-8"))
    write_bytes_atomic(folder / "leaderboard.md", markdown(rows).encode("utf-8"))
    write_json_atomic(folder / "ledger.json", ledger)
    write_bytes_atomic(folder / "leaderboard.png", png)
    return rows
