"""The status endpoint's routes: thin aiohttp handlers over one status document.

`/` (HTML), `/status` (JSON), `/healthz` and `/metrics` all render the snapshot the daemon
builds from memory; only GET/HEAD are routed (aiohttp answers 405 for the rest), and the one
input taken is `POST /sync` with a bearer token, when a trigger token file is configured.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from .metrics import registry_for
from .page import render_page

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
"""The page loads nothing and runs no script; say so to the browser."""


def make_app(
    snapshot: Callable[[], dict[str, Any]],
    *,
    collectors: Sequence[Collector] = (),
    request_sync: Callable[[str], None] | None = None,
    trigger_token_file: Path | None = None,
) -> web.Application:
    """Plus `POST /sync` when a trigger token file is configured (service/trigger.py);
    `collectors` add to /metrics (the content server's, the pushes')."""
    registry = registry_for(snapshot)
    for collector in collectors:
        registry.register(collector)

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
    if trigger_token_file is not None and request_sync is not None:
        from .trigger import sync_trigger

        app.router.add_post("/sync", sync_trigger(trigger_token_file, request_sync))
    return app


def _dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=False)
