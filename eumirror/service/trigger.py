"""`POST /sync` on the status endpoint: a downstream asks for a sync, with a bearer token.

The token is read from `[status] trigger_token_file` on every request (rotating it needs no
restart) and compared in constant time. Every attempt, good or bad, spends from a per-client token
bucket, so guessing is slow and a chatty upstream cannot keep the mirror busy.
"""

from __future__ import annotations

import hmac
import math
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from ..log import log

BURST = 10
"""Requests a client may make at once ..."""
REFILL_SECONDS = 6.0
"""... and then one more per this many seconds."""


class RateLimit:
    """A token bucket per client address."""

    def __init__(
        self,
        burst: int = BURST,
        refill_seconds: float = REFILL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst = burst
        self.refill = refill_seconds
        self.clock = clock
        self.buckets: dict[str, tuple[float, float]] = {}

    def take(self, client: str) -> float:
        """0 when the request may go ahead, else the seconds until it may."""
        now = self.clock()
        tokens, last = self.buckets.get(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) / self.refill)
        if tokens < 1.0:
            self.buckets[client] = (tokens, now)
            return (1.0 - tokens) * self.refill
        if len(self.buckets) > 10_000:  # forget full buckets rather than grow without bound
            self.buckets = {k: v for k, v in self.buckets.items() if v[0] < self.burst - 1}
        self.buckets[client] = (tokens - 1.0, now)
        return 0.0


def read_token(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        log.error("trigger_token_unreadable", path=str(path), error=str(exc))
        return ""


def sync_trigger(
    token_file: Path, request_sync: Callable[[str], None], limit: RateLimit | None = None
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The aiohttp handler for `POST /sync`."""
    bucket = limit or RateLimit()

    async def handler(request: web.Request) -> web.StreamResponse:
        client = request.remote or "unknown"
        wait = bucket.take(client)
        if wait > 0:
            return web.Response(
                status=429,
                text="too many sync requests; try again later\n",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
        token = read_token(token_file)
        given = request.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        if not (
            token
            and scheme.lower() == "bearer"
            and hmac.compare_digest(value.strip().encode(), token.encode())
        ):
            log.warning("sync_trigger_refused", remote=client)
            return web.Response(
                status=401,
                text="a valid bearer token is needed\n",
                headers={"WWW-Authenticate": "Bearer"},
            )
        request_sync(f"POST /sync from {client}")
        return web.Response(status=202, text="sync requested\n")

    return handler
