"""A headless Chromium driven through its DevTools protocol (tests/test_html.py, docs screenshot).

Chromium comes from Debian's packages (`apt-get install chromium`, as `.ci/run` does); the
protocol is spoken over `websocket-client`. `Browser.open(path)` loads a page and returns what
the tests need: values from the DOM, console errors, the load time, a screenshot.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_chromium() -> str | None:
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


def start_browser() -> Browser:
    """A headless Chromium for a test; a test FAILS, never skips, without one (issue 26: a
    browser test that skips in CI checks nothing): `.ci/run` installs Debian's `chromium`."""
    import pytest

    binary = find_chromium()
    if binary is None:
        pytest.fail("no Chromium for the HTML tests: apt-get install -y chromium (as .ci/run does)")
    try:
        import websocket  # noqa: F401
    except ImportError:
        pytest.fail("websocket-client (the dev extra) drives Chromium: pip install -e '.[dev]'")
    return Browser(binary)


class Page:
    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.next_id = 0
        self.errors: list[str] = []
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            self._event(message)

    def _event(self, message: dict[str, Any]) -> None:
        method, params = message.get("method"), message.get("params", {})
        self.events.append(message)
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self.errors.append(" ".join(str(a.get("value")) for a in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            self.errors.append(params["exceptionDetails"].get("text", "exception"))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            self.errors.append(params["entry"].get("text", "log error"))

    def wait_for(self, method: str, timeout: float = 20) -> None:
        if any(e.get("method") == method for e in self.events):
            return
        deadline = time.monotonic() + timeout
        self.ws.settimeout(timeout)
        while time.monotonic() < deadline:
            message = json.loads(self.ws.recv())
            self._event(message)
            if message.get("method") == method:
                return
        raise TimeoutError(method)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    def viewport(self, width: int, height: int = 900) -> None:
        """Lay the page out as a window `width` CSS pixels wide (scale 1) would."""
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )

    def screenshot(self, path: Path, width: int = 1100, height: int = 1300) -> None:
        """A PNG of the page's top `height` pixels at `width` (the whole page when shorter)."""
        self.viewport(width, height)
        full = int(self.evaluate("document.documentElement.scrollHeight"))
        self.viewport(width, min(height, full))
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))


class Browser:
    """One headless Chromium process; `open` gives a fresh page per file."""

    def __init__(self, binary: str) -> None:
        self.profile = tempfile.mkdtemp(prefix="normscope-chromium-")
        self.process = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--remote-debugging-port=0", f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        port_file = Path(self.profile, "DevToolsActivePort")
        deadline = time.monotonic() + 30
        while not port_file.is_file() or not port_file.read_text().strip():
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.close()
                raise RuntimeError("chromium did not start")
            time.sleep(0.05)
        self.port = int(port_file.read_text().split()[0])
        self.pages: list[Page] = []

    def open(self, path: Path) -> tuple[Page, float]:
        """Load `path` in a new tab; return the page and the load time in ms (navigation to
        the load event, from the page's own performance timing)."""
        import websocket

        url = f"http://127.0.0.1:{self.port}/json/new?about:blank"
        request = urllib.request.Request(url, method="PUT")
        with urllib.request.urlopen(request, timeout=10) as response:
            target = json.loads(response.read())
        page = Page(websocket.create_connection(target["webSocketDebuggerUrl"], timeout=20))
        self.pages.append(page)
        for domain in ("Runtime", "Log", "Page"):
            page.call(f"{domain}.enable")
        page.call("Page.navigate", url=path.resolve().as_uri())
        page.wait_for("Page.loadEventFired")
        load = page.evaluate(
            "(function(){var t=performance.getEntriesByType('navigation')[0];"
            "return t.loadEventEnd - t.startTime;})()"
        )
        return page, float(load)

    def close(self) -> None:
        for page in getattr(self, "pages", []):
            page.ws.close()
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        shutil.rmtree(self.profile, ignore_errors=True)
