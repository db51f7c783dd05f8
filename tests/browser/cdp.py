"""A small Chrome DevTools Protocol driver for headless Debian ``chromium`` (aiohttp
websockets, already a dependency): start the browser offline, load a page at a given width,
run JavaScript, and collect console errors and uncaught exceptions.

Every wait is bounded; the browser only talks to 127.0.0.1 (its DevTools port) and loads
``file://`` pages.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--hide-scrollbars",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)
START_SECONDS = 30.0
CALL_SECONDS = 20.0


def find_chromium() -> str | None:
    """``$CHROMIUM``, else Debian's ``chromium`` (or ``chromium-browser``) on PATH."""
    explicit = os.environ.get("CHROMIUM")
    if explicit:
        return explicit
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class Browser:
    """A running headless chromium; :meth:`page` opens a tab over its DevTools websocket."""

    port: int
    process: subprocess.Popen[bytes]
    profile: str


@contextmanager
def chromium(binary: str) -> Iterator[Browser]:
    profile = tempfile.mkdtemp(prefix="skillmix-chromium-")
    proc = subprocess.Popen(
        [binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = Path(profile, "DevToolsActivePort")
        deadline = time.monotonic() + START_SECONDS
        while not (port_file.exists() and port_file.read_text().strip()):
            if proc.poll() is not None:
                raise RuntimeError(f"{binary} exited with {proc.returncode} at start")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{binary} did not open its DevTools port")
            time.sleep(0.05)
        yield Browser(int(port_file.read_text().split()[0]), proc, profile)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        shutil.rmtree(profile, ignore_errors=True)


@dataclass
class Tab:
    """One page target: ``call`` a DevTools method; ``events`` are kept for inspection."""

    ws: Any
    events: list[dict[str, Any]] = field(default_factory=list)
    _next: int = 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._next += 1
        ident = self._next
        await self.ws.send_str(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + CALL_SECONDS
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no answer to {method}")
            msg = json.loads((await self.ws.receive(timeout=left)).data)
            if msg.get("id") == ident:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                result: dict[str, Any] = msg.get("result", {})
                return result
            if "method" in msg:
                self.events.append(msg)

    async def wait_event(self, method: str, seconds: float = CALL_SECONDS) -> dict[str, Any]:
        deadline = time.monotonic() + seconds
        while True:
            for e in self.events:
                if e["method"] == method:
                    self.events.remove(e)
                    return e
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {method} event")
            msg = json.loads((await self.ws.receive(timeout=left)).data)
            if "method" in msg:
                self.events.append(msg)

    async def js(self, expression: str) -> Any:
        """Evaluate (awaiting promises) and return the value; a thrown error raises."""
        out = await self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in out:
            raise RuntimeError(f"{expression[:80]}: {out['exceptionDetails']}")
        return out["result"].get("value")

    async def until(self, expression: str, seconds: float = 15.0) -> Any:
        """Poll an expression until it is truthy (bounded)."""
        deadline = time.monotonic() + seconds
        while True:
            value = await self.js(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"never true: {expression[:80]}")
            await asyncio.sleep(0.05)

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and error log entries (CSP violations too)."""
        out = []
        for e in self.events:
            p = e.get("params", {})
            if e["method"] == "Runtime.exceptionThrown":
                out.append(json.dumps(p.get("exceptionDetails", {}))[:300])
            elif e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(json.dumps(p.get("args", []))[:300])
            elif e["method"] == "Log.entryAdded" and p["entry"].get("level") == "error":
                out.append(p["entry"].get("text", "")[:300])
        return out


async def open_tab(browser: Browser, session: Any, url: str, width: int, height: int) -> Tab:
    """A new tab at ``width`` x ``height`` CSS pixels (a phone's, when narrow) with ``url``
    loaded (its load event fired)."""
    async with session.put(f"http://127.0.0.1:{browser.port}/json/new?about:blank") as resp:
        target = await resp.json()
    ws = await session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)
    tab = Tab(ws)
    for domain in ("Runtime", "Log", "Page"):
        await tab.call(f"{domain}.enable")
    await tab.call(
        "Emulation.setDeviceMetricsOverride",
        width=width,
        height=height,
        deviceScaleFactor=1,
        mobile=width < 600,
    )
    await tab.call("Page.navigate", url=url)
    await tab.wait_event("Page.loadEventFired")
    return tab
