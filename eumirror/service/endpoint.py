"""The status endpoint's routes: thin aiohttp handlers over one status document.

`/` (HTML), `/status` (JSON), `/healthz` and `/metrics` all render the snapshot the daemon
builds from memory; nothing here takes input, and only GET/HEAD are routed (aiohttp answers 405
for the rest).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .metrics import registry_for
from .page import render_page

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
"""The page loads nothing and runs no script; say so to the browser."""


def make_app(snapshot: Callable[[], dict[str, Any]]) -> web.Application:
    registry = registry_for(snapshot)

    async def page(_: web.Request) -> web.Response:
        return web.Response(
            text=render_page(snapshot()),
            content_type="text/html",
            charset="utf-8",
            headers=SECURITY_HEADERS,
        )

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        state = snapshot()["health"]
        return web.Response(status=200 if state["ok"] else 503, text=state["reason"] + "\n")

    async def status(_: web.Request) -> web.Response:
        return web.json_response(snapshot(), dumps=_dumps)

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/status", status)
    return app


def _dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=False)
