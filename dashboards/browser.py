"""Open a page in headless Chromium: its console errors and a screenshot (the report's tests, the README's picture).

Chromium is driven over the DevTools protocol with tornado's websocket client (tornado comes with distributed), so
this needs no browser-automation package. Chromium itself comes from the system (Debian: `apt-get install chromium`).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tornado.websocket import websocket_connect

BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")
# Flags for a quiet, offline, throw-away browser: no first-run UI, no update or sync traffic, no GPU.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-first-run",
    "--no-default-browser-check",
    "--hide-scrollbars",
    "--remote-debugging-port=0",
]


class BrowserError(RuntimeError):
    pass


def find_chromium() -> str | None:
    for name in BROWSER_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageCheck:
    url: str
    errors: list[str]  # console errors, uncaught exceptions, failed loads
    messages: list[str] = field(default_factory=list)  # every console message, for diagnosis
    screenshot: bytes = b""  # PNG
    ready: bool = False  # whether `ready_js` became true before the timeout
    probes: dict[str, object] = field(default_factory=dict)  # the value of each `probes` expression


class _DevTools:
    """A minimal DevTools-protocol client: one reader, events kept in arrival order."""

    def __init__(self, connection) -> None:
        self.connection = connection
        self.ids = itertools.count(1)
        self.events: list[dict] = []

    async def call(self, method: str, params: dict | None = None, session: str | None = None,
                   timeout: float = 30.0) -> dict:
        request_id = next(self.ids)
        message = {"id": request_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        await self.connection.write_message(json.dumps(message))
        deadline = time.monotonic() + timeout
        while True:
            raw = await asyncio.wait_for(self.connection.read_message(), max(0.1, deadline - time.monotonic()))
            if raw is None:
                raise BrowserError(f"Chromium closed the DevTools connection during {method}")
            reply = json.loads(raw)
            if reply.get("id") == request_id:
                if "error" in reply:
                    raise BrowserError(f"{method} failed: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    async def wait_event(self, method: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            if any(e.get("method") == method for e in self.events[seen:]):
                return True
            seen = len(self.events)
            try:
                raw = await asyncio.wait_for(self.connection.read_message(), max(0.1, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                return False
            if raw is None:
                raise BrowserError(f"Chromium closed the DevTools connection while waiting for {method}")
            self.events.append(json.loads(raw))
        return False


def _describe(event: dict) -> tuple[str | None, str | None]:
    """(error, message) text of one DevTools event; None where it is not one."""
    method, params = event.get("method"), event.get("params", {})
    if method == "Runtime.exceptionThrown":
        details = params.get("exceptionDetails", {})
        text = details.get("exception", {}).get("description") or details.get("text", "exception")
        return f"uncaught: {text}", None
    if method == "Runtime.consoleAPICalled":
        text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
        line = f"console.{params.get('type')}: {text}"
        return (line if params.get("type") in ("error", "assert") else None), line
    if method == "Log.entryAdded":
        entry = params.get("entry", {})
        line = f"{entry.get('source')} {entry.get('level')}: {entry.get('text')} {entry.get('url', '')}".strip()
        return (line if entry.get("level") == "error" else None), line
    return None, None


async def _drive(port: int, url: str, size: tuple[int, int], ready_js: str, timeout: float,
                 full_page: bool, probes: dict[str, str]) -> PageCheck:
    version = await _json_get(port, "/json/version")
    connection = await websocket_connect(version["webSocketDebuggerUrl"], max_message_size=512 * 2**20)
    tools = _DevTools(connection)
    try:
        target = await tools.call("Target.createTarget", {"url": "about:blank"})
        session = (await tools.call("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}))[
            "sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            await tools.call(f"{domain}.enable", session=session)
        await tools.call("Emulation.setDeviceMetricsOverride",
                         {"width": size[0], "height": size[1], "deviceScaleFactor": 1, "mobile": False},
                         session=session)
        await tools.call("Page.navigate", {"url": url}, session=session)
        await tools.wait_event("Page.loadEventFired", timeout)
        ready = False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = await tools.call("Runtime.evaluate", {"expression": f"Boolean({ready_js})",
                                                           "returnByValue": True}, session=session)
            if result.get("result", {}).get("value") is True:
                ready = True
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.3)  # let the last canvases paint
        values = {}
        for name, expression in probes.items():
            result = await tools.call("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                                      session=session)
            if "exceptionDetails" in result:
                raise BrowserError(f"probe {name!r} threw: {result['exceptionDetails'].get('text')}")
            values[name] = result.get("result", {}).get("value")
        if full_page:
            metrics = await tools.call("Page.getLayoutMetrics", session=session)
            height = int(min(metrics["cssContentSize"]["height"], 12000))
            await tools.call("Emulation.setDeviceMetricsOverride",
                             {"width": size[0], "height": max(size[1], height), "deviceScaleFactor": 1,
                              "mobile": False}, session=session)
            await asyncio.sleep(0.5)
        shot = await tools.call("Page.captureScreenshot", {"format": "png"}, session=session, timeout=timeout)
        await tools.call("Runtime.evaluate", {"expression": "1"}, session=session)  # flush pending events
        errors, messages = [], []
        for event in tools.events:
            error, message = _describe(event)
            if error:
                errors.append(error)
            if message:
                messages.append(message)
        return PageCheck(url, errors, messages, base64.b64decode(shot["data"]), ready, values)
    finally:
        try:
            await tools.call("Browser.close", timeout=5)
        except Exception:  # noqa: BLE001 - closing is best effort; the process is ended below anyway
            pass
        connection.close()


async def _json_get(port: int, path: str) -> dict:
    from tornado.httpclient import AsyncHTTPClient

    response = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{port}{path}", request_timeout=10)
    return json.loads(response.body)


def _wait_for_port(profile: Path, process: subprocess.Popen, log: Path, timeout: float) -> int:
    """Chromium writes the port it chose (for --remote-debugging-port=0) into DevToolsActivePort."""
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_file.exists():
            lines = port_file.read_text().splitlines()
            if lines and lines[0].strip().isdigit():
                return int(lines[0])
        if process.poll() is not None:
            raise BrowserError(f"Chromium exited with status {process.returncode}: {log.read_text()[-2000:]}")
        time.sleep(0.1)
    raise BrowserError(f"Chromium did not open its DevTools port within {timeout:.0f} s: {log.read_text()[-2000:]}")


def check_page(path_or_url: str | os.PathLike, size: tuple[int, int] = (1400, 1000), ready_js: str = "true",
               timeout: float = 60.0, full_page: bool = False, browser: str | None = None,
               probes: dict[str, str] | None = None) -> PageCheck:
    """Load a page (a file path or a URL) in a fresh headless Chromium profile; its errors and a PNG screenshot.

    `ready_js` is a JavaScript expression polled until true before the screenshot (e.g. "every figure has drawn");
    `probes` are named expressions evaluated in order after that (they may act on the page, e.g. click).
    """
    browser = browser or find_chromium()
    if browser is None:
        raise BrowserError("no Chromium found on PATH; install it (Debian: `apt-get install chromium`)")
    target = str(path_or_url)
    url = target if "://" in target else Path(target).resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="sparsesweep-chromium-") as tmp:
        profile, log = Path(tmp) / "profile", Path(tmp) / "chromium.log"
        with open(log, "wb") as log_file:
            process = subprocess.Popen(
                [browser, *FLAGS, f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
                 "about:blank"],
                stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        try:
            port = _wait_for_port(profile, process, log, timeout)
            return asyncio.run(_drive(port, url, size, ready_js, timeout, full_page, probes or {}))
        finally:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
