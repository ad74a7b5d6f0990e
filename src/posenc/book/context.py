"""What the book is made from, read once: the cards and categories (through :mod:`posenc.cards`) and the
published results (through :mod:`posenc.experiment`).

The book publishes one preset: the first of :data:`SHOWN_PRESETS` (``gpu``, then ``cpu``, then ``smoke``) that
has results of the current protocol, and every page says which. Results of an older protocol or schema are
*stale*: never published as current, and listed as such (the leaderboard and the method pages say which files
and why). Executed notebooks are published only next to current results of the shown preset.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from posenc import __version__, paths
from posenc.cards import Card, RegistryEntry, categories, load_cards, static_registry
from posenc.experiment.claims import Verdict
from posenc.experiment.leaderboard import Collection, collect, ledgers, table
from posenc.experiment.presets import PROTOCOL_VERSION
from posenc.experiment.results import ResultError, iter_results, read_json

__all__ = ["SHOWN_PRESETS", "GENERATED", "RUNS", "Category", "Context", "Published", "PresetStatus",
           "load_context", "using_root"]

#: Presets whose results the book may publish, most preferred first.
SHOWN_PRESETS: tuple[str, ...] = ("gpu", "cpu", "smoke")
GENERATED = "book/generated"
RUNS = "book/runs"
REPOSITORY = "https://github.com/posenc/posenc"
BRANCH = "main"


@dataclass
class PresetStatus:
    """What exists under ``results/<preset>/``: current results (by method) and stale files."""

    name: str
    current: list[str] = field(default_factory=list)  # methods with current results
    stale: dict[str, list[str]] = field(default_factory=dict)  # method -> repo-relative files (older protocol)


@dataclass
class Published:
    """The results the book shows (one preset)."""

    preset: str
    col: Collection
    verdicts: dict[str, list[Verdict]]
    rows: dict[str, dict[str, Any]]  # method -> leaderboard row (posenc.experiment.leaderboard.table)
    learned: dict[str, dict[str, Any]]  # task -> {"learned", "best", ...}
    notebooks: dict[str, str]  # method -> repo-relative path of its executed notebook
    markers: dict[str, dict[str, Any]]  # method -> completion marker (wall time, seeds)


@dataclass
class Category:
    """A node of the category tree with the cards sitting directly on it."""

    path: str
    node: Mapping[str, Any]
    children: list[Category]
    cards: list[str]

    @property
    def name(self) -> str:
        return str(self.node.get("name") or self.node.get("id"))

    @property
    def slug(self) -> str:
        return self.path.replace("/", "__")

    @property
    def docname(self) -> str:
        return f"{GENERATED}/categories/{self.slug}"

    def all_cards(self) -> list[str]:
        out = list(self.cards)
        for ch in self.children:
            out += ch.all_cards()
        return out

    def walk(self) -> Iterator[Category]:
        yield self
        for ch in self.children:
            yield from ch.walk()


@dataclass
class Context:
    """Everything the pages are made from."""

    root: Path
    cards: dict[str, Card]
    tree: list[Category]
    orphans: list[str]
    registry: dict[str, RegistryEntry]
    applies_to: dict[str, str | None]  # registry id -> base PE it is applied to
    presets: list[PresetStatus]
    published: Published | None
    version: str
    commit: str | None
    extra_pages: dict[str, bool] = field(default_factory=dict)  # optional hand-written pages that exist

    # ------------------------------------------------------------------ lookups
    def categories(self) -> list[Category]:
        return [c for root in self.tree for c in root.walk()]

    def category_names(self, path: str | None) -> list[str]:
        names, nodes = [], self.tree
        for part in str(path).split("/"):
            node = next((n for n in nodes if n.node.get("id") == part), None)
            if node is None:
                names.append(part)
                break
            names.append(node.name)
            nodes = node.children
        return names

    def results(self, cid: str) -> list[Any]:
        return self.published.col.lookup(cid) if self.published else []

    def stale(self, cid: str) -> list[tuple[str, str]]:
        """``(preset, file)`` of every stale result of ``cid``."""
        return [(p.name, f) for p in self.presets for f in p.stale.get(cid, [])]

    def notebook(self, cid: str) -> str | None:
        return self.published.notebooks.get(cid) if self.published else None


def _card_sort_key(card: Card) -> tuple[int, str, str]:
    year = card.get("year") if isinstance(card.get("year"), int) else 9999
    return (year, str(card.get("name", "")).casefold(), card.id)


def _tree(raw: Sequence[Mapping[str, Any]], cards: Mapping[str, Card]) -> tuple[list[Category], list[str]]:
    by_path: dict[str, Category] = {}

    def walk(nodes: Any, prefix: str) -> list[Category]:
        out = []
        for node in nodes if isinstance(nodes, list) else []:
            if not isinstance(node, Mapping) or not isinstance(node.get("id"), str):
                continue
            path = f"{prefix}/{node['id']}" if prefix else node["id"]
            cat = Category(path, node, [], [])
            by_path[path] = cat
            cat.children = walk(node.get("children"), path)
            out.append(cat)
        return out

    roots = walk(raw, "")
    orphans = []
    for cid, card in cards.items():
        cat = by_path.get(str(card.get("category")))
        (cat.cards if cat is not None else orphans).append(cid)
    for cat in by_path.values():
        cat.cards.sort(key=lambda c: _card_sort_key(cards[c]))
    return roots, sorted(orphans)


def _applies_to(ids: Sequence[str]) -> dict[str, str | None]:
    from posenc.experiment.spec import method_traits  # the registry, through the experiment's view of it

    out: dict[str, str | None] = {}
    for i in ids:
        try:
            out[i] = method_traits(i).applies_to
        except ValueError:  # registered statically but not importable here: no base known
            out[i] = None
    return out


def _preset_status(name: str, results: Path) -> tuple[PresetStatus, Collection | None]:
    status = PresetStatus(name)
    if not (results / name).is_dir():
        return status, None
    try:
        col: Collection | None = collect(name, results)
    except ResultError:
        raise
    except ValueError:  # no current result: only stale ones, if any
        col = None
    files: dict[str, list[Path]] = {}
    if col is None:  # every result here is of an older schema or protocol (a current one would be collected)
        older: list[Path] = []
        for r in iter_results(name, results, older=older):
            if r.path is not None:
                files.setdefault(r.method, []).append(r.path)
        for f in older:
            files.setdefault(f.name.rsplit("-seed", 1)[0], []).append(f)
    else:
        files = {m: list(fs) for m, fs in col.older.items()}
        for m, rs in col.stale.items():
            files.setdefault(m, []).extend(r.path for r in rs if r.path is not None)
        status.current = sorted(col.by_method)
    root = results.parent
    status.stale = {m: sorted(paths.relative(f, root) for f in fs) for m, fs in sorted(files.items())}
    return status, col


def _notebooks(root: Path, col: Collection) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """The executed notebooks of the published results: ``book/runs/<preset>/<id>.ipynb`` whose recorded
    configuration key (``metadata.posenc.key``) is that of the results, and the completion markers."""
    nbs, markers = {}, {}
    preset = col.preset.name
    for method, results in col.by_method.items():
        path = root / RUNS / preset / f"{method}.ipynb"
        if path.is_file():
            try:
                meta = json.loads(path.read_text(encoding="utf-8")).get("metadata", {}).get("posenc", {})
            except (OSError, json.JSONDecodeError) as e:
                raise ValueError(f"{paths.relative(path, root)}: not a readable notebook ({e})") from None
            if not meta or meta.get("key") == results[0].key:
                nbs[method] = path.relative_to(root).as_posix()
        marker = (results[0].path.parent if results[0].path else root / "results" / preset) / f"{method}.done.json"
        if marker.is_file():
            try:
                data = read_json(marker)
            except ResultError:
                data = None
            if isinstance(data, dict) and data.get("protocol") == PROTOCOL_VERSION:
                markers[method] = data
    return nbs, markers


@contextmanager
def using_root(root: Path) -> Iterator[None]:
    """Make ``root`` the root every module finds (``POSENC_ROOT``) while the book reads it."""
    old = os.environ.get(paths.ROOT_ENV)
    os.environ[paths.ROOT_ENV] = str(root)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(paths.ROOT_ENV, None)
        else:
            os.environ[paths.ROOT_ENV] = old


def load_context(root: str | os.PathLike[str] | None = None) -> Context:
    """Read the cards, the tree, the registry and the results of ``root`` (results under ``root/results``)."""
    r = paths.find_root(root)
    with using_root(r):
        cards = {c.id: c for c in sorted(load_cards(r), key=lambda c: c.id)}
        tree, orphans = _tree(categories(r), cards)
        registry, _problems = static_registry(r / paths.PE_DIR, r)
        statuses, published = [], None
        for name in SHOWN_PRESETS:
            status, col = _preset_status(name, r / "results")
            statuses.append(status)
            if col is not None and published is None:
                verdicts = ledgers(col)
                rows = {row["method"]: row for row in table(col, verdicts)}
                nbs, markers = _notebooks(r, col)
                published = Published(name, col, verdicts, rows, col.learned(), nbs, markers)
        applies = _applies_to(sorted(registry))
    extra = {name: (r / "book" / f"{name}.md").is_file() for name in ("use_on_your_model", "cluster")}
    return Context(r, cards, tree, orphans, dict(registry), applies, statuses, published, __version__,
                   paths.git_commit(r, short=True), extra)
