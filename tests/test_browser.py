"""The built book in a real browser: headless Chromium driven over the Chrome DevTools Protocol.

The book is built once per test session (shared with tests/test_book.py), served from 127.0.0.1 on a free
port, and opened in headless Chromium (Debian's ``chromium``). Checks: the home page renders, the
interactive table lists every card and filtering narrows it, a method page shows its formula (rendered by
the vendored MathJax), its BibTeX block and, when a notebook exists, its curve image, and the offline
search finds a method by name. Screenshots go to ``test-artifacts/browser/``.

The DevTools websocket is spoken with tornado's client (tornado is installed with ipykernel). The test is
skipped only when no ``chromium`` binary exists.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import http.server
import itertools
import json
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

try:
    from test_book import ROOT, build_book_once
except ImportError:  # tests/ imported as a package
    from tests.test_book import ROOT, build_book_once

from posenc import book, taxonomy

pytestmark = pytest.mark.slow

ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


# ---------------------------------------------------------------------------------------------- CDP client
class Browser:
    """Headless Chromium with one page, driven synchronously over the DevTools protocol."""

    def __init__(self, binary: str, user_data: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.ids = itertools.count(1)
        self.proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--no-first-run", "--no-default-browser-check", "--hide-scrollbars", "--mute-audio",
             f"--user-data-dir={user_data}", "--remote-debugging-port=0", "--window-size=1280,1600",
             "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        port_file = user_data / "DevToolsActivePort"
        deadline = time.monotonic() + 20
        while not (port_file.is_file() and len(port_file.read_text().splitlines()) >= 2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"chromium did not start (exit code {self.proc.returncode})")
            time.sleep(0.05)
        self.port = int(port_file.read_text().splitlines()[0])
        # The page target created at start-up ("about:blank").
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=10) as r:
            targets = json.loads(r.read())
        page = next(t for t in targets if t.get("type") == "page")
        self.ws = self.run(self._connect(page["webSocketDebuggerUrl"]))

    async def _connect(self, url: str) -> Any:
        from tornado.websocket import websocket_connect

        return await websocket_connect(url, max_message_size=256 * 1024 * 1024)

    def run(self, coro: Any, timeout: float = 30) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coro, timeout))

    async def _call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        msg_id = next(self.ids)
        await self.ws.write_message(json.dumps({"id": msg_id, "method": method, "params": params or {}}))
        while True:
            raw = await self.ws.read_message()
            if raw is None:
                raise RuntimeError("DevTools connection closed")
            msg = json.loads(raw)
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            # other messages are events (Page.enable): not needed

    def call(self, method: str, params: dict[str, Any] | None = None, timeout: float = 30) -> dict[str, Any]:
        return self.run(self._call(method, params), timeout)

    def evaluate(self, expression: str, timeout: float = 30) -> Any:
        """Evaluate JavaScript in the page (promises are awaited) and return its JSON value."""
        res = self.call("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                             "returnByValue": True}, timeout)
        if "exceptionDetails" in res:
            raise RuntimeError(f"JavaScript error: {res['exceptionDetails']}")
        return res.get("result", {}).get("value")

    def goto(self, url: str) -> None:
        """Navigate and wait until the document (and its scripts) finished loading."""
        self.evaluate("window.__posencOld = true")  # gone once the new document replaced this one
        self.call("Page.navigate", {"url": url})
        self.wait_for("!window.__posencOld && document.readyState === 'complete'")

    def wait_for(self, condition: str, timeout: float = 20) -> Any:
        """Poll a JavaScript expression until it is truthy; fail with the expression on timeout.

        Polls in short in-page rounds, so a navigation (e.g. a redirect) during the wait only costs a retry.
        """
        js = f"""new Promise((resolve) => {{
            const t0 = Date.now();
            const tick = () => {{
                let v; try {{ v = ({condition}); }} catch (e) {{ v = false; }}
                if (v || Date.now() - t0 > 1000) resolve(v || false); else setTimeout(tick, 50);
            }};
            tick();
        }})"""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = self.evaluate(js, 10)
            except RuntimeError as exc:  # the page navigated while the promise was pending
                if "navigated" not in str(exc) and "context" not in str(exc):
                    raise
                value = False
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for: {condition} (on {self.evaluate('location.href')})")

    def screenshot(self, name: str, full_page: bool = False) -> Path:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = self.evaluate("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
            params["clip"] = {"x": 0, "y": 0, "width": size[0], "height": min(size[1], 6000), "scale": 1}
            params["captureBeyondViewport"] = True
        data = self.call("Page.captureScreenshot", params)["data"]
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            if getattr(self, "ws", None) is not None:
                self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.loop.close()


# ---------------------------------------------------------------------------------------------- fixtures
class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    """The built book served over HTTP on 127.0.0.1 (a free port), as its base URL."""
    res = build_book_once()
    assert res.returncode == 0 and res.warnings == [], "the book build failed:\n" + "\n".join(res.warnings)
    handler = functools.partial(_QuietHandler, directory=str(res.html_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (CI installs Debian's chromium package)")
    with tempfile.TemporaryDirectory(prefix="posenc-chromium-", ignore_cleanup_errors=True) as tmp:
        b = Browser(CHROMIUM, Path(tmp))
        try:
            b.call("Page.enable")
            b.call("Emulation.setDeviceMetricsOverride",
                   {"width": 1280, "height": 1600, "deviceScaleFactor": 1, "mobile": False})
            yield b
        finally:
            b.close()


# ---------------------------------------------------------------------------------------------- checks
def test_home_page_renders(site: str, browser: Browser) -> None:
    browser.goto(f"{site}/index.html")  # redirects to the root page
    browser.wait_for("location.pathname.endsWith('/book/intro.html')")
    h1 = browser.wait_for("document.querySelector('h1') && document.querySelector('h1').innerText")
    assert "atlas of positional encodings" in h1
    assert "posenc" in browser.evaluate("document.title")
    # the generated taxonomy tree is included and links to method pages
    n_links = browser.evaluate("document.querySelectorAll('a[href*=\"generated/methods/\"]').length")
    assert n_links >= len(taxonomy.card_ids(ROOT))
    browser.screenshot("home")


def test_table_lists_every_card_and_filters(site: str, browser: Browser) -> None:
    n_cards = len(taxonomy.card_ids(ROOT))
    browser.goto(f"{site}/book/generated/table.html")
    rows = f"document.querySelectorAll('#{book.TABLE_ID} tbody tr')"
    browser.wait_for(f"document.querySelector('#{book.TABLE_ID}.dataTable') && {rows}.length > 1")
    assert browser.evaluate(f"{rows}.length") == n_cards
    browser.screenshot("table")
    # typing into DataTables' search box filters the rows
    browser.evaluate("""(() => {
        const input = document.querySelector('.dt-search input, .dataTables_filter input');
        input.value = 'alibi';
        input.dispatchEvent(new Event('input', {bubbles: true}));
        input.dispatchEvent(new KeyboardEvent('keyup', {bubbles: true}));
        return true; })()""")
    browser.wait_for(f"{rows}.length < {n_cards}")
    texts = browser.evaluate(f"Array.from({rows}).map(r => r.innerText)")
    assert 0 < len(texts) < n_cards
    assert all("alibi" in t.lower() for t in texts), texts
    assert any(t.split()[0] == "alibi" for t in texts)
    browser.screenshot("table-filtered")
    # the id cell links to the method page
    href = browser.evaluate(f"document.querySelector('#{book.TABLE_ID} tbody a[href$=\"methods/alibi.html\"]').href")
    assert href.endswith("/book/generated/methods/alibi.html")


def _method_with_notebook() -> str | None:
    ctx = book.load_context(ROOT)
    for cid in ctx.cards:
        run = ctx.run(cid)
        if run is not None and run.notebook and book.key_figure(ctx.root / run.notebook) is not None:
            return cid
    return None


def test_method_page_formula_and_citation(site: str, browser: Browser) -> None:
    browser.goto(f"{site}/book/generated/methods/alibi.html")
    # MathJax (served from _static/mathjax) typesets the display formula
    browser.wait_for("window.MathJax && MathJax.startup && MathJax.startup.promise && "
                     "document.querySelectorAll('#formula mjx-container').length > 0")
    assert browser.evaluate("document.querySelectorAll('mjx-merror').length") == 0
    src = browser.evaluate("document.querySelector('script[src*=\"mathjax\"]').src")
    assert src.startswith(site), f"MathJax is not served by the book: {src}"
    cite = browser.evaluate("document.querySelector('#cite-this-entry pre').innerText")
    assert cite.startswith("@inproceedings{press2022train") and "Press, Ofir" in cite
    browser.screenshot("method-alibi")
    browser.evaluate("document.querySelector('#claims-and-verdicts').scrollIntoView()")
    browser.screenshot("method-alibi-claims-and-citation")


def test_method_page_curve_image(site: str, browser: Browser) -> None:
    cid = _method_with_notebook()
    if cid is None:
        pytest.skip("no card has an executed notebook with a figure under book/runs/ yet")
    browser.goto(f"{site}/book/generated/methods/{cid}.html")
    img = "document.querySelector('#experiment img')"
    browser.wait_for(f"{img} && {img}.complete")
    assert browser.evaluate(f"{img}.naturalWidth") > 0, "the key figure did not load"
    browser.evaluate(f"{img}.scrollIntoView()")
    browser.screenshot(f"method-{cid}-figure")


def test_search_finds_a_method_by_name(site: str, browser: Browser) -> None:
    browser.goto(f"{site}/search.html?q=ALiBi")
    links = "Array.from(document.querySelectorAll('#search-results a')).map(a => a.getAttribute('href'))"
    browser.wait_for(f"{links}.some(h => h.includes('generated/methods/alibi.html'))")
    browser.screenshot("search-alibi")


def test_no_formula_fails_to_typeset(site: str, browser: Browser) -> None:
    """Every method page's formula typesets without a MathJax error (a card with bad LaTeX fails here)."""
    bad = []
    for cid in taxonomy.card_ids(ROOT):
        browser.goto(f"{site}/book/generated/methods/{cid}.html")
        browser.wait_for("window.MathJax && MathJax.startup && MathJax.startup.promise && "
                         "MathJax.startup.promise.then(() => true)")
        errors = browser.evaluate("Array.from(document.querySelectorAll('mjx-merror'))"
                                  ".map(e => e.getAttribute('data-mjx-error') || e.textContent)")
        if errors:
            bad.append(f"{cid}: {errors}")
    assert not bad, "MathJax errors:\n" + "\n".join(bad)
