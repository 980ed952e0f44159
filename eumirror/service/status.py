"""The status document, health, and the status endpoint (/metrics, /healthz, /status).

`status_document` and `health` are pure over the state they are given; the aiohttp handlers are
thin shells around them.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from .. import __version__
from ..core.config import Config, Schedule
from ..storage.fs import Mirror
from .metrics import registry_for


def schedule_period(schedule: Schedule, now: datetime | None = None) -> float:
    """The schedule's period: the interval, or for cron the longest gap between two firings.

    An irregular cron (`0 9 * * 1-5`) has gaps of a day and of three days; health must allow the
    longest one, or the mirror turns unhealthy every weekend. The gaps are looked at over at least
    a week (and two gaps), within a bound on the number of firings.
    """
    if schedule.cron:
        start = now or datetime.now(UTC)
        return _cron_period(schedule.cron, start.astimezone(UTC).date().toordinal())
    return float(schedule.interval or 6 * 3600.0)


@functools.lru_cache(maxsize=16)
def _cron_period(cron: str, day: int) -> float:
    """Longest gap between firings from the start of `day` on (cached: /metrics asks often)."""
    from apscheduler.triggers.cron import CronTrigger

    trigger = CronTrigger.from_crontab(cron, timezone=UTC)
    start = datetime.combine(date.fromordinal(day), datetime.min.time(), UTC)
    first = previous = trigger.get_next_fire_time(None, start)
    longest = 0.0
    for count in range(_CRON_FIRINGS):
        if previous is None or first is None:
            break
        if count >= 2 and (previous - first).total_seconds() >= _CRON_HORIZON:
            break
        following = trigger.get_next_fire_time(previous, previous)
        if following is None or following <= previous:
            break
        longest = max(longest, (following - previous).total_seconds())
        previous = following
    return longest or 86400.0


_CRON_FIRINGS = 2000
_CRON_HORIZON = 8 * 86400.0


def health(
    upstreams: Mapping[str, Mapping[str, Any]], *, now: float, max_age: float
) -> tuple[bool, str]:
    """Healthy when every upstream's last catalog-fetching sync is recent enough."""
    if not upstreams:
        return False, "no upstreams configured"
    for name, info in upstreams.items():
        last = info.get("last_success")
        if not last:
            return False, f"{name}: no successful sync yet"
        age = now - float(last)
        if age > max_age:
            return False, f"{name}: last successful sync {age:.0f}s ago (limit {max_age:.0f}s)"
    return True, "ok"


def status_document(
    config: Config,
    mirror: Mirror,
    *,
    daemon: Mapping[str, Any] | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    now = time.time() if now is None else now
    upstreams: dict[str, Any] = {}
    for up in config.upstreams:
        meta = mirror.load_state(up.name, "meta") or {}
        upstreams[up.name] = {
            "catalog": redacted_source(up.source.url),
            "last_run": meta.get("last_run"),
            "last_success": meta.get("last_success"),
            "images": meta.get("images", 0),
            "totals": meta.get("totals") or {},
        }
    max_age = 2 * schedule_period(config.schedule) + config.schedule.jitter
    ok, reason = health(upstreams, now=now, max_age=max_age)
    doc: dict[str, Any] = {
        "version": __version__,
        "root": str(config.root),
        "upstreams": upstreams,
        "health": {"ok": ok, "reason": reason, "max_age_seconds": max_age},
        "filesystem": filesystem(config.root),
    }
    doc.update(daemon or {})
    return doc


def redacted_source(url: str) -> str:
    from ..core.policy import redact

    return redact(url)


def filesystem(root: os.PathLike[str] | str) -> dict[str, int]:
    try:
        st = os.statvfs(root)
    except OSError:
        return {}
    return {
        "free_bytes": st.f_bavail * st.f_frsize,
        "used_bytes": (st.f_blocks - st.f_bfree) * st.f_frsize,
    }


def iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat() if ts else None


def make_app(
    snapshot: Callable[[], dict[str, Any]],
    *,
    collectors: Sequence[Collector] = (),
    request_sync: Callable[[str], None] | None = None,
    trigger_token_file: Path | None = None,
) -> web.Application:
    """GET/HEAD only (aiohttp answers 405 for the rest), plus `POST /sync` when a trigger token
    file is configured (service/trigger.py); `collectors` add to /metrics (the content server's)."""
    registry = registry_for(snapshot)
    for collector in collectors:
        registry.register(collector)

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        state = snapshot()["health"]
        return web.Response(status=200 if state["ok"] else 503, text=state["reason"] + "\n")

    async def status(_: web.Request) -> web.Response:
        return web.json_response(snapshot(), dumps=_dumps)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/status", status)
    if trigger_token_file is not None and request_sync is not None:
        from .trigger import sync_trigger

        app.router.add_post("/sync", sync_trigger(trigger_token_file, request_sync))
    return app


def _dumps(obj: Any) -> str:
    import json

    return json.dumps(obj, indent=2, sort_keys=False)
