"""A headless Chromium driven over the DevTools protocol, with the standard library only.

Chromium is started with `--remote-debugging-pipe`: it reads protocol messages (JSON, each ended
by a NUL byte) from file descriptor 3 and writes its answers and events to file descriptor 4, so
no websocket and no port are needed. `Page` records what a report must never cause: console
errors, uncaught exceptions, failed requests and requests for anything but a local file or an
inline `data:` URL (a report must open without a network). A page opened from a local web server
(`b.open("http://127.0.0.1:8000/")`, the competition server) may also load from that server alone.

    with Browser() as b:
        page = b.open(Path("report.html"))
        page.problems()            # [] when the page loaded cleanly (open waits until it is quiet)
        png = page.screenshot()    # PNG bytes
        page.click("th[data-key=test_acc]")
        page.evaluate("document.title")
        page.set_files("#model", [Path("model.onnx")])          # a file input, as a person picks a file
        page.follow(lambda: page.click("#submit"))              # a click that loads another page
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


class BrowserError(RuntimeError):
    pass


class Browser:
    def __init__(self, executable: str | None = None, width: int = 1280, height: int = 900, timeout: float = 60.0):
        self.executable = executable or find_chromium()
        if not self.executable:
            raise BrowserError("no Chromium found (install Debian's `chromium`)")
        self.width, self.height, self.timeout = width, height, timeout
        self._next_id = 0
        self._lock = threading.Lock()
        self._replies: dict[int, dict] = {}
        self._events: list[dict] = []
        self._cond = threading.Condition(self._lock)
        self._closed = False

    # ---- process and pipe

    def __enter__(self):
        self.profile = tempfile.mkdtemp(prefix="cnnlab-chromium-")
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def child_fds():  # the protocol's fixed descriptors: 3 = commands in, 4 = answers out
            import fcntl

            r, w = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10), fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
            os.dup2(r, 3)  # dup2 makes 3 and 4 inheritable; every other descriptor of ours is not
            os.dup2(w, 4)

        args = [self.executable, "--headless=new", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-default-apps", "--mute-audio", "--hide-scrollbars", "--force-device-scale-factor=1",
                f"--window-size={self.width},{self.height}", f"--user-data-dir={self.profile}", "about:blank"]
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr,
                                     preexec_fn=child_fds, close_fds=False)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.send("Target.setDiscoverTargets", {"discover": True})
        return self

    def __exit__(self, *exc):
        try:
            if self.proc.poll() is None:
                try:
                    self.send("Browser.close", timeout=10)
                except BrowserError:
                    pass
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
        finally:
            self._closed = True
            for fd in (self._to_chrome, self._from_chrome):
                try:
                    os.close(fd)
                except OSError:
                    pass
            self._stderr.close()
            shutil.rmtree(self.profile, ignore_errors=True)

    def stderr_text(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def _read(self):
        buf = b""
        while True:
            try:
                chunk = os.read(self._from_chrome, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                with self._cond:
                    self._closed = True
                    self._cond.notify_all()
                return
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                with self._cond:
                    if "id" in msg:
                        self._replies[msg["id"]] = msg
                    else:
                        self._events.append(msg)
                    self._cond.notify_all()

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float | None = None):
        with self._cond:
            self._next_id += 1
            mid = self._next_id
        msg = {"id": mid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        data = json.dumps(msg).encode() + b"\0"
        while data:
            data = data[os.write(self._to_chrome, data):]
        deadline = time.monotonic() + (timeout or self.timeout)
        with self._cond:
            while mid not in self._replies:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    raise BrowserError(f"no answer to {method} ({'browser gone' if self._closed else 'timeout'}); "
                                       f"chromium said: {self.stderr_text()[-2000:]}")
                self._cond.wait(min(left, 0.5))
            reply = self._replies.pop(mid)
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def events(self, session: str | None = None) -> list[dict]:
        with self._cond:
            return [e for e in self._events if session is None or e.get("sessionId") == session]

    def wait_event(self, method: str, session: str, timeout: float | None = None, after: int = 0) -> dict:
        deadline = time.monotonic() + (timeout or self.timeout)
        with self._cond:
            while True:
                for e in self._events[after:]:
                    if e.get("method") == method and e.get("sessionId") == session:
                        return e
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    raise BrowserError(f"no {method} event ({'browser gone' if self._closed else 'timeout'})")
                self._cond.wait(min(left, 0.5))

    def wait_until(self, ready, what: str, timeout: float | None = None):
        """Wait until `ready(events)` is true, checked at once and again after each message that
        arrives; a BrowserError naming `what` when the deadline passes or the browser is gone."""
        deadline = time.monotonic() + (timeout or self.timeout)
        with self._cond:
            while not ready(self._events):
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    raise BrowserError(f"still waiting for {what} ({'browser gone' if self._closed else 'timeout'})")
                self._cond.wait(min(left, 0.5))

    # ---- pages

    def open(self, path) -> "Page":
        """A new tab that loads a local file (or an http:// URL), with every domain that reports trouble
        enabled first."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session)
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session=session)
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False}, session)
        with self._cond:
            start = len(self._events)
        page.url = path if str(path).startswith(("http://", "https://")) else Path(path).resolve().as_uri()
        self.send("Page.navigate", {"url": page.url}, session)
        self.wait_event("Page.loadEventFired", session, after=start)
        page.settle()
        return page


class Page:
    def __init__(self, browser: Browser, session: str):
        self.browser, self.session, self.url = browser, session, None

    def send(self, method, params=None):
        return self.browser.send(method, params, self.session)

    @property
    def origin(self) -> str | None:
        """scheme://host:port of a page served over HTTP, else None."""
        if not self.url or not self.url.startswith(("http://", "https://")):
            return None
        scheme, _, rest = self.url.partition("://")
        return f"{scheme}://{rest.split('/', 1)[0]}"

    def follow(self, action):
        """Do `action` (a click on a link or a form's button) and wait until the page it loads is quiet."""
        with self.browser._cond:
            start = len(self.browser._events)
        action()
        self.browser.wait_event("Page.loadEventFired", self.session, after=start)
        self.settle()
        self.url = self.evaluate("location.href")

    def set_files(self, selector: str, paths):
        """Choose files in a file input, as a person does in the file dialog."""
        found = self.send("Runtime.evaluate", {"expression": f"document.querySelector({json.dumps(selector)})"})
        self.send("DOM.enable")
        self.send("DOM.setFileInputFiles", {"files": [str(Path(p).resolve()) for p in paths],
                                            "objectId": found["result"]["objectId"]})

    def pending_requests(self, events=None) -> list[str]:
        """URLs of the requests this page made that have neither finished nor failed yet."""
        events = self.browser.events(self.session) if events is None else events
        started, done = {}, set()
        for e in events:
            if e.get("sessionId") != self.session:
                continue
            m, p = e.get("method"), e.get("params", {})
            if m == "Network.requestWillBeSent":
                started[p["requestId"]] = p["request"]["url"]
            elif m in ("Network.loadingFinished", "Network.loadingFailed"):
                done.add(p["requestId"])
        return [url for rid, url in started.items() if rid not in done]

    def settle(self, timeout: float | None = None):
        """Wait, after the load event, until the page is quiet: every image decoded (or failed),
        two frames painted, and every request it made answered or failed. Whatever the page does
        on loading (console messages, exceptions, requests) has then been reported."""
        self.evaluate("Promise.all(Array.from(document.images, i => i.decode().then(() => true, () => false)))"
                      ".then(() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r))))"
                      ".then(() => document.readyState)")
        self.browser.wait_until(lambda events: not self.pending_requests(events),
                                f"the requests of {self.url} to finish", timeout)

    def evaluate(self, expression: str):
        res = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in res:
            raise BrowserError(f"{expression!r} threw: {res['exceptionDetails'].get('text')}")
        return res["result"].get("value")

    def requests(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.browser.events(self.session)
                if e.get("method") == "Network.requestWillBeSent"]

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions, failed requests and requests that leave the machine."""
        out = []
        urls = {}
        for e in self.browser.events(self.session):
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
                out.append(f"console.{p['type']}: {text}")
            elif m == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                out.append(f"uncaught exception: {d.get('exception', {}).get('description') or d.get('text')}")
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append(f"log error: {p['entry'].get('text')} {p['entry'].get('url', '')}".strip())
            elif m == "Network.requestWillBeSent":
                url = p["request"]["url"]
                urls[p["requestId"]] = url
                same_server = self.origin is not None and url.startswith(self.origin + "/")
                if not (url.startswith("data:") or url == self.url or same_server):
                    out.append(f"request for something other than the report itself: {url[:120]}")
            elif m == "Network.loadingFailed":
                out.append(f"failed request: {urls.get(p.get('requestId'), '?')[:120]} ({p.get('errorText')})")
            elif m == "Network.responseReceived" and p.get("response", {}).get("status", 200) >= 400:
                out.append(f"HTTP {p['response']['status']} for {p['response'].get('url')}")
        return out

    def screenshot(self) -> bytes:
        return base64.b64decode(self.send("Page.captureScreenshot", {"format": "png"})["data"])

    def click(self, selector: str):
        """A real mouse click (press and release) at the middle of the element."""
        self.evaluate(f"document.querySelector({json.dumps(selector)}).scrollIntoView({{block: 'center'}})")
        box = self.evaluate(f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
                            ".getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2]; })()")
        x, y = box
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            params = {"type": kind, "x": x, "y": y}
            if kind != "mouseMoved":
                params.update(button="left", clickCount=1)
            self.send("Input.dispatchMouseEvent", params)
