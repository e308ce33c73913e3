"""A small headless-Chromium driver over the DevTools protocol, for the browser tests of the built book.

One Chromium process, spoken to over `--remote-debugging-pipe` (fd 3: commands in, fd 4: replies and events
out; one JSON message per NUL byte). A pipe needs no TCP port, so the browser runs inside `unshare --net`
(a network namespace with no interfaces) where nothing can reach the network: "offline" is real.

    with Browser() as browser:
        tab = browser.new_tab(site_root=html)          # http://book.test/... is served from `html`
        load = tab.load("http://book.test/book/intro.html", width=375, dark=True)
        load.console_errors, load.failed, load.external, load.resources  # what the page did
        tab.evaluate("document.title")

Pages are loaded two ways. `file://` URLs are what a reader gets by opening `index.html`. `http://book.test/`
is a local web server without a server: the tab intercepts every http(s) request (DevTools `Fetch` domain)
and answers it from the built book's folder, 404 for a missing file, so a page sees a real HTTP origin
(fetch(), favicon, search) with no socket. A request for any other host is refused and recorded as external.
"""
from __future__ import annotations

import base64
import itertools
import json
import mimetypes
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

SITE = "http://book.test/"   # .test is reserved (RFC 2606): it can never be a real host

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-extensions", "--no-first-run",
         "--no-default-browser-check", "--mute-audio", "--hide-scrollbars", "--disable-breakpad",
         # Several tabs load pages side by side: none of them is throttled as a background tab.
         "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
         "--disable-backgrounding-occluded-windows",
         "--disable-features=Translate,MediaRouter,OptimizationHints,AutofillServerCommunication",
         # Belt and braces when no network namespace is available: no name resolves, no proxy answers.
         "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9"]


class BrowserError(RuntimeError):
    pass


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not exe:
        raise BrowserError("headless Chromium is needed: `make test` installs Debian's chromium "
                           "(or: apt-get install chromium)")
    return exe


def offline_prefix() -> list[str]:
    """`unshare --net` when this user may make a network namespace (root, or user namespaces), else []."""
    unshare = shutil.which("unshare")
    for prefix in ([unshare, "--net"], [unshare, "--user", "--map-root-user", "--net"]) if unshare else ():
        if subprocess.run([*prefix, "true"], capture_output=True).returncode == 0:
            return prefix
    return []


class Browser:
    """One Chromium process; `new_tab()` opens pages in it. Use as a context manager."""

    def __init__(self, offline: bool = True, timeout: float = 60):
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="rlhf-chromium-")
        to_child_r, self._out = os.pipe()     # we write commands to fd 3 of the browser
        self._in, from_child_w = os.pipe()    # it writes replies to its fd 4

        def wire_pipes():                     # runs in the child between fork and exec
            os.dup2(to_child_r, 3)
            os.dup2(from_child_w, 4)

        self.offline = offline_prefix() if offline else []
        cmd = [*self.offline, chromium(), *FLAGS, "--remote-debugging-pipe", f"--user-data-dir={self.profile}",
               "about:blank"]
        # Chromium logs to stderr: a file, not a pipe nobody reads (a full pipe would stall the browser).
        self._log = open(Path(self.profile) / "stderr.log", "w+b")
        # fds 3 and 4 are open here (the two pipes took the lowest free numbers, or something else holds them),
        # so pass_fds keeps them across exec once wire_pipes has pointed them at the right pipe ends.
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self._log, preexec_fn=wire_pipes, pass_fds=(3, 4))
        os.close(to_child_r)
        os.close(from_child_w)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._pending: dict[int, queue.Queue] = {}
        self._sessions: dict[str, Tab] = {}
        self._closed = False
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()
        self.version = self.send("Browser.getVersion")["product"]

    # -------------------------------------------------------------- the wire
    def _read_loop(self):
        buffer = b""
        while True:
            try:
                chunk = os.read(self._in, 1 << 20)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for raw in messages:
                try:
                    message = json.loads(raw)
                except ValueError:
                    continue
                if "id" in message:
                    waiter = self._pending.pop(message["id"], None)
                    if waiter:
                        waiter.put(message)
                else:
                    tab = self._sessions.get(message.get("sessionId"))
                    if tab:
                        tab._on_event(message["method"], message.get("params", {}))
        self._closed = True
        for waiter in list(self._pending.values()):
            waiter.put({"error": {"message": "the browser closed the pipe"}})

    def send_async(self, method: str, params: dict | None = None, session: str | None = None) -> queue.Queue:
        if self._closed:
            raise BrowserError(f"the browser has exited; stderr:\n{self._stderr_tail()}")
        message_id = next(self._ids)
        waiter: queue.Queue = queue.Queue(maxsize=1)
        self._pending[message_id] = waiter
        message = {"id": message_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        data = json.dumps(message).encode() + b"\0"
        with self._lock:
            view = memoryview(data)
            while view:
                view = view[os.write(self._out, view):]
        return waiter

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float | None = None) -> dict:
        waiter = self.send_async(method, params, session)
        try:
            reply = waiter.get(timeout=timeout or self.timeout)
        except queue.Empty:
            raise BrowserError(f"{method}: no reply in {timeout or self.timeout} s") from None
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error'].get('message')} {reply['error'].get('data', '')}")
        return reply.get("result", {})

    def _stderr_tail(self) -> str:
        try:
            self._log.flush()
            return (Path(self.profile) / "stderr.log").read_bytes().decode(errors="replace")[-3000:]
        except OSError:
            return ""

    # -------------------------------------------------------------- tabs, shutdown
    def new_tab(self, site_root: Path | None = None) -> "Tab":
        target = self.send("Target.createTarget", {"url": "about:blank", "newWindow": True})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        tab = Tab(self, target, session, site_root)
        self._sessions[session] = tab
        tab._setup()
        return tab

    def close(self):
        if self.proc.poll() is None:
            try:
                self.send("Browser.close", timeout=5)
            except BrowserError:
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for fd in (self._out, self._in):
            try:
                os.close(fd)
            except OSError:
                pass
        self._log.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@dataclass
class Resource:
    url: str
    type: str = ""
    status: int | None = None
    bytes: int = 0            # body size as served (for file:// and book.test: the file's size)
    failed: str = ""          # the network error, if any
    from_cache: bool = False


@dataclass
class Load:
    """What one page load did: every request, console message and exception."""
    url: str
    resources: dict[str, Resource] = field(default_factory=dict)     # by request id
    console_errors: list[str] = field(default_factory=list)
    console_warnings: list[str] = field(default_factory=list)
    external: list[str] = field(default_factory=list)
    first_paint_ms: float | None = None
    load_ms: float | None = None

    @property
    def failed(self) -> list[str]:
        """Requests that failed (network error, or an HTTP status >= 400)."""
        return sorted({f"{r.url} ({r.failed or r.status})" for r in self.resources.values()
                       if r.failed or (r.status or 0) >= 400})

    @property
    def bytes(self) -> int:
        """Bytes the page loads: the body of every distinct URL it requests, data: URLs left out."""
        sizes: dict[str, int] = {}
        for r in self.resources.values():
            if not r.url.startswith("data:"):
                sizes[r.url] = max(sizes.get(r.url, 0), r.bytes)
        return sum(sizes.values())

    @property
    def requests(self) -> int:
        return len({r.url for r in self.resources.values() if not r.url.startswith("data:")})


class Tab:
    def __init__(self, browser: Browser, target: str, session: str, site_root: Path | None):
        self.browser, self.target, self.session = browser, target, session
        self.site_root = Path(site_root).resolve() if site_root else None
        self.load_record: Load | None = None
        self._events: queue.Queue = queue.Queue()
        self._viewport: tuple | None = None
        self._dark: bool | None = None
        self._cache = True

    def send(self, method: str, params: dict | None = None, timeout: float | None = None) -> dict:
        return self.browser.send(method, params, self.session, timeout)

    def _setup(self):
        for domain in ("Page", "Runtime", "Network", "Log"):
            self.send(f"{domain}.enable")
        self.send("Page.setLifecycleEventsEnabled", {"enabled": True})
        self.send("Fetch.enable", {"patterns": [{"urlPattern": "http://*"}, {"urlPattern": "https://*"},
                                                {"urlPattern": "ws*://*"}]})

    # -------------------------------------------------------------- events
    def _on_event(self, method: str, params: dict):
        if method == "Fetch.requestPaused":          # answered on the reader thread: no round trip waits
            self._serve(params)
            return
        record = self.load_record
        if record is not None:
            self._record(record, method, params)
        if method == "Page.lifecycleEvent":
            self._events.put((method, params))

    def _record(self, record: Load, method: str, params: dict):
        if method == "Network.requestWillBeSent":
            rid = params["requestId"]
            url = params["request"]["url"]
            previous = record.resources.get(rid)
            if previous and params.get("redirectResponse"):
                record.resources[f"{rid}:{len(record.resources)}"] = previous
            record.resources[rid] = Resource(url=url, type=params.get("type", ""))
        elif method == "Network.responseReceived":
            resource = record.resources.setdefault(params["requestId"], Resource(url=params["response"]["url"]))
            response = params["response"]
            resource.status = response.get("status")
            resource.from_cache = bool(response.get("fromDiskCache") or response.get("fromPrefetchCache"))
            resource.bytes = max(resource.bytes, self._size_of(response["url"]))
        elif method == "Network.loadingFinished":
            resource = record.resources.get(params["requestId"])
            if resource:
                resource.bytes = max(resource.bytes, int(params.get("encodedDataLength") or 0)
                                     if resource.url.startswith("http") and not self._is_site(resource.url)
                                     else self._size_of(resource.url))
        elif method == "Network.loadingFailed":
            resource = record.resources.setdefault(params["requestId"], Resource(url="?"))
            if not params.get("canceled") or params.get("blockedReason"):
                resource.failed = params.get("errorText") or params.get("blockedReason") or "failed"
        elif method == "Runtime.consoleAPICalled":
            text = " ".join(_remote_text(arg) for arg in params.get("args", []))
            if params["type"] in ("error", "assert"):
                record.console_errors.append(f"console.{params['type']}: {text}")
            elif params["type"] == "warning":
                record.console_warnings.append(text)
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text", "")
            record.console_errors.append(f"uncaught: {text.splitlines()[0] if text else details}"
                                         f" ({details.get('url', '')}:{details.get('lineNumber', '')})")
        elif method == "Log.entryAdded":
            entry = params["entry"]
            if entry["level"] == "error":
                record.console_errors.append(f"{entry['source']}: {entry['text']} {entry.get('url', '')}".strip())

    # -------------------------------------------------------------- the local site
    def _is_site(self, url: str) -> bool:
        return url.startswith(SITE)

    def _path_of(self, url: str) -> Path | None:
        parts = urlsplit(url)
        if url.startswith("file://"):
            return Path(unquote(parts.path))
        if self._is_site(url) and self.site_root:
            path = (self.site_root / unquote(parts.path).lstrip("/")).resolve()
            if path.is_dir():
                path = path / "index.html"
            return path if path.is_relative_to(self.site_root) else None
        return None

    def _size_of(self, url: str) -> int:
        path = self._path_of(url)
        try:
            return path.stat().st_size if path and path.is_file() else 0
        except OSError:
            return 0

    def _serve(self, params: dict):
        request_id, url = params["requestId"], params["request"]["url"]
        path = self._path_of(url) if self._is_site(url) else None
        if not self._is_site(url):
            if self.load_record is not None:
                self.load_record.external.append(url)
            self.browser.send_async("Fetch.failRequest", {"requestId": request_id, "errorReason": "BlockedByClient"},
                                    self.session)
        elif path is None or not path.is_file():
            body = b"<!doctype html><title>404</title>Not found"
            self.browser.send_async("Fetch.fulfillRequest", {
                "requestId": request_id, "responseCode": 404, "body": base64.b64encode(body).decode(),
                "responseHeaders": [{"name": "Content-Type", "value": "text/html"}]}, self.session)
        else:
            kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            if kind.startswith("text/") or kind in ("application/javascript", "application/json"):
                kind += "; charset=utf-8"
            self.browser.send_async("Fetch.fulfillRequest", {
                "requestId": request_id, "responseCode": 200, "body": base64.b64encode(path.read_bytes()).decode(),
                "responseHeaders": [{"name": "Content-Type", "value": kind},
                                    {"name": "Cache-Control", "value": "max-age=3600"}]}, self.session)

    # -------------------------------------------------------------- driving the page
    def set_viewport(self, width: int, height: int = 900):
        if self._viewport != (width, height):
            mobile = width < 600
            self.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height,
                                                             "deviceScaleFactor": 1, "mobile": mobile})
            self.send("Emulation.setTouchEmulationEnabled", {"enabled": mobile, **({"maxTouchPoints": 5} if mobile else {})})
            self._viewport = (width, height)

    def set_dark(self, dark: bool):
        """Emulate the reader's system preference (the theme follows it in its default 'auto' mode)."""
        if self._dark != dark:
            self.send("Emulation.setEmulatedMedia", {"features": [
                {"name": "prefers-color-scheme", "value": "dark" if dark else "light"}]})
            self._dark = dark

    def load(self, url: str, width: int = 1280, height: int = 900, dark: bool = False, cache: bool = True,
             ready: str | None = None, timeout: float = 60) -> Load:
        """Load `url` and wait for the load event, then for the `ready` expression (a promise) if any."""
        self.set_viewport(width, height)
        self.set_dark(dark)
        if self._cache != cache:
            self.send("Network.setCacheDisabled", {"cacheDisabled": not cache})
            self._cache = cache
        while not self._events.empty():
            self._events.get_nowait()
        record = self.load_record = Load(url=url)
        started = time.monotonic()
        reply = self.send("Page.navigate", {"url": url}, timeout=timeout)
        if reply.get("errorText"):
            record.console_errors.append(f"navigation failed: {reply['errorText']}")
            return record
        self._wait_for_load(reply.get("loaderId"), timeout)
        record.load_ms = (time.monotonic() - started) * 1000
        if ready:
            self.evaluate(ready, await_promise=True, timeout=timeout)
        # A quick page may fire its load event before its first paint: wait for the paint (3 s at most).
        paint = self.evaluate("""new Promise((resolve) => {
            const seen = (list) => (list.getEntriesByName('first-contentful-paint')[0] || {}).startTime;
            if (seen(performance)) return resolve(seen(performance));
            new PerformanceObserver((list) => seen(list) && resolve(seen(list))).observe({type: 'paint', buffered: true});
            setTimeout(() => resolve(null), 3000); })""", await_promise=True, timeout=timeout)
        record.first_paint_ms = round(paint, 1) if paint is not None else None
        return record

    def _wait_for_load(self, loader: str | None, timeout: float):
        """Wait for the load event of the document that navigation `loader` made."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                name, params = self._events.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise BrowserError(f"the page did not finish loading within {timeout} s") from None
            if name == "Page.lifecycleEvent" and params.get("name") == "load" \
                    and (loader is None or params.get("loaderId") == loader) and params.get("frameId") == self.target:
                return

    def evaluate(self, expression: str, await_promise: bool = False, timeout: float | None = None):
        """The value of a JavaScript expression (returned by value: JSON-able results only)."""
        reply = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                               "awaitPromise": await_promise, "userGesture": True},
                          timeout=timeout)
        if "exceptionDetails" in reply:
            details = reply["exceptionDetails"]
            raise BrowserError(f"JavaScript error: {details.get('exception', {}).get('description') or details}")
        return reply["result"].get("value")

    def click(self, x: float, y: float):
        """A real pointer click (through hit testing) at viewport coordinates."""
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left",
                                                   "clickCount": 0 if kind == "mouseMoved" else 1})

    def tap(self, x: float, y: float):
        """A touch tap at viewport coordinates (the viewport must have touch emulation: width < 600)."""
        point = [{"x": x, "y": y}]
        self.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": point})
        self.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})

    def press(self, key: str = "Tab", code: str = "Tab", key_code: int = 9, shift: bool = False):
        modifiers = 8 if shift else 0
        for kind in ("rawKeyDown", "keyUp"):
            self.send("Input.dispatchKeyEvent", {"type": kind, "key": key, "code": code, "modifiers": modifiers,
                                                 "windowsVirtualKeyCode": key_code, "nativeVirtualKeyCode": key_code})

    def screenshot(self, path: Path, full_page: bool = True, max_height: int = 2400, quality: int = 70):
        """Save the page (its top `max_height` px if `full_page`, else the viewport); .jpg or .png by suffix."""
        path = Path(path)
        jpeg = path.suffix.lower() in (".jpg", ".jpeg")
        params = {"format": "jpeg", "quality": quality} if jpeg else {"format": "png"}
        if full_page:
            height = min(max_height, int(self.evaluate("document.documentElement.scrollHeight")))
            width = self._viewport[0] if self._viewport else 1280
            params.update(clip={"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
                          captureBeyondViewport=True)
        data = self.send("Page.captureScreenshot", params, timeout=60)["data"]
        path.write_bytes(base64.b64decode(data))


def _remote_text(arg: dict) -> str:
    if "value" in arg:
        return str(arg["value"])
    return arg.get("description") or arg.get("unserializableValue") or arg.get("type", "")
