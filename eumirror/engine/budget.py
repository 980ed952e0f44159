"""The run's one space budget: free space measured once, charged as bytes are written.

Charging what is written (not what a response announces) keeps retries from paying twice and
catches bodies without a Content-Length; bytes of a discarded download are given back. Every
download of every upstream draws on the same budget, from the event loop only, so there is no
check-then-await race between them.
"""

from __future__ import annotations

from ..core.errors import StorageError


class SpaceBudget:
    def __init__(self, free: int, reserve: int) -> None:
        self.free = free
        self.reserve = reserve
        self.taken = 0

    @property
    def available(self) -> int:
        """What downloads may still write before eating into the reserve."""
        return self.free - self.reserve - self.taken

    def check(self, size: int) -> None:
        """Refuse at once a download announced larger than what is left (nothing is taken)."""
        if size > 0 and size > self.available:
            raise self._refusal(size)

    def take(self, size: int) -> None:
        """Charge bytes about to be written; refused when they would eat into the reserve."""
        if size > self.available:
            raise self._refusal(size)
        self.taken += size

    def give_back(self, size: int) -> None:
        self.taken = max(0, self.taken - size)

    def _refusal(self, size: int) -> StorageError:
        have = max(self.free - self.taken, 0)
        return StorageError(
            f"not enough space: need {size} more bytes plus the reserve of {self.reserve}, "
            f"have {have}",
            hint="free space on the mirror's filesystem or lower [limits] free_space_reserve",
        )
