"""Where things live: the one repository root, the result and cache folders, and the one strict YAML reader.

Every module that needs a file of the project asks here. The root is, in order: an explicit ``root``
argument, the ``POSENC_ROOT`` environment variable, the current directory or one of its parents, the
checkout holding this package (an editable install), and finally the cards and bibliography bundled inside an
installed wheel (``posenc/_bundle``). A root is any folder holding ``taxonomy/categories.yaml``.

YAML is read only through :func:`read_yaml`: PyYAML's *safe* loader (tags such as ``!!python/object`` are
errors and never executed), duplicate keys rejected, YAML 1.2 booleans (only ``true``/``false``), files of
at most :data:`MAX_YAML_BYTES` and documents that expand to at most :data:`MAX_YAML_NODES` nodes once aliases
are followed (an "alias bomb" is refused before it is built). Errors name the file and, where known, the line.
YAML is written only through :func:`dump_yaml` (the safe dumper), so this is the one module importing PyYAML.

This module imports neither torch nor pandas: the knowledge-base commands start fast.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "ROOT_ENV",
    "CACHE_ENV",
    "RESULTS_ENV",
    "CATEGORIES_FILE",
    "METHODS_DIR",
    "BIB_FILE",
    "CITATION_FILE",
    "PE_DIR",
    "MAX_YAML_BYTES",
    "MAX_YAML_NODES",
    "RootError",
    "YAMLReadError",
    "find_root",
    "git_commit",
    "is_checkout",
    "notebook_template",
    "relative",
    "results_dir",
    "cache_dir",
    "checkpoint_dir",
    "data_dir",
    "read_yaml",
    "parse_yaml",
    "dump_yaml",
]

ROOT_ENV = "POSENC_ROOT"
CACHE_ENV = "POSENC_CACHE"
RESULTS_ENV = "POSENC_RESULTS"
CATEGORIES_FILE = "taxonomy/categories.yaml"
METHODS_DIR = "taxonomy/methods"
BIB_FILE = "references.bib"
CITATION_FILE = "CITATION.cff"
PE_DIR = "src/posenc/pe"

#: Largest YAML file read (a card is a few kB; the largest committed one is under 10 kB).
MAX_YAML_BYTES = 1 << 20
#: Largest number of nodes a YAML document may expand to once its aliases are followed.
MAX_YAML_NODES = 100_000

_PACKAGE = Path(__file__).resolve().parent
_BUNDLE = _PACKAGE / "_bundle"


class RootError(ValueError):
    """No posenc repository (or bundled copy of its cards) could be found where one was asked for."""


class YAMLReadError(ValueError):
    """A YAML file that cannot be read, names the file (relative to the root where possible) and line."""

    def __init__(self, file: str, message: str, line: int | None = None) -> None:
        self.file, self.message, self.line = file, message, line
        super().__init__(f"{file}{'' if line is None else f':{line}'}: {message}")


# ---------------------------------------------------------------------------------------------- the root
def _has_cards(p: Path) -> bool:
    return (p / CATEGORIES_FILE).is_file()


def find_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding ``taxonomy/categories.yaml`` (see the module docstring for the search order)."""
    if root is not None:
        p = Path(root).expanduser().resolve()
        if not _has_cards(p):
            raise RootError(f"{p}: not a posenc repository (no {CATEGORIES_FILE})")
        return p
    env = os.environ.get(ROOT_ENV)
    if env:
        p = Path(env).expanduser().resolve()
        if not _has_cards(p):
            raise RootError(f"{ROOT_ENV}={env}: not a posenc repository (no {CATEGORIES_FILE})")
        return p
    for start in (Path.cwd().resolve(), _PACKAGE):
        for p in (start, *start.parents):
            if _has_cards(p):
                return p
    if _has_cards(_BUNDLE):
        return _BUNDLE
    raise RootError(f"cannot find {CATEGORIES_FILE}: run inside the posenc repository, set {ROOT_ENV}, or pass "
                    "--root")


def notebook_template() -> Path:
    """The notebook ``posenc run`` executes: it belongs to the code, so it is found next to this package (the
    checkout's ``notebooks/``, or the copy bundled in a wheel), whatever root the cards come from."""
    for candidate in (_PACKAGE.parents[1] / "notebooks" / "extrapolation.ipynb",
                      _BUNDLE / "notebooks" / "extrapolation.ipynb"):
        if candidate.is_file():
            return candidate
    raise RootError("cannot find the notebook template notebooks/extrapolation.ipynb next to the posenc package")


def is_checkout(root: Path) -> bool:
    """True when ``root`` is a source checkout (it has ``pyproject.toml``), not the bundled copy in a wheel."""
    return (root / "pyproject.toml").is_file()


def relative(path: str | os.PathLike[str], root: Path | None = None) -> str:
    """``path`` relative to ``root`` (default: the root) in POSIX form, or as given when it lies outside."""
    p = Path(path)
    try:
        base = root if root is not None else find_root()
    except RootError:
        return p.as_posix()
    try:
        return p.resolve().relative_to(base).as_posix()
    except ValueError:
        return p.as_posix()


# ---------------------------------------------------------------------------------------------- folders
def _writable_base() -> Path:
    """The checkout when there is one, else the working directory (an installed wheel's bundle is read-only)."""
    try:
        r = find_root()
    except RootError:
        return Path.cwd()
    return r if is_checkout(r) else Path.cwd()


def results_dir(results: str | os.PathLike[str] | None = None) -> Path:
    """Result JSONs: ``results`` when given, else ``$POSENC_RESULTS``, else ``results/`` in the checkout (or in
    the working directory outside one)."""
    if results is not None:
        return Path(results).expanduser()
    env = os.environ.get(RESULTS_ENV)
    return Path(env).expanduser() if env else _writable_base() / "results"


def cache_dir() -> Path:
    """The one cache folder: ``$POSENC_CACHE``, else ``.cache/posenc`` in the checkout (git-ignored), else
    ``~/.cache/posenc``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    try:
        r = find_root()
    except RootError:
        r = None
    if r is not None and is_checkout(r):
        return r / ".cache" / "posenc"
    return Path.home() / ".cache" / "posenc"


def checkpoint_dir() -> Path:
    """Trained-model checkpoints, keyed by a hash of their configuration."""
    return cache_dir() / "checkpoints"


def data_dir() -> Path:
    """Downloaded optional corpora (checksummed)."""
    return cache_dir() / "data"


# ---------------------------------------------------------------------------------------------- YAML
_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[valid-type,misc]
    """PyYAML's safe loader (no tags are constructed, so nothing is executed) that rejects duplicate keys."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            self.flatten_mapping(node)
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                except TypeError:  # unhashable: the base class reports it
                    continue
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark, f"found duplicate key {key!r}",
                        key_node.start_mark,
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


# Booleans are only true/false (YAML 1.2), not YAML 1.1's yes/no/on/off: `learnable: no` is then reported
# as "expected bool, got 'no'" instead of silently becoming False, and a value such as "off" stays text.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _expanded_size(node: yaml.Node, limit: int) -> int:
    """Number of nodes once every alias is followed (an alias is the same node object reached twice).

    Computed bottom-up over the node graph with a memo, so a document that *would* expand to billions of
    nodes costs only its own size to measure.
    """
    memo: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(node, False)]
    on_path: set[int] = set()
    while stack:
        n, done = stack.pop()
        if id(n) in memo and not done:
            continue
        kids: list[yaml.Node]
        if isinstance(n, yaml.MappingNode):
            kids = [x for pair in n.value for x in pair]
        elif isinstance(n, yaml.SequenceNode):
            kids = list(n.value)
        else:
            kids = []
        if not done:
            if id(n) in on_path:  # a recursive alias: infinite expansion
                return limit + 1
            on_path.add(id(n))
            stack.append((n, True))
            stack.extend((k, False) for k in kids if id(k) not in memo)
            continue
        on_path.discard(id(n))
        memo[id(n)] = min(limit + 1, 1 + sum(memo.get(id(k), limit + 1) for k in kids))
    return memo[id(node)]


# Where an alias token ("*name") could start: at the start of a line or after whitespace or a flow or
# value indicator. Anything else with a "*" (LaTeX such as k^*, a product a*b) is a false positive, never a miss.
_ALIAS_START = re.compile(r"(?:^|[\s\[{,:?-])\*", re.M)


def _may_have_aliases(text: str) -> bool:
    """False only when ``text`` cannot expand past :data:`MAX_YAML_NODES`: it has no alias token, and it is so
    short that its own nodes (at most 1.5 per character, e.g. ``{a,b}``) stay under the limit. Walking the
    node graph in Python is the largest cost of reading a card, so the common case skips it."""
    return 3 * len(text) > 2 * MAX_YAML_NODES or _ALIAS_START.search(text) is not None


def _error_line(exc: yaml.YAMLError) -> tuple[str, int | None]:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        text = exc.problem or exc.context or "invalid YAML"
        if exc.problem and exc.context and exc.context_mark is not None:
            text += f" ({exc.context} on line {exc.context_mark.line + 1})"
        if "constructor for the tag" in text:
            text += " (tags are not allowed: cards are plain YAML)"
        return f"YAML error: {text}", (mark.line + 1 if mark is not None else None)
    return f"YAML error: {exc}", None


def parse_yaml(text: str, name: str = "<string>") -> Any:
    """Parse YAML text with the strict loader; :class:`YAMLReadError` names ``name`` and the line."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _may_have_aliases(text) and _expanded_size(node, MAX_YAML_NODES) > MAX_YAML_NODES:
            raise YAMLReadError(name, f"YAML error: the document expands to more than {MAX_YAML_NODES:,} nodes "
                                      "through its aliases (refused)")
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        message, line = _error_line(exc)
        raise YAMLReadError(name, message, line) from None
    except RecursionError:
        raise YAMLReadError(name, "YAML error: nesting too deep") from None
    finally:
        loader.dispose()


def read_yaml(path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> Any:
    """Read one YAML file with the strict loader. Errors are :class:`YAMLReadError` naming the file (relative
    to ``root`` when given and the file lies inside it) and the line."""
    p = Path(path)
    name = relative(p, Path(root).resolve()) if root is not None else p.as_posix()
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise YAMLReadError(name, f"cannot read: {exc.strerror or exc}") from None
    if size > MAX_YAML_BYTES:
        raise YAMLReadError(name, f"file is {size:,} bytes, over the {MAX_YAML_BYTES:,}-byte limit for YAML files")
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YAMLReadError(name, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise YAMLReadError(name, f"cannot read: {exc.strerror or exc}") from None
    return parse_yaml(text, name)


def dump_yaml(data: Any, **options: Any) -> str:
    """``data`` as YAML text with PyYAML's *safe* dumper (plain types only); ``options`` are those of
    :func:`yaml.safe_dump` (e.g. ``sort_keys=False``, ``default_flow_style=True``, ``width``)."""
    return str(yaml.safe_dump(data, **options))


def git_commit(root: str | Path | None = None, *, short: bool = False) -> str | None:
    """HEAD of the git checkout at ``root`` (default: :func:`find_root`), 12 hex digits when ``short``;
    None outside a git checkout (an installed package, a copied tree) or without git."""
    try:
        where = Path(root) if root is not None else find_root()
        out = subprocess.run(["git", "rev-parse", *(["--short=12"] if short else []), "HEAD"], cwd=where,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError, RootError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
