"""Progress counters of a running sync or verify: plain data, shared by the engine (which counts)
and the displays (terminal line, `progress` log events, /status, the HTML page), which only read
them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ETA_AFTER = 2.0
"""Seconds of transfer before a rate, and so an ETA, means something."""


@dataclass
class Progress:
    """Updated from the event loop only (or one thread); readers take a `snapshot()`.

    Catalogs carry no sizes, so `bytes_planned` is the sum of the lengths known so far (from
    Content-Length as each download starts): None until the first one is known. The percentage
    and ETA scale it by the files whose length is not known yet (`files_sized` of `files_total`).
    """

    phase: str = "sync"  # sync | verify
    files_total: int = 0
    files_done: int = 0
    bytes_done: int = 0
    bytes_planned: int | None = None
    files_sized: int = 0
    """How many lengths `bytes_planned` adds up."""
    started: float = 0.0
    """time.monotonic() when the phase began (the display sets it if the caller did not)."""
    upstreams: dict[str, int] = field(default_factory=dict)
    """Per upstream: files still to do (informative)."""

    def add_bytes(self, n: int) -> None:
        self.bytes_done += n

    def plan_bytes(self, n: int) -> None:
        self.bytes_planned = (self.bytes_planned or 0) + n
        self.files_sized += 1

    def estimated_bytes(self) -> float | None:
        """All the bytes this phase moves, extrapolating the average known length to the files
        not sized yet; None before any length is known."""
        if self.bytes_planned is None or self.files_sized <= 0:
            return None
        unsized = max(self.files_total - self.files_sized, 0)
        return self.bytes_planned + unsized * (self.bytes_planned / self.files_sized)

    def fraction(self) -> float | None:
        """Share done, by bytes when any length is known, else by files; None with nothing
        planned."""
        total = self.estimated_bytes()
        if total:
            return min(self.bytes_done / total, 1.0)
        if self.files_total:
            return min(self.files_done / self.files_total, 1.0)
        return None

    def snapshot(self, now: float) -> dict[str, Any]:
        """The figures every display shows: done of planned, percentage, rate, ETA (None until
        it means something: some bytes known and moving for a few seconds)."""
        elapsed = max(now - self.started, 0.0)
        rate = self.bytes_done / elapsed if elapsed > 0 else 0.0
        eta: float | None = None
        total = self.estimated_bytes()
        if total and rate > 0 and elapsed >= ETA_AFTER:
            eta = max(total - self.bytes_done, 0) / rate
        share = self.fraction()
        return {
            "phase": self.phase,
            "files_done": self.files_done,
            "files_planned": self.files_total,
            "bytes_done": self.bytes_done,
            "bytes_planned": self.bytes_planned,
            "percent": None if share is None else round(100 * share, 1),
            "rate_bytes_per_second": round(rate, 1),
            "eta_seconds": None if eta is None else round(eta, 1),
            "elapsed_seconds": round(elapsed, 3),
        }
