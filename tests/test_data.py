"""Corpora, the checksummed downloader (offline, against 127.0.0.1) and the synthetic tasks."""

from __future__ import annotations

import hashlib
import http.server
import re
import shutil
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from posenc import data as D

FIXTURES = Path(__file__).parent / "fixtures" / "data"


# --------------------------------------------------------------------------- default corpus
def test_default_corpus_is_deterministic_with_its_sha() -> None:
    first = D.default_corpus_bytes()
    D.default_corpus_bytes.cache_clear()
    second = D.default_corpus_bytes()
    assert first == second
    corpus = D.load_corpus()
    assert corpus.sha256 == hashlib.sha256(second).hexdigest()
    assert corpus.size == len(second) > 1_000_000  # about 1.5 MB of prose on CPython 3.11
    text = second.decode("utf-8")
    assert "The pass statement" in text or "pass" in text  # pydoc topics are included
    assert "textwrap.dedent" in text  # and module docstrings


def test_corpus_does_not_depend_on_what_this_process_imported() -> None:
    import subprocess
    import sys

    import torch  # noqa: F401  (torch patches inspect.getfile, which must not change the corpus)

    out = subprocess.run([sys.executable, "-c", "from posenc.data import load_corpus; print(load_corpus().sha256)"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == D.load_corpus().sha256


def test_split_is_the_last_ten_percent() -> None:
    corpus = D.load_corpus()
    data = np.frombuffer(D.default_corpus_bytes(), dtype=np.uint8)
    assert np.array_equal(np.concatenate([corpus.train, corpus.valid]), data)
    assert abs(corpus.valid.size / data.size - 0.10) < 1e-3
    assert corpus.valid.dtype == np.uint8 and corpus.train.max() <= 255


def test_unknown_corpus_and_missing_checksum_are_named() -> None:
    with pytest.raises(ValueError, match="unknown corpus 'wiki'"):
        D.load_corpus("wiki")
    with pytest.raises(ValueError, match="sha256"):
        D.load_corpus("enwik8")
    with pytest.raises(ValueError, match="url"):
        D.load_corpus("pg19", sha256="0" * 64)


# --------------------------------------------------------------------------- downloader
@pytest.fixture()
def server(tmp_path: Path) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 serving a copy of the fixtures; yields its base URL."""
    root = tmp_path / "www"
    shutil.copytree(FIXTURES, root)
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None  # type: ignore[method-assign]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_verifies_and_caches(server: str, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    sha = _sha(FIXTURES / "book.txt")
    path = D.download(f"{server}/book.txt", sha, cache=cache)
    assert path.read_bytes() == (FIXTURES / "book.txt").read_bytes()
    assert [p.name for p in cache.iterdir()] == ["book.txt"]  # no temporary file left
    # Cached: a second call needs no server.
    assert D.download("http://127.0.0.1:9/book.txt", sha, cache=cache) == path


def test_download_checksum_mismatch_names_url_and_hashes(server: str, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    wrong = "ab" * 32
    url = f"{server}/book.txt"
    with pytest.raises(D.ChecksumError) as err:
        D.download(url, wrong, cache=cache)
    msg = str(err.value)
    assert url in msg and wrong in msg and _sha(FIXTURES / "book.txt") in msg
    assert list(cache.iterdir()) == []  # nothing that looks complete is left behind


def test_download_rejects_a_malformed_checksum(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'sha256' must be 64 hex digits"):
        D.download("http://127.0.0.1:9/x", "1234", cache=tmp_path)


def test_corrupted_cache_is_reported(server: str, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    sha = _sha(FIXTURES / "book.txt")
    path = D.download(f"{server}/book.txt", sha, cache=cache)
    path.write_bytes(b"tampered")
    with pytest.raises(D.ChecksumError, match="cached file"):
        D.download(f"{server}/book.txt", sha, cache=cache)


def test_optional_corpus_through_the_downloader(server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSENC_CACHE", str(tmp_path / "env-cache"))
    sha = _sha(FIXTURES / "wikitext-103-raw-v1.zip")
    corpus = D.load_corpus("wikitext103", url=f"{server}/wikitext-103-raw-v1.zip", sha256=sha)
    assert bytes(corpus.train).startswith(b"= Valkyria Chronicles =")
    assert bytes(corpus.valid).startswith(b" = Robert Boulter =")
    assert corpus.sha256 == sha
    assert (tmp_path / "env-cache" / "data" / "wikitext-103-raw-v1.zip").exists()  # POSENC_CACHE honoured


# --------------------------------------------------------------------------- arithmetic chain
def _value(prompt: str) -> int:
    v = int(prompt[0])
    for s, d in re.findall(r"([+-])(\d)", prompt):
        v = (v + int(d)) % 10 if s == "+" else (v - int(d)) % 10
    return v


def test_arithmetic_answers_and_lengths() -> None:
    for length in (16, 64, 129):
        x, y = D.arithmetic_eval_set(length, 50, seed=3)
        assert x.shape == (50, length)
        for row, ans in zip(x, y, strict=True):
            prompt = bytes(row).decode().lstrip()
            assert prompt.endswith("=") and re.fullmatch(r"\d([+-]\d)+=", prompt)
            assert _value(prompt) == int(chr(ans))
    x2, y2 = D.arithmetic_eval_set(64, 50, seed=3)
    assert np.array_equal(D.arithmetic_eval_set(64, 50, seed=3)[0], x2)  # seeded
    assert not np.array_equal(D.arithmetic_eval_set(64, 50, seed=4)[0], x2)


def test_arithmetic_answers_are_uniform() -> None:
    _, y = D.arithmetic_eval_set(64, 3000, seed=0)
    freq = np.bincount(y - ord("0"), minlength=10) / y.size
    assert freq.min() > 0.07 and freq.max() < 0.13


def test_no_local_shortcut_but_bounded_chains_leak() -> None:
    x, y = D.arithmetic_eval_set(128, 2000, seed=1)
    for k in (4, 16, 64, 127):
        assert abs(D.local_window_accuracy(x, y, k) - 0.1) < 0.03, k
    assert D.local_window_accuracy(x, y, 128) == 1.0  # seeing everything solves it: the predictor is real
    xb, yb = D.arithmetic_eval_set(128, 2000, seed=1, bounded=True)
    assert D.local_window_accuracy(xb, yb, 16, bounded=True) > 0.35  # the shortcut the design warns about


def test_arithmetic_training_targets_are_the_answers() -> None:
    rng = np.random.default_rng(0)
    x, y = D.arithmetic_batch(6, 64, rng)
    assert x.shape == y.shape == (6, 64)
    n_targets = 0
    for row, tgt in zip(x, y, strict=True):
        text = bytes(row.astype(np.uint8)).decode()
        for i in np.flatnonzero(tgt != D.IGNORE):
            assert text[i] == "="
            start = text.rfind("\n", 0, i) + 1
            assert _value(text[start:i + 1]) == int(chr(tgt[i]))
            n_targets += 1
    assert n_targets >= 6
    with pytest.raises(ValueError, match="'length'"):
        D.arithmetic_eval_set(3, 1, 0)


# --------------------------------------------------------------------------- passkey
def test_passkey_examples() -> None:
    x, keys = D.passkey_eval_set(256, 8, seed=0)
    assert x.shape == (8, 256) and keys.shape == (8, 5)
    depths = []
    for row, key in zip(x, keys, strict=True):
        text, k = bytes(row).decode(), bytes(key).decode()
        assert text.endswith(D.PASSKEY_QUERY + k)
        assert text.count(k) == 2 and re.fullmatch(r"[1-9]\d{4}", k)
        depths.append(text.index(D.PASSKEY_NEEDLE.format(key=k)))
    assert depths == sorted(depths) and depths[-1] - depths[0] > 100  # spread over the filler
    with pytest.raises(ValueError, match="'length' must be at least"):
        D.passkey_example(20, np.random.default_rng(0))


def test_passkey_training_targets_are_the_key() -> None:
    x, y = D.passkey_train_batch(4, 64, np.random.default_rng(1))
    for row, tgt in zip(x, y, strict=True):
        scored = tgt[tgt != D.IGNORE]
        assert scored.size == 5
        key = bytes(scored.astype(np.uint8)).decode()
        text = bytes(row.astype(np.uint8)).decode()
        assert D.PASSKEY_NEEDLE.format(key=key) in text
        assert text.endswith(D.PASSKEY_QUERY + key[:4])  # the last input digit predicts the fifth
