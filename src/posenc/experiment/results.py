"""The result store: one typed record per (method, configuration, preset, seed), and the one reader.

A result is the JSON ``results/<preset>/<method><tag>-seed<seed>.json`` (``tag`` is empty for the preset's own
configuration and ``@<hash>`` for overrides or user hyperparameters, so a non-default run never replaces the
canonical one). It is written atomically, last, with ``"complete": true``. A whole method run (all seeds and
its executed notebook) is finished only when its *completion marker* ``<method><tag>.done.json`` exists, names
the same configuration key, and the checksums it records match the files: a sweep killed at any moment is
resumed by these checks, and a partial notebook or JSON is never taken for a finished one.

Schema 2 (protocol 2): ``schema``, ``protocol``, ``complete``, ``method``, ``preset``, ``seed``, ``tag``, ``key``,
``kind`` ("scratch" or "applied"), ``applies_to``, ``primary`` (the variant the verdicts use),
``hyperparameters``, ``user_hparams``, ``overrides``, ``config`` (the preset's fields), ``metadata``, ``train``
(loss curves and how far the PE's parameters moved), ``variants`` (``{name: {"lm", "lm_sliding",
"position"}}``) and ``tasks`` (``{task: {variant: curve}}``, on the task seeds only).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from posenc import paths
from posenc.experiment.presets import PROTOCOL_VERSION

__all__ = [
    "SCHEMA",
    "ResultError",
    "Result",
    "write_bytes_atomic",
    "write_json_atomic",
    "read_json",
    "read_result",
    "result_done",
    "result_file",
    "iter_results",
    "older_schema",
    "marker_path",
    "write_marker",
    "marker_valid",
    "file_sha256",
]

SCHEMA = 2


class ResultError(ValueError):
    """A result file that cannot be used: unreadable, truncated, or of another schema or protocol."""


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, (tuple, set)):
        return list(o)
    if isinstance(o, Path):
        return o.as_posix()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _finite(obj: Any) -> Any:
    """Non-finite floats become null: JSON has no NaN or infinity, and a reader must never meet them."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` through a temporary file in the same folder, fsync, then ``os.replace``.

    The temporary file is unique to this process and thread, so two writers of one path (two sweeps, two
    threads) each replace the file with one complete version, never an interleaving. The old file stays intact
    when anything fails (a full disk, a kill); the temporary file is removed and the error names ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise OSError(f"cannot write {paths.relative(path)}: {e.strerror or e}") from e
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as JSON (non-finite floats as null) through :func:`write_bytes_atomic`."""
    text = json.dumps(_finite(obj), indent=1, default=_json_default, allow_nan=False) + "\n"
    return write_bytes_atomic(path, text.encode("utf-8"))


def read_json(path: str | Path) -> Any:
    """Read a JSON file; :class:`ResultError` names the file when it is unreadable or truncated."""
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise ResultError(f"{paths.relative(p)}: cannot read ({e.strerror or e})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ResultError(f"{paths.relative(p)}: not valid JSON, probably truncated ({e})") from None


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class Result:
    """A stored result (schema 2). ``data`` is the JSON; accessors read the curves."""

    data: dict[str, Any]
    path: Path | None = None

    REQUIRED = ("schema", "protocol", "complete", "method", "preset", "seed", "key", "kind", "primary",
                "config", "metadata", "variants")

    @classmethod
    def from_json(cls, data: Any, path: Path | None = None) -> Result:
        where = paths.relative(path) if path is not None else "result"
        if not isinstance(data, dict):
            raise ResultError(f"{where}: a result must be a JSON object")
        missing = [k for k in cls.REQUIRED if k not in data]
        if missing:
            raise ResultError(f"{where}: missing field(s) {', '.join(missing)}")
        if data["schema"] != SCHEMA:
            raise ResultError(f"{where}: result schema {data['schema']!r}, this code reads schema {SCHEMA}")
        return cls(data, path)

    # ------------------------------------------------------------------ identity
    @property
    def method(self) -> str:
        return str(self.data["method"])

    @property
    def seed(self) -> int:
        return int(self.data["seed"])

    @property
    def key(self) -> str:
        return str(self.data["key"])

    @property
    def complete(self) -> bool:
        return bool(self.data.get("complete"))

    @property
    def protocol(self) -> int:
        return int(self.data["protocol"])

    @property
    def current(self) -> bool:
        """True when the result follows this code's protocol (older ones are not published as current)."""
        return self.protocol == PROTOCOL_VERSION

    @property
    def primary(self) -> str:
        return str(self.data["primary"])

    @property
    def variants(self) -> dict[str, Any]:
        return dict(self.data["variants"])

    # ------------------------------------------------------------------ curves
    def curve(self, protocol: str = "lm", variant: str | None = None) -> list[dict[str, Any]]:
        """A curve of a variant (the primary one by default): ``lm``, ``lm_sliding`` or ``position``."""
        v = self.data["variants"].get(variant or self.primary)
        return list(v.get(protocol, [])) if v else []

    def value(self, factor: int, metric: str = "ppl", protocol: str = "lm", variant: str | None = None
              ) -> float | None:
        """The value at ``factor`` × train length; +inf for a length the model could not handle (perplexity),
        None when that length was not evaluated."""
        for pt in self.curve(protocol, variant):
            if pt.get("factor") == factor:
                if pt.get("error") or pt.get(metric) is None:
                    return math.inf
                return float(pt[metric])
        return None

    def task_curve(self, task: str, variant: str | None = None) -> list[dict[str, Any]]:
        t = (self.data.get("tasks") or {}).get(task) or {}
        return list(t.get(variant or self.primary, []))

    def accuracy(self, task: str, factor: int, variant: str | None = None) -> float | None:
        for pt in self.task_curve(task, variant):
            if pt.get("factor") == factor:
                return 0.0 if pt.get("error") else float(pt["accuracy"])
        return None


def result_file(method_name: str, preset: str, seed: int, results_dir: str | Path | None = None) -> Path:
    """``results/<preset>/<method><tag>-seed<seed>.json``; ``method_name`` includes the tag."""
    return paths.results_dir(results_dir) / preset / f"{method_name}-seed{seed}.json"


def read_result(path: str | Path) -> Result:
    """THE result reader: parse and check one result file (:class:`ResultError` names the file)."""
    p = Path(path)
    return Result.from_json(read_json(p), p)


def result_done(path: str | Path, key: str) -> bool:
    """True when ``path`` holds a complete result of configuration ``key`` (an unreadable file is not done;
    nothing is moved or changed)."""
    p = Path(path)
    if not p.exists():
        return False
    try:
        res = read_result(p)
    except ResultError:
        return False
    return res.complete and res.key == key


def older_schema(path: str | Path) -> int | None:
    """The schema of a readable result file written by an older schema, else None (current, or unreadable)."""
    try:
        data = read_json(path)
    except ResultError:
        return None
    schema = data.get("schema", 1) if isinstance(data, dict) else None
    return schema if isinstance(schema, int) and not isinstance(schema, bool) and schema < SCHEMA else None


def iter_results(preset: str, results_dir: str | Path | None = None, *, canonical: bool = True,
                 older: list[Path] | None = None) -> Iterator[Result]:
    """Every complete result of ``preset`` (canonical configurations only, by default), sorted by file.

    A file that cannot be read raises :class:`ResultError` naming it: a leaderboard never silently drops an
    entry. With ``older``, files of an older result schema (an older protocol) are appended to it instead of
    raising: they are stale, never read as current.
    """
    folder = paths.results_dir(results_dir) / preset
    for path in sorted(folder.glob("*-seed*.json")):
        stem = path.name.rsplit("-seed", 1)[0]
        if canonical and "@" in stem:
            continue
        try:
            res = read_result(path)
        except ResultError:
            if older is None or older_schema(path) is None:
                raise
            older.append(path)
            continue
        if res.complete:
            yield res


# =========================================================================== completion markers
def marker_path(method_name: str, preset: str, results_dir: str | Path | None = None) -> Path:
    return paths.results_dir(results_dir) / preset / f"{method_name}.done.json"


def write_marker(method_name: str, preset: str, key: str, files: list[Path], results_dir: str | Path | None = None,
                 **extra: Any) -> Path:
    """Write the completion marker last: the configuration key and each file's sha256 (paths relative to the
    results folder's parent, never absolute)."""
    base = paths.results_dir(results_dir).resolve().parent
    recorded = {}
    for f in files:
        fp = Path(f).resolve()
        try:
            name = fp.relative_to(base).as_posix()
        except ValueError:
            name = fp.name
        recorded[name] = file_sha256(fp)
    return write_json_atomic(marker_path(method_name, preset, results_dir),
                             {"key": key, "protocol": PROTOCOL_VERSION, "files": recorded, **extra})


def marker_valid(method_name: str, preset: str, key: str, files: list[Path],
                 results_dir: str | Path | None = None) -> bool:
    """True when the marker exists, names ``key`` and the current protocol, and every file in ``files`` exists
    with the checksum it records."""
    m = marker_path(method_name, preset, results_dir)
    if not m.exists():
        return False
    try:
        data = read_json(m)
    except ResultError:
        return False
    if not isinstance(data, dict) or data.get("key") != key or data.get("protocol") != PROTOCOL_VERSION:
        return False
    base = paths.results_dir(results_dir).resolve().parent
    recorded = data.get("files") or {}
    for f in files:
        fp = Path(f).resolve()
        try:
            name = fp.relative_to(base).as_posix()
        except ValueError:
            name = fp.name
        if name not in recorded or not fp.exists() or file_sha256(fp) != recorded[name]:
            return False
    return True
