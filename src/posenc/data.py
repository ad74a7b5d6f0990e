"""Corpora: bytes as tokens (vocabulary 256), a held-out split, and the evaluation span.

* The **default corpus** is English prose that ships with CPython itself, so every experiment runs offline:
  the help topics of :mod:`pydoc_data.topics` (sorted keys) followed by the docstrings of a fixed, sorted
  list of standard-library modules (module, public classes and functions, their public methods),
  concatenated deterministically and encoded as UTF-8. Its sha256 is recorded with every result; it changes
  with the Python version, since docstrings do.
* **The held-out split is interleaved**: the corpus is cut into chunks of :data:`SPLIT_CHUNK` bytes and every
  :data:`SPLIT_EVERY`-th chunk (the last of each group) is validation. A contiguous tail would hold only the
  last few modules' docstrings; interleaved chunks sample the whole corpus. The split is recorded with every
  result (:meth:`Corpus.split_info`).
* **Every length scores the same bytes**: :func:`eval_span` is one fixed span of the validation stream,
  preceded by enough context for the longest sliding window.
* **Optional corpora** (WikiText-103, enwik8, PG-19) go through :func:`download`, a cached, checksummed
  downloader. They are never used by default. The synthetic tasks live in :mod:`posenc.tasks`.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import os
import re
import subprocess
import sys
import tempfile
import urllib.request
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from posenc.paths import data_dir

__all__ = [
    "DEFAULT_MODULES",
    "Corpus",
    "CorpusSpec",
    "OPTIONAL_CORPORA",
    "default_corpus_bytes",
    "load_corpus",
    "download",
    "cache_dir",
    "ChecksumError",
    "SPLIT_CHUNK",
    "SPLIT_EVERY",
    "interleaved_split",
    "eval_span",
]

#: Target value ignored by ``torch.nn.functional.cross_entropy`` (its default ``ignore_index``).
IGNORE = -100

# --------------------------------------------------------------------------- default corpus
#: Standard-library modules whose docstrings join the default corpus. Sorted; importing them has no side
#: effects (no output, no windows, no network). Modules absent from an interpreter are skipped.
DEFAULT_MODULES: tuple[str, ...] = tuple(sorted("""
abc argparse array ast asyncio base64 bdb binascii bisect builtins bz2 calendar cmath cmd code codecs codeop
collections colorsys compileall concurrent.futures configparser contextlib contextvars copy copyreg csv
dataclasses datetime decimal difflib dis doctest email email.message email.utils enum errno filecmp
fileinput fnmatch fractions ftplib functools gc getopt gettext glob graphlib gzip hashlib heapq hmac html
html.parser http http.client http.cookiejar http.cookies http.server imaplib importlib importlib.metadata
inspect io ipaddress itertools json linecache locale logging logging.handlers lzma mailbox math mimetypes
modulefinder multiprocessing netrc numbers operator optparse os pathlib pdb pickle pickletools pkgutil
platform plistlib poplib posixpath pprint profile pstats py_compile pyclbr pydoc queue quopri random re
reprlib rlcompleter runpy sched secrets selectors shelve shlex shutil signal smtplib socket socketserver
sqlite3 ssl stat statistics string struct subprocess symtable sysconfig tabnanny tarfile tempfile textwrap
threading time timeit token tokenize tomllib trace traceback tracemalloc types typing unicodedata unittest
unittest.mock urllib.parse urllib.request uuid warnings wave weakref xml.dom.minidom xml.etree.ElementTree
xmlrpc.client xmlrpc.server zipfile zipimport zlib zoneinfo
""".split()))

#: Interleaved held-out split: chunks of SPLIT_CHUNK bytes, every SPLIT_EVERY-th one is validation.
SPLIT_CHUNK = 4096
SPLIT_EVERY = 10


def _doc(obj: object) -> str:
    """The object's own docstring, dedented (``inspect.cleandoc``); never an inherited one."""
    d = getattr(obj, "__doc__", None)
    return inspect.cleandoc(d) if isinstance(d, str) and d.strip() else ""


def _module_text(name: str) -> str:
    """Docstrings of module ``name``: the module, then its public classes/functions and their methods."""
    try:
        mod = importlib.import_module(name)
    except ImportError:
        return ""
    parts = [f"{name}\n{'=' * len(name)}\n\n{_doc(mod)}"]
    members = vars(mod)
    for attr in sorted(members):
        obj = members[attr]
        if attr.startswith("_") or getattr(obj, "__module__", None) != mod.__name__:
            continue  # re-exported or private names would duplicate text or depend on import order
        if not (inspect.isclass(obj) or inspect.isroutine(obj)):
            continue
        if d := _doc(obj):
            parts.append(f"{name}.{attr}\n\n{d}")
        if inspect.isclass(obj):
            cls_vars = vars(obj)
            for meth in sorted(cls_vars):
                if meth.startswith("_") and meth != "__init__":
                    continue
                m = cls_vars[meth]
                if inspect.isroutine(m) or isinstance(m, (classmethod, staticmethod, property)):
                    if d := _doc(m):
                        parts.append(f"{name}.{attr}.{meth}\n\n{d}")
    return "\n\n".join(p for p in parts if p.strip())


@lru_cache(maxsize=1)
def default_corpus_bytes() -> bytes:
    """The default corpus as UTF-8 bytes: pydoc help topics (sorted keys), then module docstrings.

    Built in a fresh, isolated interpreter (``python -I``): libraries imported by this process patch
    standard-library functions (torch replaces ``inspect.getfile``), which would change the text.
    """
    src = str(Path(__file__).resolve().parents[1])
    script = f"import sys; sys.path.insert(0, {src!r}); from posenc.data import _build_corpus; " \
             "sys.stdout.buffer.write(_build_corpus())"
    out = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"building the default corpus failed: {out.stderr.decode(errors='replace')[-2000:]}")
    return out.stdout


def _build_corpus() -> bytes:
    """The corpus text; call it in a clean interpreter (see :func:`default_corpus_bytes`)."""
    from pydoc_data.topics import topics

    texts = [f"{key}\n{'-' * len(key)}\n\n{topics[key].strip()}" for key in sorted(topics)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated modules/aliases warn on access; their text is still prose
        texts += [t for name in DEFAULT_MODULES if (t := _module_text(name))]
    return ("\n\n\n".join(texts) + "\n").encode("utf-8")


@dataclass(frozen=True)
class Corpus:
    """A byte corpus with its fixed split. ``train``/``valid`` are uint8 arrays (tokens 0..255)."""

    name: str
    train: np.ndarray
    valid: np.ndarray
    sha256: str
    #: How the validation split was made (recorded with every result).
    split: str = f"interleaved: every {SPLIT_EVERY}th chunk of {SPLIT_CHUNK} bytes"

    @property
    def size(self) -> int:
        return int(self.train.size + self.valid.size)

    def split_info(self) -> dict[str, object]:
        """How the held-out split was made, for the result metadata."""
        return {"kind": self.split, "train_bytes": int(self.train.size), "valid_bytes": int(self.valid.size)}


def interleaved_split(data: np.ndarray, chunk: int = SPLIT_CHUNK, every: int = SPLIT_EVERY
                      ) -> tuple[np.ndarray, np.ndarray]:
    """``(train, valid)``: chunk ``i`` of ``chunk`` bytes is validation when ``i % every == every − 1``."""
    if chunk <= 0 or every < 2:
        raise ValueError(f"interleaved_split: need chunk > 0 and every >= 2, got chunk={chunk}, every={every}")
    idx = np.arange(data.size) // chunk
    held = (idx % every) == every - 1
    return np.ascontiguousarray(data[~held]), np.ascontiguousarray(data[held])


def _split(name: str, data: bytes, sha: str | None = None) -> Corpus:
    train, valid = interleaved_split(np.frombuffer(data, dtype=np.uint8))
    return Corpus(name, train, valid, sha or hashlib.sha256(data).hexdigest())


def eval_span(valid: np.ndarray, scored: int, context: int) -> tuple[np.ndarray, int]:
    """The validation bytes every length scores: ``(stream, start)`` where targets ``stream[start + 1 : start +
    scored + 1]`` are scored at every length, and ``stream[:start]`` (``context`` bytes) is the context that
    sliding windows may read before the span. Raises naming the sizes when the split is too short."""
    need = context + scored + 1
    if valid.size < need:
        raise ValueError(f"the validation split has {valid.size} bytes; evaluation needs {need} "
                         f"({context} bytes of context + {scored} scored + 1)")
    return valid[:need], context


# --------------------------------------------------------------------------- optional corpora
class ChecksumError(RuntimeError):
    """A downloaded file's sha256 differs from the expected one."""


def cache_dir() -> Path:
    """Download cache (:func:`posenc.paths.data_dir`)."""
    return data_dir()


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(url: str, sha256: str, *, filename: str | None = None, cache: Path | None = None,
             timeout: float = 60.0) -> Path:
    """Download ``url`` into the cache once and return its path, verifying ``sha256``.

    A cached file is re-verified on every call. The download goes to a temporary file in the cache
    directory and is moved into place (``os.replace``) only after its checksum matches, so an interrupted
    or corrupted download never leaves a file that looks complete.

    Raises:
        ValueError: ``sha256`` is not 64 hex digits.
        ChecksumError: the (cached or downloaded) file's sha256 differs; the message names the URL and
            both hashes.
    """
    if not isinstance(sha256, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise ValueError(f"download: 'sha256' must be 64 hex digits, got {sha256!r} (url {url})")
    expected = sha256.lower()
    folder = Path(cache) if cache is not None else cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / (filename or Path(urllib.request.urlparse(url).path).name or expected)
    if target.exists():
        actual = _sha256_file(target)
        if actual != expected:
            raise ChecksumError(
                f"cached file {target} for {url} has sha256 {actual}, expected {expected}; delete it to retry"
            )
        return target
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=target.name + ".", suffix=".part")
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            for chunk in iter(lambda: resp.read(1 << 20), b""):
                h.update(chunk)
                out.write(chunk)
        actual = h.hexdigest()
        if actual != expected:
            raise ChecksumError(f"download of {url} has sha256 {actual}, expected {expected}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _zip_members(path: Path, members: tuple[str, ...]) -> bytes:
    with zipfile.ZipFile(path) as z:
        names = set(z.namelist())
        missing = [m for m in members if m not in names]
        if missing:
            raise ValueError(f"{path}: archive lacks member(s) {', '.join(missing)}")
        return b"".join(z.read(m) for m in members)


@dataclass(frozen=True)
class CorpusSpec:
    """An optional corpus: where it lives, its pinned sha256 (None: the caller must give one), and how to
    turn the downloaded file into ``(train_bytes, valid_bytes)``."""

    name: str
    url: str | None
    sha256: str | None
    extract: Callable[[Path], tuple[bytes, bytes]]
    note: str = ""
    split: str = f"interleaved: every {SPLIT_EVERY}th chunk of {SPLIT_CHUNK} bytes"


def _wikitext103(path: Path) -> tuple[bytes, bytes]:
    return (_zip_members(path, ("wikitext-103-raw/wiki.train.raw",)),
            _zip_members(path, ("wikitext-103-raw/wiki.valid.raw",)))


def _enwik8(path: Path) -> tuple[bytes, bytes]:
    data = _zip_members(path, ("enwik8",))
    # The customary split (Al-Rfou et al. 2019; Transformer-XL): 90M train, 5M valid, 5M test.
    return data[:90_000_000], data[90_000_000:95_000_000]


def _plain_text(path: Path) -> tuple[bytes, bytes]:
    train, valid = interleaved_split(np.frombuffer(path.read_bytes(), dtype=np.uint8))
    return train.tobytes(), valid.tobytes()


#: Optional corpora. No checksum is pinned here that was not verified by this project, so these need an
#: explicit ``sha256=`` (and, for PG-19, ``url=``, since it ships as one file per book).
OPTIONAL_CORPORA: dict[str, CorpusSpec] = {
    "wikitext103": CorpusSpec("wikitext103", "https://s3.amazonaws.com/research.metamind.io/wikitext/"
                              "wikitext-103-raw-v1.zip", None, _wikitext103,
                              "raw WikiText-103 (Merity et al. 2017); train and valid files of the archive",
                              "the corpus's own train/valid files"),
    "enwik8": CorpusSpec("enwik8", "http://mattmahoney.net/dc/enwik8.zip", None, _enwik8,
                         "first 10^8 bytes of a 2006 English Wikipedia dump; 90M/5M split",
                         "the customary 90M/5M split"),
    "pg19": CorpusSpec("pg19", None, None, _plain_text,
                       "PG-19 (Rae et al. 2020) is one file per book: pass url= of a concatenated text file"),
}


def load_corpus(name: str = "default", *, url: str | None = None, sha256: str | None = None,
                cache: Path | None = None) -> Corpus:
    """Load a corpus. ``"default"`` is embedded and offline; the optional ones are downloaded once.

    The recorded sha256 is that of the corpus bytes (default) or of the downloaded file (optional).
    """
    if name == "default":
        return _split("default", default_corpus_bytes())
    if name not in OPTIONAL_CORPORA:
        raise ValueError(f"unknown corpus {name!r}; choose default, {', '.join(sorted(OPTIONAL_CORPORA))}")
    spec = OPTIONAL_CORPORA[name]
    url = url or spec.url
    sha = sha256 or spec.sha256
    if url is None:
        raise ValueError(f"corpus {name!r} needs 'url' ({spec.note})")
    if sha is None:
        raise ValueError(f"corpus {name!r} has no pinned checksum: pass 'sha256' for {url}")
    path = download(url, sha, cache=cache)
    train, valid = spec.extract(path)
    return Corpus(name, np.frombuffer(train, dtype=np.uint8), np.frombuffer(valid, dtype=np.uint8), sha.lower(),
                  spec.split)
