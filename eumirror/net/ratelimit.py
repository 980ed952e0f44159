"""`[limits] max_rate`: one token bucket shared by every transfer, refilled smoothly.

A transfer reads a chunk, then pays for it: the bucket may go into debt, and the payer sleeps
until the debt is paid back at `rate` bytes per second. Payers queue behind each other's debt,
so eight concurrent downloads together get `rate`, never eight times it; while a payer sleeps it
does not read, and TCP's flow control slows the sender. Unset, `bucket_for` returns None and the
transfer loop skips the bucket altogether.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from ..core.config import Limits

BURST_SECONDS = 0.1
"""An idle bucket saves at most this many seconds' worth of bytes: bursts stay short."""


class TokenBucket:
    def __init__(self, rate: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        self.capacity = self.rate * BURST_SECONDS
        self.clock = clock
        self.tokens = self.capacity
        self.stamp = clock()

    def charge(self, n: int) -> float:
        """Take `n` bytes' worth; the seconds to wait before going on (0 when none)."""
        now = self.clock()
        tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate) - n
        self.tokens, self.stamp = tokens, now
        return -tokens / self.rate if tokens < 0 else 0.0

    async def take(self, n: int) -> float:
        """Pay for `n` bytes; the seconds spent waiting (the low-speed rule leaves them out)."""
        if wait := self.charge(n):
            await asyncio.sleep(wait)
        return wait


_buckets: dict[int, TokenBucket] = {}


def bucket_for(limits: Limits) -> TokenBucket | None:
    """The process's one bucket for this rate (every Fetcher, every upstream), or None."""
    rate = limits.max_rate
    if rate is None:
        return None
    bucket = _buckets.get(rate)
    if bucket is None:
        _buckets.clear()  # a reloaded configuration's new rate replaces the old bucket
        bucket = _buckets[rate] = TokenBucket(rate)
    return bucket
