"""What the upstream runs of one sync share: the configuration, the mirror, the HTTP seam, the
transfer slots, the one space budget, progress counters and a cancellation flag for threads.

Nothing here holds an upstream's own state: each `UpstreamRun` owns that. The only thing built
from every run's state is the inventory of verified names (for hard-linking), assembled once,
read-only, from what each run hands over.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..core.config import Config
from ..core.plan import Inventory, Plan
from ..core.progress import Progress
from ..net.fetch import Fetcher
from ..storage.base import Storage
from ..storage.fs import Mirror
from .budget import SpaceBudget

T = TypeVar("T")


@dataclass
class RunContext:
    config: Config
    mirror: Mirror
    """The local work area: lock, state, history, partial downloads."""
    fetcher: Fetcher
    storage: Storage
    """Where the mirror is published."""
    budget: SpaceBudget
    progress: Progress = field(default_factory=Progress)
    dry_run: bool = False
    allow_shrink: bool = False
    show_plan: Callable[[Plan], None] | None = None
    clock: Callable[[], float] = time.time
    cancel_flags: list[threading.Event] = field(default_factory=list)
    """Each upstream run's flag for its thread work; a stop of the whole run sets them all."""

    def __post_init__(self) -> None:
        self.transfers = asyncio.Semaphore(self.config.concurrency)
        """Simultaneous downloads, all upstreams together."""
        self.preparing = asyncio.Semaphore(self.config.concurrency * 4)
        """Downloads being opened or sealed around the transfers."""
        self._inventory: asyncio.Future[Inventory] | None = None
        self._sources: list[Callable[[], Awaitable[tuple[str, dict[str, list[Any]]] | None]]] = []
        self._through = 0

    def offer_verified(
        self, source: Callable[[], Awaitable[tuple[str, dict[str, list[Any]]] | None]]
    ) -> None:
        """An upstream run registers how to get its verified files (None if it has none)."""
        self._sources.append(source)

    async def inventory(self) -> Inventory:
        """Every verified file of the mirror by name, built once, when a plan first needs it."""
        if self._inventory is None:
            self._inventory = asyncio.ensure_future(self._build_inventory())
        return await asyncio.shield(self._inventory)

    def through_with_inventory(self) -> None:
        """An upstream run needs the inventory no more (call once a run); once no run does, it
        goes: a 100k-file mirror's is 17 MB, held through every publish otherwise."""
        self._through += 1
        if self._through >= len(self._sources):
            self._inventory = None

    async def _build_inventory(self) -> Inventory:
        from .inventory import build_inventory

        offered = await asyncio.gather(*(source() for source in self._sources))
        verified = [item for item in offered if item is not None]
        return await asyncio.to_thread(build_inventory, verified)

    def cancel_threads(self) -> None:
        for flag in self.cancel_flags:
            flag.set()
