"""Showing a running sync's or verify's progress: a live line on a terminal, else a `progress`
log event every `[status] progress_interval`.

`report_progress` (async) serves `sync --once` and the daemon; `progress_thread` serves
synchronous code such as `verify`. Both only read the `Progress` counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, TextIO

from ..core.progress import Progress
from ..log import log

LIVE_PERIOD = 0.5
"""Seconds between two refreshes of the terminal line."""
DEFAULT_INTERVAL = 30.0
"""`[status] progress_interval` when a caller has no configuration at hand."""


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def human_duration(seconds: float) -> str:
    """45s, 3m05s, 2h10m: short enough for a status line."""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def render(snap: dict[str, Any]) -> str:
    """`sync  12/40 files  1.2 GiB of 3.4 GiB  35.0%  12.3 MiB/s  ETA 3m05s` (parts that are not
    known yet are left out)."""
    parts = [
        str(snap.get("phase", "sync")),
        f"{snap.get('files_done', 0)}/{snap.get('files_planned', 0)} files",
    ]
    done = human_bytes(snap.get("bytes_done") or 0)
    planned = snap.get("bytes_planned")
    parts.append(f"{done} of {human_bytes(planned)}" if planned is not None else done)
    if snap.get("percent") is not None:
        parts.append(f"{snap['percent']:.1f}%")
    parts.append(f"{human_bytes(snap.get('rate_bytes_per_second') or 0)}/s")
    if snap.get("eta_seconds") is not None:
        parts.append(f"ETA {human_duration(snap['eta_seconds'])}")
    return "  ".join(parts)


class Display:
    """One refresh at a time: the terminal line, or a log event."""

    def __init__(self, progress: Progress, stream: TextIO | None, interval: float) -> None:
        self.progress = progress
        self.live = stream is not None and stream.isatty()
        self.stream = stream
        self.period = LIVE_PERIOD if self.live else interval
        if not progress.started:
            progress.started = time.monotonic()

    def begin(self) -> None:
        """A terminal shows the line at once; a log waits an interval for news."""
        if self.live:
            self.tick()

    def tick(self) -> None:
        snap = self.progress.snapshot(time.monotonic())
        if self.live and self.stream is not None:
            self.stream.write("\r\x1b[K" + render(snap))
            self.stream.flush()
        else:
            log.info("progress", **snap)

    def close(self) -> None:
        if self.live and self.stream is not None:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


@contextlib.asynccontextmanager
async def report_progress(
    progress: Progress, stream: TextIO | None, interval: float = DEFAULT_INTERVAL
) -> AsyncIterator[None]:
    """Show `progress` while the body runs: live on a terminal `stream`, else (also with no
    stream, as in the daemon) one `progress` event every `interval` seconds."""
    display = Display(progress, stream, interval)

    async def refresh() -> None:
        display.begin()
        while True:
            await asyncio.sleep(display.period)
            display.tick()

    task = asyncio.create_task(refresh())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        display.close()


@contextlib.contextmanager
def progress_thread(
    progress: Progress, stream: TextIO | None, interval: float = DEFAULT_INTERVAL
) -> Iterator[None]:
    """`report_progress` for synchronous callers: a thread that only reads the counters."""
    display = Display(progress, stream, interval)
    stop = threading.Event()

    def refresh() -> None:
        display.begin()
        while not stop.wait(display.period):
            display.tick()

    thread = threading.Thread(target=refresh, name="eumirror-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        display.close()


live_progress = report_progress
"""The former name, for callers not moved yet."""
