"""The built book in a real browser: headless Chromium (Debian's ``chromium``) over the DevTools protocol.

The book is built once per session (shared with test_build.py), served from 127.0.0.1, and every HTML page of
it is opened: a page fails on any uncaught JavaScript exception, console error or failed request (a missing
favicon or a script declared twice counts). Then: the home page leads with its results and the "Cite posenc"
block, the interactive tables sort when a header is clicked, method pages typeset their formula and show their
figure beside the verdicts and the rerun buttons, and the offline search finds a method by name. Screenshots go
to ``test-artifacts/browser/`` (the leaderboard, three method pages' figures with their legends, the home page,
the atlas table, the search).

The DevTools websocket is spoken with tornado's client. The test is skipped only when no ``chromium`` exists.
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

from posenc import book, taxonomy

from .conftest import ROOT

pytestmark = pytest.mark.slow

ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


# ---------------------------------------------------------------------------------------------- CDP client
class Browser:
    """Headless Chromium with one page, driven synchronously over the DevTools protocol; every exception,
    console error and failed request of the page is kept in ``errors``."""

    def __init__(self, binary: str, user_data: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.ids = itertools.count(1)
        self.errors: list[str] = []
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
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=10) as r:
            targets = json.loads(r.read())
        page = next(t for t in targets if t.get("type") == "page")
        self.ws = self.run(self._connect(page["webSocketDebuggerUrl"]))

    async def _connect(self, url: str) -> Any:
        from tornado.websocket import websocket_connect

        return await websocket_connect(url, max_message_size=256 * 1024 * 1024)

    def run(self, coro: Any, timeout: float = 30) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coro, timeout))

    def _event(self, msg: dict[str, Any]) -> None:
        method, params = msg.get("method"), msg.get("params", {})
        if method == "Runtime.exceptionThrown":
            d = params.get("exceptionDetails", {})
            self.errors.append(f"exception: {d.get('exception', {}).get('description') or d.get('text')}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.errors.append("console.error: " + " ".join(str(a.get("value", a.get("description")))
                                                            for a in params.get("args", [])))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            e = params["entry"]
            self.errors.append(f"{e.get('source')}: {e.get('text')} {e.get('url', '')}".strip())

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
            self._event(msg)

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
        """Poll a JavaScript expression until it is truthy; fail with the expression on timeout."""
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

    def settle(self, seconds: float = 0.3) -> None:
        """Let late events (async scripts, failed requests) arrive; a page that redirects (the root index.html)
        is followed to where it lands."""
        try:
            self.evaluate(f"new Promise(r => setTimeout(r, {int(seconds * 1000)}))")
        except RuntimeError as exc:
            if "navigated" not in str(exc) and "context" not in str(exc):
                raise
            self.wait_for("document.readyState === 'complete'")

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

    def scroll_to(self, selector: str) -> None:
        self.evaluate(f"document.querySelector({json.dumps(selector)}).scrollIntoView({{block: 'start'}})")
        self.settle(0.2)

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
def site(built: book.BuildResult) -> Iterator[str]:
    """The built book served over HTTP on 127.0.0.1 (a free port), as its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(built.html_dir))
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
            for domain in ("Page", "Runtime", "Log"):
                b.call(f"{domain}.enable")
            b.call("Emulation.setDeviceMetricsOverride",
                   {"width": 1280, "height": 1600, "deviceScaleFactor": 1, "mobile": False})
            yield b
        finally:
            b.close()


def _pages(html_dir: Path) -> list[str]:
    """Every HTML page of the book (not Sphinx's own asset folders)."""
    skip = ("_static/", "_sources/", "_downloads/", "_images/")
    return sorted(p.relative_to(html_dir).as_posix() for p in html_dir.rglob("*.html")
                  if not p.relative_to(html_dir).as_posix().startswith(skip))


def _published() -> book.Context:
    return book.load_context(ROOT)


# ---------------------------------------------------------------------------------------------- checks
def test_every_page_loads_without_a_javascript_error(site: str, browser: Browser, built: book.BuildResult) -> None:
    pages = _pages(built.html_dir)
    assert len(pages) > len(taxonomy.card_ids(ROOT)), pages
    failures = {}
    for rel in pages:
        browser.errors.clear()
        browser.goto(f"{site}/{rel}")
        browser.settle()
        if browser.errors:
            failures[rel] = list(browser.errors)
    (ARTIFACTS.mkdir(parents=True, exist_ok=True), (ARTIFACTS / "pages-visited.txt").write_text(
        f"{len(pages)} pages visited, {sum(map(len, failures.values()))} errors\n" + "\n".join(pages) + "\n"))
    assert failures == {}, json.dumps(failures, indent=1)[:4000]


def test_home_page_leads_with_the_results_and_cite_block(site: str, browser: Browser) -> None:
    browser.goto(f"{site}/index.html")  # redirects to the root page
    browser.wait_for("location.pathname.endsWith('/book/intro.html')")
    h1 = browser.wait_for("document.querySelector('h1') && document.querySelector('h1').innerText")
    assert "atlas of positional encodings" in h1
    sections = browser.evaluate("Array.from(document.querySelectorAll('section > h2')).map(h => h.innerText)")
    assert sections[0].startswith("What the results show"), sections
    assert any(s.startswith("Cite posenc") for s in sections)
    assert "@software{posenc" in browser.evaluate("document.querySelector('#cite-posenc pre').innerText")
    footer = browser.evaluate("document.querySelector('.posenc-footer').innerText")
    assert "posenc 0.1.0" in footer and "built 20" in footer
    browser.screenshot("home")
    if _published().published is not None:
        browser.scroll_to("#what-the-results-show")
        browser.screenshot("home-results")


def _sorts_on_header_click(browser: Browser, table_id: str, header_text: str) -> None:
    """Click the header text (not the arrow) of a column and check the rows come back sorted by it."""
    col = browser.evaluate(f"""(() => {{
        const dt = $('#{table_id}').DataTable();
        const idx = dt.columns().indexes().toArray()
            .find(i => dt.column(i).header().innerText.trim() === {json.dumps(header_text)});
        return idx === undefined ? -1 : idx; }})()""")
    assert col >= 0, f"no column {header_text!r} in #{table_id}"
    browser.evaluate(f"""(() => {{
        const dt = $('#{table_id}').DataTable();
        dt.column({col}).header().querySelector('.dt-column-title').click(); return true; }})()""")
    order = browser.evaluate(f"$('#{table_id}').DataTable().order()")
    assert order and order[0][0] == col, order
    keys = browser.evaluate(f"""(() => {{
        const dt = $('#{table_id}').DataTable();
        return dt.column({col}, {{order: 'current'}}).data().toArray().map(d => {{
            const m = /data-order="([^"]+)"/.exec(String(d)); return m ? parseFloat(m[1]) : String(d); }}); }})()""")
    expected = sorted(keys, reverse=order[0][1] == "desc", key=lambda k: (isinstance(k, str), k))
    assert keys == expected, keys


def test_atlas_table_filters_and_sorts_by_header_click(site: str, browser: Browser) -> None:
    n_cards = len(taxonomy.card_ids(ROOT))
    browser.goto(f"{site}/book/generated/table.html")
    rows = f"document.querySelectorAll('#{book.TABLE_ID} tbody tr')"
    browser.wait_for(f"document.querySelector('#{book.TABLE_ID}.dataTable') && {rows}.length > 1")
    assert browser.evaluate(f"{rows}.length") == n_cards
    _sorts_on_header_click(browser, book.TABLE_ID, "year")
    browser.screenshot("table")
    browser.evaluate("""(() => {
        const input = document.querySelector('.dt-search input, .dataTables_filter input');
        input.value = 'rope';
        input.dispatchEvent(new Event('input', {bubbles: true}));
        input.dispatchEvent(new KeyboardEvent('keyup', {bubbles: true}));
        return true; })()""")
    browser.wait_for(f"{rows}.length < {n_cards}")
    texts = browser.evaluate(f"Array.from({rows}).map(r => r.innerText)")
    assert any(t.split()[0] == "yarn" for t in texts), texts  # found through its base PE column
    browser.screenshot("table-filtered-rope")


def test_leaderboard_table_sorts_by_a_clicked_column_and_figure_is_legible(site: str, browser: Browser) -> None:
    ctx = _published()
    browser.goto(f"{site}/book/generated/leaderboard.html")
    browser.screenshot("leaderboard")
    if ctx.published is None:
        assert "No result of the current protocol" in browser.evaluate("document.body.innerText")
        pytest.skip("no results of the current protocol are published: nothing to sort")
    rows = f"document.querySelectorAll('#{book.LEADERBOARD_ID} tbody tr')"
    browser.wait_for(f"document.querySelector('#{book.LEADERBOARD_ID}.dataTable') && {rows}.length > 0")
    assert browser.evaluate(f"{rows}.length") == len(ctx.published.rows)
    groups = browser.evaluate(f"Array.from(document.querySelectorAll('#{book.LEADERBOARD_ID} thead "
                              "tr.posenc-groups th')).map(th => th.innerText.trim())")
    assert "perplexity ratio to 1×" in groups and "verdicts (distinct tests)" in groups, groups
    _sorts_on_header_click(browser, book.LEADERBOARD_ID, "2×")
    img = "document.querySelector('img[src*=\"leaderboard.png\"]')"
    browser.wait_for(f"{img} && {img}.complete && {img}.naturalWidth > 0")
    # legible: the figure is shown at (nearly) its natural size, so its 9-point legends stay about 9 points
    assert browser.evaluate(f"{img}.clientWidth / {img}.naturalWidth") > 0.7
    browser.scroll_to("img[src*='leaderboard.png']")
    browser.screenshot("leaderboard-figure")
    browser.scroll_to(f"#{book.LEADERBOARD_ID}")
    browser.screenshot("leaderboard-table")


def _methods_with_figures(ctx: book.Context, n: int = 3) -> list[str]:
    if ctx.published is None:
        return []
    prefer = ["alibi", "yarn", "t5_bias", "pi", "rope", "sinusoidal", "nope"]
    have = [m for m in prefer if ctx.results(m)] + sorted(m for m in ctx.published.col.by_method if m not in prefer)
    return have[:n]


def test_method_pages_show_figure_beside_verdicts_and_rerun_buttons(site: str, browser: Browser) -> None:
    ctx = _published()
    methods = _methods_with_figures(ctx)
    if not methods:
        pytest.skip("no results of the current protocol are published: no method figure to show")
    for cid in methods:
        browser.goto(f"{site}/book/generated/methods/{cid}.html")
        box = "document.querySelector('.posenc-evidence')"
        browser.wait_for(f"{box} && {box}.querySelector('img') && {box}.querySelector('img').complete")
        assert browser.evaluate(f"{box}.querySelector('img').naturalWidth") > 0, "the figure did not load"
        # legible: shown at 80% of its size or more, its 12-point legend stays above 13 pixels
        assert browser.evaluate(f"{box}.querySelector('img').clientWidth / {box}.querySelector('img').naturalWidth") \
            > 0.8
        assert "Verdicts" in browser.evaluate(f"{box}.innerText")
        if ctx.notebook(cid):
            links = browser.evaluate("Array.from(document.querySelectorAll('.posenc-buttons a'))"
                                     ".map(a => [a.innerText.trim(), a.getAttribute('href')])")
            colab = next(h for t, h in links if t == "Open in Colab")
            assert colab.startswith("https://colab.research.google.com/github/posenc/posenc/blob/main/book/runs/")
            assert "/./" not in colab
            download = next(h for t, h in links if t == "Download notebook")
            with urllib.request.urlopen(f"{site}/book/generated/methods/{download}") as r:
                assert json.loads(r.read())["nbformat"] == 4
        edit = browser.evaluate("Array.from(document.querySelectorAll('a')).find(a => a.innerText === 'Edit this card')"
                                ".href")
        assert edit == f"https://github.com/posenc/posenc/edit/main/taxonomy/methods/{cid}.yaml"
        browser.scroll_to(".posenc-evidence")
        browser.screenshot(f"method-{cid}-figure")


def test_method_page_formula_and_citation(site: str, browser: Browser) -> None:
    browser.goto(f"{site}/book/generated/methods/alibi.html")
    browser.wait_for("window.MathJax && MathJax.startup && MathJax.startup.promise && "
                     "document.querySelectorAll('#formula mjx-container').length > 0")
    assert browser.evaluate("document.querySelectorAll('mjx-merror').length") == 0
    src = browser.evaluate("document.querySelector('script[src*=\"mathjax\"]').src")
    assert src.startswith(site), f"MathJax is not served by the book: {src}"
    cite = browser.evaluate("document.querySelector('#cite-this-entry pre').innerText")
    assert cite.startswith("@inproceedings{press2022train") and "Press, Ofir" in cite
    browser.screenshot("method-alibi")


def test_search_finds_a_method_by_name_with_distinct_titles(site: str, browser: Browser) -> None:
    browser.goto(f"{site}/search.html?q=ALiBi")
    links = "Array.from(document.querySelectorAll('#search-results a'))"
    browser.wait_for(f"{links}.some(a => a.getAttribute('href').includes('generated/methods/alibi.html'))")
    titles = browser.evaluate(f"{links}.map(a => a.innerText.trim())")
    assert "Length extrapolation of one positional encoding" not in titles
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
