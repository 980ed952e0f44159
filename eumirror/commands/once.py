"""`eumirror sync --once`: lock, one sync of every upstream, report, exit code."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path

from ..core.config import Config
from ..core.errors import ExitCode
from ..core.plan import Action, Plan
from ..core.policy import redact
from ..core.progress import Progress
from ..engine.sync import RunReport, Syncer
from ..log import log
from ..net.fetch import Fetcher
from ..storage.fs import Mirror
from .progress import live_progress


def trusted_hosts(config: Config) -> frozenset[str]:
    """Each catalog's own host is trusted as configured, plus every allow_hosts entry."""
    hosts: set[str] = set()
    for up in config.upstreams:
        if up.source.host:
            hosts.add(up.source.host)
        hosts.update(up.allow_hosts)
    return frozenset(hosts)


async def run_sync(
    config: Config,
    mirror: Mirror,
    *,
    dry_run: bool = False,
    allow_shrink: bool = False,
    progress: Progress | None = None,
) -> RunReport:
    """One sync of every upstream; the caller holds the lock."""
    progress = progress or Progress()
    async with Fetcher(
        config.limits, trusted_hosts=trusted_hosts(config), on_bytes=progress.add_bytes
    ) as fetcher:
        syncer = Syncer(
            config,
            mirror,
            fetcher,
            dry_run=dry_run,
            allow_shrink=allow_shrink,
            progress=progress,
            show_plan=print_plan,
        )
        return await syncer.run()


async def sync_once(
    config: Config, *, dry_run: bool, allow_shrink: bool, metrics_file: Path | None
) -> int:
    mirror = Mirror(config.root)
    if not config.upstreams:
        log.warning("no_upstreams", config=str(config.path))
    if dry_run:
        report = await run_sync(config, mirror, dry_run=True, allow_shrink=allow_shrink)
        return int(ExitCode.OK if report.ok else ExitCode.FAILED)
    await asyncio.to_thread(mirror.prepare)
    progress = Progress()
    with mirror.locked():
        log.info("sync_started", root=str(config.root), upstreams=len(config.upstreams))
        async with live_progress(progress, sys.stderr):
            report = await run_sync(config, mirror, allow_shrink=allow_shrink, progress=progress)
    if metrics_file is not None:
        from ..service.metrics import write_textfile
        from ..service.status import status_document

        try:
            write_textfile(metrics_file, status_document(config, mirror))
        except OSError as exc:
            log.error("metrics_not_written", path=str(metrics_file), error=str(exc))
    summarise(report)
    await notify_published(config, report)
    return int(ExitCode.OK if report.ok else ExitCode.FAILED)


async def notify_published(config: Config, report: RunReport) -> None:
    """Push to the downstreams of every upstream that published a new catalog."""
    from ..service.notify import notify_downstreams

    fresh = [u.name for u in report.upstreams if u.published]
    await notify_downstreams(config.upstreams, fresh)


def summarise(report: RunReport) -> None:
    """One plain line per failure at the end of the run (after the structured log)."""
    for up in report.upstreams:
        if up.result == "failure":
            print(
                f"eumirror: {up.name}: {up.error}; the published catalog is unchanged "
                "and the next sync tries again",
                file=sys.stderr,
            )
        for line in up.failures:
            print(f"eumirror: {line}", file=sys.stderr)


def print_plan(plan: Plan) -> None:
    """The --dry-run report: what would be downloaded, reused, dropped, and why."""
    out = sys.stdout
    print(f"upstream {plan.upstream}:", file=out)
    for step in plan.steps:
        label = step.action.value
        what = step.name or f"#{step.index}"
        url = redact(step.source_url) if step.source_url else ""
        print(f"  {label:<9} {what:<10} {url}  ({step.reason})".rstrip(), file=out)
    for url in plan.dropped:
        print(f"  {'drop':<9} {'':<10} {redact(url)}  (gone upstream)", file=out)
    counts = ", ".join(f"{plan.count(a)} {a.value}" for a in Action)
    print(f"  total: {counts}, {len(plan.dropped)} drop", file=out)
    with contextlib.suppress(Exception):
        out.flush()
