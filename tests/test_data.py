"""Corpora, the interleaved split, the evaluation span and the checksummed downloader (offline, 127.0.0.1)."""

from __future__ import annotations

import hashlib
import http.server
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


def test_split_is_every_tenth_chunk() -> None:
    corpus = D.load_corpus()
    data = np.frombuffer(D.default_corpus_bytes(), dtype=np.uint8)
    chunks = [data[i:i + D.SPLIT_CHUNK] for i in range(0, data.size, D.SPLIT_CHUNK)]
    assert np.array_equal(corpus.valid, np.concatenate(chunks[D.SPLIT_EVERY - 1::D.SPLIT_EVERY]))
    assert corpus.train.size + corpus.valid.size == data.size
    assert abs(corpus.valid.size / data.size - 1 / D.SPLIT_EVERY) < 0.01
    assert corpus.valid.dtype == np.uint8 and "interleaved" in corpus.split_info()["kind"]
    with pytest.raises(ValueError, match="every >= 2"):
        D.interleaved_split(data, every=1)


def test_every_length_scores_the_same_span() -> None:
    corpus = D.load_corpus()
    stream, start = D.eval_span(corpus.valid, 16384, 2048)
    assert start == 2048 and stream.size == 2048 + 16384 + 1
    assert np.array_equal(stream, corpus.valid[:stream.size])
    with pytest.raises(ValueError, match="evaluation needs 10000001"):
        D.eval_span(corpus.valid, 10_000_000, 0)


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
