"""One sync of the configured upstreams: one `UpstreamRun` each, in one task group.

Nothing of a run outlives `sync()`: every upstream's work is a task of its group, and a failure
in one upstream (expected or not) fails that upstream alone while the others finish. Deletion
waits until every upstream has published (phase two), so a file another upstream is linking
from is never deleted under it. The caller holds the mirror's lock for the whole call.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable

from ..core.config import Config
from ..core.plan import Plan
from ..core.progress import Progress
from ..net.fetch import Fetcher
from ..storage.base import Storage, open_storage
from ..storage.fs import Mirror
from ..storage.statcheck import StatCheck
from .budget import SpaceBudget
from .context import RunContext
from .inventory import clean_stale_partials
from .report import RunReport, UpstreamReport, add_totals
from .run import UpstreamRun

__all__ = ["RunReport", "UpstreamReport", "add_totals", "sync"]


async def sync(
    config: Config,
    mirror: Mirror,
    fetcher: Fetcher,
    *,
    dry_run: bool = False,
    allow_shrink: bool = False,
    progress: Progress | None = None,
    show_plan: Callable[[Plan], None] | None = None,
    clock: Callable[[], float] = time.time,
    storage: Storage | None = None,
    stat_check: StatCheck | None = None,
) -> RunReport:
    """`storage`: where to publish; by default opened (and closed) here from `config`, taking
    the answers of `stat_check` (started by the command) for its files."""
    if storage is not None:
        return await _sync(
            config, mirror, fetcher, storage, dry_run, allow_shrink, progress, show_plan, clock
        )
    store = await asyncio.to_thread(
        functools.partial(open_storage, config, mirror, stat_check=stat_check)
    )
    try:
        return await _sync(
            config, mirror, fetcher, store, dry_run, allow_shrink, progress, show_plan, clock
        )
    finally:
        await asyncio.to_thread(store.close)


async def _sync(
    config: Config,
    mirror: Mirror,
    fetcher: Fetcher,
    storage: Storage,
    dry_run: bool,
    allow_shrink: bool,
    progress: Progress | None,
    show_plan: Callable[[Plan], None] | None,
    clock: Callable[[], float],
) -> RunReport:
    free = 0 if dry_run else await asyncio.to_thread(_set_up, mirror)
    await asyncio.to_thread(functools.partial(storage.check, write=not dry_run))
    ctx = RunContext(
        config=config,
        mirror=mirror,
        fetcher=fetcher,
        storage=storage,
        budget=SpaceBudget(free, config.limits.free_space_reserve),
        progress=progress or Progress(),
        dry_run=dry_run,
        allow_shrink=allow_shrink,
        show_plan=show_plan,
        clock=clock,
    )
    runs = [UpstreamRun(ctx, up) for up in config.upstreams]
    try:
        async with asyncio.TaskGroup() as group:
            for run in runs:
                group.create_task(run.sync())
        if not dry_run:
            async with asyncio.TaskGroup() as group:
                for run in runs:
                    group.create_task(run.finish())
        else:
            for run in runs:
                run.log_report()
    except asyncio.CancelledError:
        ctx.cancel_threads()
        raise
    return RunReport([run.report for run in runs])


def _set_up(mirror: Mirror) -> int:
    """Leftovers of a killed run go (the lock is held); the run's one free-space figure."""
    mirror.clear_scratch()
    clean_stale_partials(mirror)
    return mirror.free_bytes()
