"""Push to downstream mirrors: after a new catalog is published, POST each `notify` url.

A downstream is another eumirror's `POST /sync` (or anything that answers 2xx). Failures are
retried a bounded number of times, then logged and counted; they never fail the sync.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator

import aiohttp
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from ..core.config import Upstream
from ..core.policy import redact
from ..log import log
from .trigger import read_token

ATTEMPTS = 4
BACKOFF = (0.5, 1.0, 2.0)
MAX_RETRY_AFTER = 10.0
TIMEOUT = aiohttp.ClientTimeout(total=10, connect=5)


class NotifyCounters(Collector):
    """Failed pushes per upstream (after the retries), for /metrics."""

    def __init__(self) -> None:
        self.failures: dict[str, int] = {}

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "eumirror_notify_failures",
            "Downstream notifications that failed after their retries.",
            labels=["upstream"],
        )
        for name, count in sorted(self.failures.items()):
            family.add_metric([name], float(count))
        yield family


COUNTERS = NotifyCounters()


async def notify_downstreams(upstreams: Iterable[Upstream], published: Iterable[str]) -> None:
    """POST every `notify` url of the upstreams whose catalog was just published."""
    fresh = set(published)
    jobs = [(up, url) for up in upstreams if up.name in fresh for url in up.notify]
    if not jobs:
        return
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        await asyncio.gather(*(_push(session, up, url) for up, url in jobs))


async def _push(session: aiohttp.ClientSession, up: Upstream, url: str) -> None:
    headers = {"User-Agent": "eumirror-notify"}
    if up.notify_token_file is not None:
        headers["Authorization"] = f"Bearer {read_token(up.notify_token_file)}"
    problem = ""
    for attempt in range(ATTEMPTS):
        wait = BACKOFF[min(attempt, len(BACKOFF) - 1)]
        try:
            async with session.post(url, headers=headers) as resp:
                if 200 <= resp.status < 300:
                    log.info("downstream_notified", upstream=up.name, url=redact(url))
                    return
                problem = f"HTTP {resp.status}"
                if 400 <= resp.status < 500 and resp.status not in (408, 429):
                    break  # a wrong token or url does not get better by asking again
                if resp.status == 429:
                    wait = _retry_after(resp.headers.get("Retry-After"), wait)
        except (aiohttp.ClientError, TimeoutError) as exc:
            problem = str(exc) or type(exc).__name__
        if attempt + 1 < ATTEMPTS:
            await asyncio.sleep(wait)
    COUNTERS.failures[up.name] = COUNTERS.failures.get(up.name, 0) + 1
    log.warning(
        "downstream_not_notified",
        upstream=up.name,
        url=redact(url),
        error=problem,
        hint="the downstream syncs on its own schedule; check its trigger_token_file and url",
    )


def _retry_after(value: str | None, default: float) -> float:
    try:
        return min(MAX_RETRY_AFTER, max(0.0, float(value))) if value else default
    except ValueError:
        return default
