"""The book: staging, build with warnings as errors, and a real browser opening it offline.

The build tests use the real smoke reproduction (the ``smoke_results`` fixture
of ``tests/conftest.py``, shared with the notebook tests).
The browser test drives headless Debian chromium through the DevTools protocol
over ``--remote-debugging-pipe`` (file descriptors 3 and 4, NUL-separated JSON),
which needs no Python package beyond the standard library: it records every
request the pages make, waits for MathJax, checks every image, and saves
screenshots to ``$DENDNORM_ARTIFACTS`` (default ``<repo>/artifacts``).
"""

from __future__ import annotations

import base64
import functools
import http.server
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from dendnorm_flax import bookbuild
from dendnorm_flax.bookbuild import FIGURE_NOTEBOOKS, BookBuildError

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("DENDNORM_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("DENDNORM_ARTIFACTS", REPO / "artifacts"))

# `smoke_results` (tests/conftest.py): the real smoke reproduction, shared with test_reproduce.py.


@pytest.fixture(scope="session")
def built_book(smoke_results, tmp_path_factory) -> bookbuild.BuildResult:
    """The book built from the smoke results, warnings as errors (once per session)."""
    return bookbuild.build(smoke_results, tmp_path_factory.mktemp("book"), quiet=True)


# --------------------------------------------------------------------------- errors and staging


def test_missing_results_dir_names_the_command(tmp_path):
    with pytest.raises(BookBuildError, match=r"dendnorm reproduce --scale smoke --out .*nowhere"):
        bookbuild.build(tmp_path / "nowhere", tmp_path / "out")


def test_missing_figure_files_are_listed(smoke_results, tmp_path):
    broken = tmp_path / "results"
    shutil.copytree(smoke_results, broken)
    (broken / "fig2" / "fig2_connectivity.ipynb").unlink()
    for png in (broken / "fig3").glob("*.png"):
        png.unlink()
    with pytest.raises(BookBuildError) as err:
        bookbuild.check_results(broken)
    msg = str(err.value)
    assert "fig2_connectivity.ipynb" in msg and "fig3/*.png" in msg
    assert "dendnorm reproduce --scale smoke" in msg


def test_stage_puts_executed_notebooks_in_place(smoke_results, tmp_path):
    import yaml

    staged = bookbuild.stage(smoke_results, tmp_path / "src")
    for nb in FIGURE_NOTEBOOKS.values():
        assert (staged / "book" / f"{nb}.ipynb").is_file()
        assert not (staged / "book" / f"{nb}.md").exists()
        # The executed notebook carries its figures as outputs (nothing re-runs at build time).
        cells = json.loads((staged / "book" / f"{nb}.ipynb").read_text())["cells"]
        outputs = [o for c in cells if c["cell_type"] == "code" for o in c.get("outputs", [])]
        assert any("image/png" in o.get("data", {}) for o in outputs), nb
    assert (staged / "vendor" / "mathjax" / "es5" / "tex-chtml.js").is_file()
    config = yaml.safe_load((staged / "_config.yml").read_text())
    assert config["execute"]["execute_notebooks"] == "force"
    assert set(config["execute"]["exclude_patterns"]) >= {f"{nb}.ipynb" for nb in FIGURE_NOTEBOOKS.values()}
    info = json.loads((staged / "book" / bookbuild.BUILD_INFO).read_text())
    assert info == {"results": str(smoke_results.resolve()), "scale": "smoke"}


def test_locate_results_order(tmp_path, monkeypatch):
    monkeypatch.delenv(bookbuild.RESULTS_ENV, raising=False)
    (tmp_path / "book").mkdir()
    (tmp_path / bookbuild.BUILD_INFO).write_text(json.dumps({"results": "/r/x", "scale": "smoke"}))
    monkeypatch.chdir(tmp_path / "book")
    assert bookbuild.locate_results() == Path("/r/x")
    monkeypatch.setenv(bookbuild.RESULTS_ENV, "/r/env")
    assert bookbuild.locate_results() == Path("/r/env")


def test_external_sources_are_detected(tmp_path):
    (tmp_path / "a.html").write_text(
        "<html><head><script src='https://cdn.example.org/x.js'></script>"
        "<link rel='stylesheet' href='_static/local.css'>"
        "<link rel='canonical' href='https://example.org/a.html'>"
        "<img src='http://127.0.0.1:8000/ok.png'><img src='data:image/png;base64,AAAA'>"
        "<a href='https://example.org'>a link is not a request</a></head></html>"
    )
    (tmp_path / "s.css").write_text("@font-face { src: url('https://fonts.example.com/f.woff2'); }")
    found = bookbuild.external_sources(tmp_path)
    assert found == ["a.html: https://cdn.example.org/x.js", "s.css: https://fonts.example.com/f.woff2"]


def test_cli_registers_book_commands():
    import argparse

    parser = argparse.ArgumentParser()
    bookbuild.add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["book", "build", "--results", "results/quick"])
    assert args.results == "results/quick" and args.out == "_build" and callable(args.func)
    assert callable(parser.parse_args(["book", "fetch-mathjax"]).func)


def test_fetch_mathjax_is_idempotent(tmp_path):
    dest = tmp_path / "mathjax"
    (dest / "es5").mkdir(parents=True)
    (dest / "es5" / "tex-chtml.js").write_text("// present")
    assert bookbuild.fetch_mathjax(dest, npm="definitely-not-npm") == dest  # no npm call needed


# --------------------------------------------------------------------------- build


PAGES = ("intro", "biology", "model", "methods", *FIGURE_NOTEBOOKS.values(), "scorecard", "discussion", "references")


def test_book_builds_without_warnings(built_book):
    html = built_book.html_dir
    assert built_book.index.is_file()
    for page in PAGES:
        assert (html / "book" / f"{page}.html").is_file(), page
    model = (html / "book" / "model.html").read_text()
    assert "../mathjax/es5/tex-chtml.js" in model
    assert (html / "mathjax" / "es5" / "tex-chtml.js").is_file()
    assert not list((html / "_static").rglob("tex-chtml.js"))
    assert bookbuild.external_sources(html) == []
    for page in PAGES:
        text = (html / "book" / f"{page}.html").read_text()
        assert "Traceback" not in text, page
        # Thebe and launch buttons are off (sphinx-thebe's inert loader stays; it fetches nothing unless clicked)
        assert "initThebeSBT" not in text and "mybinder.org" not in text and "colab" not in text.lower(), page


def test_results_pages_state_the_scale(built_book):
    scorecard = (built_book.html_dir / "book" / "scorecard.html").read_text()
    assert "Scale: smoke" in scorecard and "mean nothing" in scorecard
    assert "dendnorm-scorecard" in scorecard
    assert scorecard.count("<tr>") > 40  # one row per claim, plus the other tables
    for nb in FIGURE_NOTEBOOKS.values():
        assert "smoke" in (built_book.html_dir / "book" / f"{nb}.html").read_text()


def test_prose_pages_were_executed(built_book):
    html = built_book.html_dir / "book"
    assert "max |autodiff - Eq 7|" in (html / "model.html").read_text()
    for page in ("biology", "model"):
        assert "<img" in (html / f"{page}.html").read_text(), page
    assert "SHA-256" in (html / "methods.html").read_text()


# --------------------------------------------------------------------------- browser


class DevTools:
    """Minimal Chrome DevTools Protocol client over ``--remote-debugging-pipe``."""

    def __init__(self, exe: str, user_data_dir: str):
        import fcntl

        def high(fd: int) -> int:
            # Keep our ends away from 3 and 4, which the shell below rebinds.
            new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
            os.close(fd)
            return new

        to_chrome_r, self._to_chrome = map(high, os.pipe())
        self._from_chrome, from_chrome_w = map(high, os.pipe())
        flags = [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-extensions", "--hide-scrollbars", "--mute-audio",
            f"--user-data-dir={user_data_dir}", "--remote-debugging-pipe", "about:blank",
        ]
        self.log = Path(user_data_dir) / "chromium-stderr.log"
        with open(self.log, "wb") as log:
            # The pipe protocol reads fd 3 and writes fd 4 of the browser process
            # (bash, not sh: dash cannot redirect from fds above 9).
            self.proc = subprocess.Popen(
                ["/bin/bash", "-c", f'exec "$0" "$@" 3<&{to_chrome_r} 4>&{from_chrome_w}', exe, *flags],
                pass_fds=(to_chrome_r, from_chrome_w),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
            )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._next_id = 0
        self._replies: dict[int, queue.Queue] = {}
        self.events: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        buf = b""
        with os.fdopen(self._from_chrome, "rb", buffering=0) as f:
            while chunk := f.read(1 << 16):
                buf += chunk
                while b"\0" in buf:
                    raw, buf = buf.split(b"\0", 1)
                    msg = json.loads(raw)
                    if "id" in msg and msg["id"] in self._replies:
                        self._replies[msg["id"]].put(msg)
                    else:
                        self.events.put(msg)

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 60):
        with self._lock:
            self._next_id += 1
            mid = self._next_id
            self._replies[mid] = queue.Queue()
        msg = {"id": mid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        try:
            os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        except BrokenPipeError:
            tail = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"chromium exited (code {self.proc.poll()}); its stderr ends with:\n{tail}") from None
        reply = self._replies[mid].get(timeout=timeout)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def close(self):
        try:
            self.send("Browser.close", timeout=10)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_chrome)


class Page:
    """One tab: navigate, evaluate JavaScript, screenshot; records every request."""

    def __init__(self, devtools: DevTools):
        self.dt = devtools
        target = devtools.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = devtools.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.requests: list[str] = []
        self.failures: list[str] = []
        for domain in ("Network", "Page", "Runtime"):
            self.call(f"{domain}.enable")
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": 1280, "height": 2000, "deviceScaleFactor": 1, "mobile": False})

    def call(self, method, params=None, timeout=60):
        return self.dt.send(method, params, session=self.session, timeout=timeout)

    def _drain(self, until_load: bool, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        urls: dict[str, str] = {}
        while time.monotonic() < deadline:
            try:
                ev = self.dt.events.get(timeout=0.2)
            except queue.Empty:
                if not until_load:
                    return
                continue
            if ev.get("sessionId") != self.session:
                continue
            method, params = ev.get("method"), ev.get("params", {})
            if method == "Network.requestWillBeSent":
                urls[params["requestId"]] = params["request"]["url"]
                self.requests.append(params["request"]["url"])
            elif method == "Network.responseReceived" and params["response"]["status"] >= 400:
                self.failures.append(f"{params['response']['status']} {params['response']['url']}")
            elif method == "Network.loadingFailed" and not params.get("canceled"):
                self.failures.append(f"{params.get('errorText')} {urls.get(params['requestId'], '?')}")
            elif method == "Page.loadEventFired" and until_load:
                return
        if until_load:
            raise TimeoutError("page did not finish loading")

    def goto(self, url: str, timeout: float = 60) -> None:
        self.call("Page.navigate", {"url": url})
        self._drain(until_load=True, timeout=timeout)

    def evaluate(self, expression: str, timeout: float = 60):
        result = self.call("Runtime.evaluate",
                           {"expression": expression, "awaitPromise": True, "returnByValue": True},
                           timeout=timeout)
        if "exceptionDetails" in result:
            raise RuntimeError(f"JavaScript error: {result['exceptionDetails']}")
        self._drain(until_load=False, timeout=1)  # collect requests made meanwhile
        return result["result"].get("value")

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        path.write_bytes(base64.b64decode(data))


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} not found: CI must run the browser test (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} not found (Debian: apt-get install chromium); the browser test needs it")
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        dt = DevTools(CHROMIUM, profile)
        try:
            dt.send("Browser.getVersion", timeout=60)
            yield dt
        finally:
            dt.close()


@pytest.fixture(scope="module")
def served_book(built_book):
    """The built HTML served on 127.0.0.1 (random port) for the duration of the module."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(built_book.html_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# Waits for MathJax's first typesetting pass, then reports on the page's maths.
_MATH_JS = """(async () => {
  if (!(window.MathJax && MathJax.startup && MathJax.startup.promise)) return {loaded: false};
  await MathJax.startup.promise;
  const blocks = Array.from(document.querySelectorAll('div.math, span.math'));
  const main = document.querySelector('main') || document.body;
  return {
    loaded: true,
    version: MathJax.version,
    containers: document.querySelectorAll('mjx-container').length,
    blocks: blocks.length,
    untypeset: blocks.filter(b => !b.querySelector('mjx-container')).length,
    raw: ['$$', '\\\\[', '\\\\(', '\\\\begin{'].filter(t => main.innerText.includes(t)),
  };
})()"""

# Loads every image (including lazy ones) and reports their natural widths.
_IMAGES_JS = """(async () => {
  const imgs = Array.from(document.images);
  imgs.forEach(i => { i.loading = 'eager'; });
  await Promise.all(imgs.map(i => (i.complete && i.naturalWidth) ? null :
    new Promise(r => { i.addEventListener('load', r); i.addEventListener('error', r); setTimeout(r, 15000); })));
  return imgs.map(i => ({src: (i.currentSrc || i.src).slice(0, 120), width: i.naturalWidth}));
})()"""


def _local(url: str, base: str) -> bool:
    return url.startswith(base + "/") or url.startswith(("data:", "blob:", "about:"))


def test_pages_render_offline_in_chromium(browser, served_book):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    pages = [("model", True), ("biology", True), *((nb, False) for nb in FIGURE_NOTEBOOKS.values()),
             ("scorecard", False), ("methods", False), ("intro", False)]
    problems = []
    for name, has_math in pages:
        page = Page(browser)
        url = f"{served_book}/book/{name}.html"
        page.goto(url)
        math = page.evaluate(_MATH_JS)
        images = page.evaluate(_IMAGES_JS)
        if has_math:
            if not math.get("loaded"):
                problems.append(f"{name}: MathJax did not load")
            elif math["untypeset"] or not math["containers"] or math["raw"]:
                problems.append(f"{name}: maths not typeset: {math}")
        if name in FIGURE_NOTEBOOKS.values() or name in ("biology", "model"):
            if not images:
                problems.append(f"{name}: no images")
        problems += [f"{name}: image did not load: {i['src']}" for i in images if not i["width"]]
        problems += [f"{name}: request to another host: {u}" for u in page.requests if not _local(u, served_book)]
        problems += [f"{name}: failed request: {f}" for f in page.failures if "favicon" not in f]
        if name in ("model", "fig1_learning", "scorecard"):
            page.screenshot(ARTIFACTS / f"book-{name}.png")
    assert not problems, "\n".join(problems)
    assert (ARTIFACTS / "book-model.png").stat().st_size > 10_000
