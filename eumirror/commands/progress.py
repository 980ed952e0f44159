"""A live one-line progress display for terminals; silent when stderr is not a TTY."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Protocol, TextIO


class Counters(Protocol):
    files_total: int
    files_done: int
    bytes_done: int


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def render(counters: Counters, elapsed: float) -> str:
    rate = counters.bytes_done / elapsed if elapsed > 0 else 0.0
    return (
        f"files {counters.files_done}/{counters.files_total}  "
        f"{human_bytes(counters.bytes_done)}  {human_bytes(rate)}/s"
    )


@contextlib.asynccontextmanager
async def live_progress(counters: Counters, stream: TextIO) -> AsyncIterator[None]:
    if not stream.isatty():
        yield
        return
    started = time.monotonic()

    async def refresh() -> None:
        while True:
            stream.write("\r\x1b[K" + render(counters, time.monotonic() - started))
            stream.flush()
            await asyncio.sleep(0.5)

    task = asyncio.create_task(refresh())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        stream.write("\r\x1b[K")
        stream.flush()
