"""A headless Chromium driven over the DevTools protocol (aiohttp websocket), for tests that
must see what a browser renders. Reaches loopback only; stopped by its PID."""

from __future__ import annotations

import base64
import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

WAIT = 10.0
PHONE_WIDTH = 375
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
"""Screenshots and other things a person may want to look at after a run (gitignored)."""


def chromium_binary() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("chromium is not installed here (CI installs it: .ci/install-chromium)")
    return found


@contextlib.contextmanager
def chromium(tmp_path: Path) -> Iterator[str]:
    """A headless Chromium with its DevTools port; yields the DevTools http base url.

    It reaches nothing but loopback: every other host resolves to nothing and any other address
    goes to a proxy that is not there. Stopped by its PID (its process group) at the end.
    """
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    args = [
        chromium_binary(),
        "--headless=new",
        "--remote-debugging-port=0",
        "--remote-debugging-address=127.0.0.1",
        f"--user-data-dir={profile}",
        "--disable-gpu",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-default-apps",
        "--no-pings",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--proxy-server=http://127.0.0.1:9",
        f"--window-size={PHONE_WIDTH},800",
        "about:blank",
    ]
    if os.geteuid() == 0:
        args.insert(1, "--no-sandbox")
    proc = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            assert proc.poll() is None, f"chromium exited with {proc.returncode}"
            assert time.monotonic() < deadline, "chromium gave no DevTools port in 30s"
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        yield f"http://127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(WAIT)


class DevTools:
    """The few DevTools protocol calls the test needs, over one page's websocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        ident = next(self.ids)
        await self.ws.send_json({"id": ident, "method": method, "params": params})
        while True:
            msg = await self.ws.receive_json(timeout=WAIT)
            if msg.get("id") == ident:
                assert "error" not in msg, msg
                result: dict[str, Any] = msg.get("result", {})
                return result
            self.events.append(msg)

    async def wait_event(self, method: str) -> dict[str, Any]:
        while True:
            for event in self.events:
                if event.get("method") == method:
                    self.events.remove(event)
                    return event
            self.events.append(await self.ws.receive_json(timeout=WAIT))

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")


async def render_in_chromium(devtools_url: str, page_url: str) -> tuple[dict[str, Any], bytes]:
    """What the page shows at the phone's width, and a screenshot (PNG)."""
    async with aiohttp.ClientSession(trust_env=False) as session:
        async with session.get(f"{devtools_url}/json/list") as resp:
            targets = await resp.json()
        ws_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        async with session.ws_connect(ws_url, max_msg_size=0) as ws:
            cdp = DevTools(ws)
            await cdp.call(
                "Emulation.setDeviceMetricsOverride",
                width=PHONE_WIDTH,
                height=800,
                deviceScaleFactor=2,
                mobile=True,
            )
            await cdp.call("Page.enable")
            await cdp.call("Page.navigate", url=page_url)
            await cdp.wait_event("Page.loadEventFired")
            facts = await cdp.evaluate(
                "({scrollWidth: document.documentElement.scrollWidth,"
                " innerWidth: window.innerWidth,"
                " title: document.title,"
                " sections: [...document.querySelectorAll('section')].map(s => s.innerText)})"
            )
            height = await cdp.evaluate("document.documentElement.scrollHeight")
            await cdp.call(
                "Emulation.setDeviceMetricsOverride",
                width=PHONE_WIDTH,
                height=int(height),
                deviceScaleFactor=2,
                mobile=True,
            )
            picture = await cdp.call("Page.captureScreenshot", format="png")
    assert isinstance(facts, dict)
    return facts, base64.b64decode(picture["data"])
