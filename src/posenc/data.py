"""Corpora and synthetic tasks: bytes as tokens (vocabulary 256).

* The **default corpus** is English prose that ships with CPython itself, so every experiment runs offline:
  the help topics of :mod:`pydoc_data.topics` (sorted keys) followed by the docstrings of a fixed, sorted
  list of standard-library modules (module, public classes and functions, their public methods),
  concatenated deterministically and encoded as UTF-8. The last 10% is the validation split. Its sha256 is
  recorded with every result; it changes with the Python version, since docstrings do.
* **Optional corpora** (WikiText-103, enwik8, PG-19) go through :func:`download`, a cached, checksummed
  downloader. They are never used by default.
* **Synthetic tasks** are generated in code from a seed:

  - the survey's proposed benchmark (Zhao et al. 2024, Appendix A.3): a chain of single-digit additions
    and subtractions whose answer is the running value modulo 10 (``"3+4-7+1=1"``). Each step is
    uniform, so the answer is uniform given any suffix that misses one step: a model that sees only the
    last k tokens scores at chance (10%), which :func:`local_window_accuracy` checks. The bounded variant
    (every intermediate result kept in 0..9) is provided only as a contrast: its last operations leak the
    answer;
  - passkey retrieval (Mohtashami & Jaggi 2023, "Landmark Attention"): a 5-digit key hidden at a random
    depth in repeated filler text and asked for at the end.
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
    "arithmetic_example",
    "arithmetic_batch",
    "arithmetic_eval_set",
    "local_window_accuracy",
    "passkey_example",
    "passkey_eval_set",
    "passkey_train_batch",
    "PASSKEY_NEEDLE",
    "PASSKEY_QUERY",
    "PASSKEY_FILLER",
    "IGNORE",
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

#: Fraction of the corpus (its tail) used for validation.
VALID_FRACTION = 0.10


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

    @property
    def size(self) -> int:
        return int(self.train.size + self.valid.size)


def _split(name: str, data: bytes, sha: str | None = None) -> Corpus:
    arr = np.frombuffer(data, dtype=np.uint8)
    cut = int(round(arr.size * (1.0 - VALID_FRACTION)))
    return Corpus(name, arr[:cut], arr[cut:], sha or hashlib.sha256(data).hexdigest())


# --------------------------------------------------------------------------- optional corpora
class ChecksumError(RuntimeError):
    """A downloaded file's sha256 differs from the expected one."""


def cache_dir() -> Path:
    """Download cache: ``$POSENC_CACHE/data`` when set, else ``~/.cache/posenc/data``."""
    root = os.environ.get("POSENC_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "posenc") / "data"


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


def _wikitext103(path: Path) -> tuple[bytes, bytes]:
    return (_zip_members(path, ("wikitext-103-raw/wiki.train.raw",)),
            _zip_members(path, ("wikitext-103-raw/wiki.valid.raw",)))


def _enwik8(path: Path) -> tuple[bytes, bytes]:
    data = _zip_members(path, ("enwik8",))
    # The customary split (Al-Rfou et al. 2019; Transformer-XL): 90M train, 5M valid, 5M test.
    return data[:90_000_000], data[90_000_000:95_000_000]


def _plain_text(path: Path) -> tuple[bytes, bytes]:
    data = path.read_bytes()
    cut = int(round(len(data) * (1.0 - VALID_FRACTION)))
    return data[:cut], data[cut:]


#: Optional corpora. No checksum is pinned here that was not verified by this project, so these need an
#: explicit ``sha256=`` (and, for PG-19, ``url=``, since it ships as one file per book).
OPTIONAL_CORPORA: dict[str, CorpusSpec] = {
    "wikitext103": CorpusSpec("wikitext103", "https://s3.amazonaws.com/research.metamind.io/wikitext/"
                              "wikitext-103-raw-v1.zip", None, _wikitext103,
                              "raw WikiText-103 (Merity et al. 2017); train and valid files of the archive"),
    "enwik8": CorpusSpec("enwik8", "http://mattmahoney.net/dc/enwik8.zip", None, _enwik8,
                         "first 10^8 bytes of a 2006 English Wikipedia dump; 90M/5M split"),
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
    return Corpus(name, np.frombuffer(train, dtype=np.uint8), np.frombuffer(valid, dtype=np.uint8), sha.lower())


# --------------------------------------------------------------------------- arithmetic chain (A.3)
def _ops_for_length(length: int) -> int:
    """Number of operations of a chain whose text ``d(±d)*=a`` fits ``length`` bytes (2n + 3 ≤ length)."""
    n = (length - 3) // 2
    if n < 1:
        raise ValueError(f"arithmetic: 'length' must be at least 5 bytes, got {length}")
    return n


def arithmetic_example(n_ops: int, rng: np.random.Generator, *, bounded: bool = False) -> tuple[str, int]:
    """One chain of ``n_ops`` single-digit operations: ``("3+4-7+1=", answer)``.

    Unbounded (default): the answer is the running value modulo 10; the first digit, each sign and each
    operand are uniform, so every step is a uniform shift mod 10. Bounded: every intermediate value stays in
    0..9 (signs/operands uniform among those that keep it there); provided only to show the shortcut.
    """
    if n_ops < 1:
        raise ValueError(f"arithmetic: 'n_ops' must be >= 1, got {n_ops}")
    v = int(rng.integers(10))
    parts = [str(v)]
    if bounded:
        for _ in range(n_ops):
            choices = [(s, d) for s in "+-" for d in range(10) if 0 <= (v + d if s == "+" else v - d) <= 9]
            s, d = choices[int(rng.integers(len(choices)))]
            v = v + d if s == "+" else v - d
            parts.append(f"{s}{d}")
    else:
        signs = rng.integers(2, size=n_ops)
        digits = rng.integers(10, size=n_ops)
        for s, d in zip(signs, digits, strict=True):
            v = (v + int(d)) % 10 if s else (v - int(d)) % 10
            parts.append(f"{'+' if s else '-'}{int(d)}")
    return "".join(parts) + "=", v


def arithmetic_eval_set(length: int, n: int, seed: int, *, bounded: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``n`` chains whose prompt is exactly ``length`` bytes (left-padded with spaces), answer digit bytes.

    Returns ``(tokens (n, length) uint8, answers (n,) uint8 ASCII digit)``. The model reads the prompt and
    its prediction after the final ``=`` is scored.
    """
    rng = np.random.default_rng([seed, length, 1])
    n_ops = _ops_for_length(length + 1)
    x = np.empty((n, length), dtype=np.uint8)
    y = np.empty(n, dtype=np.uint8)
    for i in range(n):
        prompt, ans = arithmetic_example(n_ops, rng, bounded=bounded)
        x[i] = np.frombuffer(prompt.rjust(length).encode(), dtype=np.uint8)
        y[i] = ord(str(ans))
    return x, y


def arithmetic_batch(batch: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Training windows of ``length`` tokens packed with chains of random length (1 to the most that fit).

    Chains are separated by newlines; only the answer after each ``=`` is a target (others are
    :data:`IGNORE`). Returns ``(inputs (B, L) int64, targets (B, L) int64)``.
    """
    max_ops = _ops_for_length(length + 1)
    xs = np.full((batch, length + 1), ord(" "), dtype=np.int64)
    ys = np.full((batch, length), IGNORE, dtype=np.int64)
    for b in range(batch):
        pos = 0
        while True:
            room = length + 1 - pos  # bytes left, the example takes 2n + 3 plus a newline
            fit = min(max_ops, (room - 4) // 2)
            if fit < 1:
                break
            prompt, ans = arithmetic_example(int(rng.integers(1, fit + 1)), rng)
            text = (prompt + str(ans) + "\n").encode()
            xs[b, pos:pos + len(text)] = np.frombuffer(text, dtype=np.uint8)
            ys[b, pos + len(prompt) - 1] = ord(str(ans))  # predicted at the '=' position
            pos += len(text)
    return xs[:, :-1], ys


def local_window_accuracy(tokens: np.ndarray, answers: np.ndarray, k: int, *, bounded: bool = False) -> float:
    """Accuracy of the best predictor that sees only the last ``k`` bytes of each prompt.

    The predictor parses the complete operations ``±d`` inside the window and tries every value 0..9 for
    the (unseen) running value before them; under ``bounded`` it keeps only starts whose intermediate values
    stay in 0..9. It predicts the most frequent resulting answer (ties: the smallest). When the window holds
    the whole chain it reads the first digit and is exact. For the unbounded task every start is possible
    and leads to a different answer, so it is right 1 time in 10.
    """
    if k < 1:
        raise ValueError(f"local_window_accuracy: 'k' must be >= 1, got {k}")
    correct = 0
    for row, ans in zip(tokens, answers, strict=True):
        text = bytes(row).decode().lstrip()
        window = text[-k:]
        full = len(text) <= k
        ops = [(m.group(1), int(m.group(2))) for m in re.finditer(r"([+-])(\d)", window)]
        starts = [int(text[0])] if full else list(range(10))
        finals: list[int] = []
        for v in starts:
            ok = True
            for s, d in ops:
                v = v + d if s == "+" else v - d
                if bounded and not 0 <= v <= 9:
                    ok = False
                    break
                v %= 10
            if ok:
                finals.append(v)
        counts = np.bincount(finals, minlength=10) if finals else np.ones(10, dtype=int)
        correct += int(int(np.argmax(counts)) == int(chr(int(ans))))
    return correct / max(1, len(answers))


# --------------------------------------------------------------------------- passkey retrieval
#: Filler of Mohtashami & Jaggi (2023), repeated as needed.
PASSKEY_FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
#: The needle (``{key}`` = five digits) and the query. Short enough to fit a 64-byte training window.
PASSKEY_NEEDLE = "The key is {key}. "
PASSKEY_QUERY = " What is the key? The key is "
_KEY_DIGITS = 5


def passkey_example(length: int, rng: np.random.Generator, *, depth: float | None = None) -> tuple[str, str]:
    """``(prompt, key)`` with ``len(prompt) + 5 == length`` bytes: filler, the needle at ``depth`` (a fraction
    of the filler, random when None), filler, then the query; the answer is the 5-digit key."""
    key = str(int(rng.integers(10_000, 100_000)))
    needle = PASSKEY_NEEDLE.format(key=key)
    n_fill = length - len(needle) - len(PASSKEY_QUERY) - _KEY_DIGITS
    if n_fill < 0:
        raise ValueError(f"passkey: 'length' must be at least {length - n_fill} bytes, got {length}")
    offset = int(rng.integers(len(PASSKEY_FILLER)))
    reps = (offset + n_fill) // len(PASSKEY_FILLER) + 1
    filler = (PASSKEY_FILLER * reps)[offset:offset + n_fill]
    d = float(rng.random()) if depth is None else depth
    if not 0.0 <= d <= 1.0:
        raise ValueError(f"passkey: 'depth' must be in [0, 1], got {depth!r}")
    cut = int(round(d * n_fill))
    return filler[:cut] + needle + filler[cut:] + PASSKEY_QUERY, key


def passkey_eval_set(length: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` full sequences of ``length`` bytes (prompt + key) and their keys as (n, 5) uint8 bytes.

    Depths are evenly spread over [0, 1]. A key counts as retrieved when the argmax after the prompt and
    after each correct digit gives the next digit, i.e. when greedy decoding returns the exact key.
    """
    rng = np.random.default_rng([seed, length, 2])
    x = np.empty((n, length), dtype=np.uint8)
    keys = np.empty((n, _KEY_DIGITS), dtype=np.uint8)
    for i in range(n):
        prompt, key = passkey_example(length, rng, depth=(i + 0.5) / n)
        x[i] = np.frombuffer((prompt + key).encode(), dtype=np.uint8)
        keys[i] = np.frombuffer(key.encode(), dtype=np.uint8)
    return x, keys


def passkey_train_batch(batch: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Training windows of ``length`` tokens; only the five key digits after the query are targets."""
    xs = np.empty((batch, length + 1), dtype=np.int64)
    ys = np.full((batch, length), IGNORE, dtype=np.int64)
    for b in range(batch):
        prompt, key = passkey_example(length + 1, rng)
        xs[b] = np.frombuffer((prompt + key).encode(), dtype=np.uint8)
        ys[b, length - _KEY_DIGITS:] = xs[b, length + 1 - _KEY_DIGITS:]
    return xs[:, :-1], ys
