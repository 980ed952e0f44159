"""Progress counters of a running sync or verify: plain data, shared by the engine (which counts)
and the displays (terminal line, `progress` log events, /status), which only read them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Progress:
    """Updated from the event loop only; readers take a `snapshot()`.

    Catalogs carry no sizes, so `bytes_planned` is the sum of the lengths known so far (from
    Content-Length as each download starts): None until the first one is known.
    """

    phase: str = "sync"  # sync | verify
    files_total: int = 0
    files_done: int = 0
    bytes_done: int = 0
    bytes_planned: int | None = None
    started: float = 0.0
    """time.monotonic() when the phase began."""
    upstreams: dict[str, int] = field(default_factory=dict)
    """Per upstream: files still to do (informative)."""

    def add_bytes(self, n: int) -> None:
        self.bytes_done += n

    def plan_bytes(self, n: int) -> None:
        self.bytes_planned = (self.bytes_planned or 0) + n

    def snapshot(self, now: float) -> dict[str, Any]:
        """The figures every display shows: done of planned, rate, ETA (None until it means
        something: some bytes known and moving)."""
        elapsed = max(now - self.started, 0.0)
        rate = self.bytes_done / elapsed if elapsed > 0 else 0.0
        eta: float | None = None
        if self.bytes_planned and rate > 0 and elapsed >= 2.0:
            eta = max(self.bytes_planned - self.bytes_done, 0) / rate
        return {
            "phase": self.phase,
            "files_done": self.files_done,
            "files_planned": self.files_total,
            "bytes_done": self.bytes_done,
            "bytes_planned": self.bytes_planned,
            "rate_bytes_per_second": round(rate, 1),
            "eta_seconds": None if eta is None else round(eta, 1),
            "elapsed_seconds": round(elapsed, 3),
        }
