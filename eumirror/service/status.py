"""The status document: each upstream's state, health, and the daemon's own facts.

One document feeds /status, /metrics, the HTML page and `eumirror status`, so they never disagree.
Times in it are ISO 8601 in UTC with a `Z`; the metrics turn them back into numbers. The upstream
meta states are read through a `StateCache`, so a request parses no state file unless another
writer changed `.eumirror/state/` since the last one.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from .. import __version__
from ..core.config import Config, Schedule
from ..storage.fs import Mirror


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


# -- times ----------------------------------------------------------------------------------
def iso(ts: float | None, *, precise: bool = True) -> str | None:
    """Unix time as ISO 8601 UTC with `Z` (milliseconds unless `precise` is False); None stays."""
    if ts is None or ts <= 0:
        return None
    moment = datetime.fromtimestamp(ts, UTC)
    return moment.isoformat(timespec="milliseconds" if precise else "seconds")[:-6] + "Z"


def epoch(value: Any) -> float | None:
    """Unix time from a number or an ISO 8601 string (what old and new documents hold)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if value > 0 else None
    if isinstance(value, str) and value:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    return None


TIME_KEYS = frozenset({"started", "ended", "last_success", "removed_since"})
"""Fields of a run report or meta state that hold a time (written as unix time by the engine)."""


def with_iso_times(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `doc` whose time fields are ISO strings, plus the run's duration if known."""
    out = {k: (iso(epoch(v)) if k in TIME_KEYS else v) for k, v in doc.items()}
    started, ended = epoch(doc.get("started")), epoch(doc.get("ended"))
    if started is not None and ended is not None and "duration_seconds" not in out:
        out["duration_seconds"] = round(max(ended - started, 0.0), 3)
    return out


# -- health and state -----------------------------------------------------------------------
@dataclass(frozen=True)
class Verdict:
    """An upstream's state: `healthy` is what /healthz counts; `state` is one word that later
    features (a pin, damage found by verify) may add to; `reason` is the operator's line."""

    healthy: bool
    state: str
    reason: str


def judge(info: Mapping[str, Any], *, now: float, max_age: float) -> Verdict:
    """Freshness first (what /healthz judges), then what the last run did."""
    run: Mapping[str, Any] = info.get("last_run") or {}
    last = epoch(info.get("last_success"))
    error = str(run.get("error") or "")
    if last is None:
        if run.get("result") == "failure":
            return Verdict(False, "failed", f"no successful sync yet; last run: {error}")
        return Verdict(False, "never synced", "no successful sync yet")
    age = now - last
    if age > max_age:
        why = f"last successful sync {age:.0f}s ago (limit {max_age:.0f}s)"
        if run.get("result") == "failure":
            why += f"; last run: {error}"
        return Verdict(False, "stale", why)
    if run.get("result") == "failure":
        return Verdict(True, "failed", f"last run failed: {error}")
    failures = run.get("failures") or []
    if run.get("result") == "partial" or failures:
        count = len(failures)
        return Verdict(True, "partial", f"{count} image{'s' if count != 1 else ''} failed")
    return Verdict(True, "ok", "ok")


def health(
    upstreams: Mapping[str, Mapping[str, Any]], *, now: float, max_age: float
) -> tuple[bool, str]:
    """Healthy when every upstream's last catalog-fetching sync is recent enough."""
    if not upstreams:
        return False, "no upstreams configured"
    for name, info in upstreams.items():
        verdict = overrule(judge(info, now=now, max_age=max_age), name, info)
        if not verdict.healthy:
            return False, f"{name}: {verdict.reason}"
    return True, "ok"


def controls(meta: Mapping[str, Any]) -> dict[str, Any]:
    """What history, pins and scheduled verification add to an upstream's status."""
    pin = meta.get("pin")
    damaged = meta.get("damaged")
    return {
        "generation": meta.get("generation"),
        "pinned": pin if isinstance(pin, int) and not isinstance(pin, bool) else None,
        "damaged": len(damaged) if isinstance(damaged, list) else 0,
        "last_verify": iso(epoch(meta.get("last_verify"))),
    }


def overrule(verdict: Verdict, name: str, info: Mapping[str, Any]) -> Verdict:
    """Unrepaired damage is unhealthy; a pin (an operator's choice) is healthy, and says so."""
    if info.get("damaged"):
        count = int(info["damaged"])
        return Verdict(
            False,
            "damaged",
            f"{count} damaged tarball{'s' if count != 1 else ''} found by verification, "
            "not repaired yet (the next sync downloads them again)",
        )
    if (pin := info.get("pinned")) is not None:
        why = f"generation {pin}, by `eumirror rollback`; `eumirror unpin {name}` publishes again"
        return Verdict(True, "pinned", why if verdict.state == "ok" else f"{why}; {verdict.reason}")
    return verdict


# -- the state, from memory -----------------------------------------------------------------
RACY_NS = 2_000_000_000
"""A folder mtime this close to the clock is not trusted: a second rename within the same
timestamp tick would leave it unchanged (git's "racy" rule). Such a cache re-reads next time."""


class StateCache:
    """Each upstream's meta state, parsed again only when `.eumirror/state/` changed.

    Every state write is an atomic rename into that folder, which changes its mtime, so one
    `stat` per request notices what a `sync --once` (or anything else) wrote.
    """

    def __init__(self, mirror: Mirror) -> None:
        self.mirror = mirror
        self._key: tuple[int, int] | None = None
        self._names: tuple[str, ...] = ()
        self._metas: dict[str, dict[str, Any]] = {}
        self.reads = 0
        """How many times the state files were parsed (for tests and the benchmark)."""

    def metas(self, names: Sequence[str]) -> dict[str, dict[str, Any]]:
        key = self._folder_key()
        if key is None or key != self._key or tuple(names) != self._names:
            self._metas = {n: self._meta(n) for n in names}
            self.reads += 1
            trusted = key is not None and time.time_ns() - key[0] >= RACY_NS
            self._key = key if trusted else None
            self._names = tuple(names)
        return self._metas

    def _meta(self, name: str) -> dict[str, Any]:
        meta = self.mirror.load_state(name, "meta") or {}
        if hooks := self.mirror.load_state(name, "hooks"):  # written apart, outside the lock
            meta["hooks"] = hooks
        return meta

    def invalidate(self) -> None:
        self._key = None

    def _folder_key(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.mirror.state_dir)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_ino


# -- the document ---------------------------------------------------------------------------
def status_document(
    config: Config,
    mirror: Mirror,
    *,
    daemon: Mapping[str, Any] | None = None,
    now: float | None = None,
    cache: StateCache | None = None,
) -> dict[str, Any]:
    now = time.time() if now is None else now
    names = [up.name for up in config.upstreams]
    metas = (cache or StateCache(mirror)).metas(names)
    max_age = 2 * schedule_period(config.schedule) + config.schedule.jitter
    upstreams: dict[str, Any] = {}
    for up in config.upstreams:
        meta = metas.get(up.name, {})
        run = meta.get("last_run")
        info: dict[str, Any] = {
            "catalog": redacted_source(up.source.url),
            "last_run": with_iso_times(run) if isinstance(run, Mapping) else None,
            "last_success": iso(epoch(meta.get("last_success"))),
            "images": meta.get("images", 0),
            "filtered": meta.get("filtered", 0),
            "hooks": meta.get("hooks") or {},
            "totals": meta.get("totals") or {},
        }
        info.update(controls(meta))
        verdict = overrule(judge(info, now=now, max_age=max_age), up.name, info)
        info.update(healthy=verdict.healthy, state=verdict.state, reason=verdict.reason)
        upstreams[up.name] = info
    ok, reason = health(upstreams, now=now, max_age=max_age)
    if ok and (pins := [f"{n} pinned" for n, i in upstreams.items() if i.get("pinned")]):
        reason = f"ok ({', '.join(pins)})"
    doc: dict[str, Any] = {
        "version": __version__,
        "root": config.where,
        "generated": iso(now),
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
