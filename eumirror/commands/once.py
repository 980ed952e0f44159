"""`eumirror sync --once`: lock, one sync of every upstream, report, exit code."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sys
import time
from pathlib import Path

from ..core.config import Config
from ..core.errors import ExitCode
from ..core.plan import Action, Plan
from ..core.policy import redact
from ..core.progress import Progress
from ..engine.sync import RunReport, sync
from ..log import log
from ..net.fetch import Fetcher
from ..storage.base import work_area
from ..storage.fs import Mirror
from ..storage.statcheck import StatCheck
from .progress import report_progress


async def run_sync(
    config: Config,
    mirror: Mirror,
    *,
    dry_run: bool = False,
    allow_shrink: bool = False,
    progress: Progress | None = None,
    stat_check: StatCheck | None = None,
) -> RunReport:
    """One sync of every upstream; the caller holds the lock."""
    progress = progress or Progress()
    async with Fetcher(config.limits, on_bytes=progress.add_bytes) as fetcher:
        return await sync(
            config,
            mirror,
            fetcher,
            dry_run=dry_run,
            allow_shrink=allow_shrink,
            progress=progress,
            show_plan=print_plan,
            stat_check=stat_check,
        )


async def sync_once(
    config: Config,
    *,
    dry_run: bool,
    allow_shrink: bool,
    metrics_file: Path | None,
    only: tuple[str, ...] = (),
    stat_check: StatCheck | None = None,
) -> int:
    """`only`: the upstreams to sync (--upstream), all when empty; the metrics cover all.
    `stat_check`: the check of the files the command started before importing this."""
    mirror = work_area(config)
    everything = config
    if only:
        config = dataclasses.replace(
            config, upstreams=tuple(u for u in config.upstreams if u.name in only)
        )
    began = time.monotonic()
    if dry_run:
        report = await run_sync(
            config, mirror, dry_run=True, allow_shrink=allow_shrink, stat_check=stat_check
        )
        log.info(
            "sync_done",
            result=report.result,
            duration=round(time.monotonic() - began, 3),
            upstreams=len(report.upstreams),
            dry_run=True,
        )
        return int(ExitCode.OK if report.ok else ExitCode.FAILED)
    await asyncio.to_thread(mirror.prepare)
    progress = Progress()
    with mirror.locked():
        log.info("sync_started", root=config.where, upstreams=len(config.upstreams))
        async with report_progress(progress, sys.stderr, config.status.progress_interval):
            report = await run_sync(
                config, mirror, allow_shrink=allow_shrink, progress=progress, stat_check=stat_check
            )
    await run_hooks(config, mirror, report)
    log.info(
        "sync_done",
        result=report.result,
        duration=round(time.monotonic() - began, 3),
        upstreams=len(report.upstreams),
    )
    code = ExitCode.OK if report.ok else ExitCode.FAILED
    if metrics_file is not None:
        from ..service.metrics import write_textfile
        from ..service.status import status_document

        try:
            write_textfile(metrics_file, status_document(everything, mirror))
        except OSError as exc:
            log.error("metrics_not_written", path=str(metrics_file), error=exc.strerror or str(exc))
            print(f"eumirror: {metrics_not_written(metrics_file, exc)}", file=sys.stderr)
            code = ExitCode.FAILED
    summarise(report, mirror, once=True)
    await notify_published(config, report)
    return int(code)


async def notify_published(config: Config, report: RunReport) -> None:
    """Push to the downstreams of every upstream that published a new catalog."""
    fresh = [u.name for u in report.upstreams if u.published]
    if not fresh or not any(up.notify for up in config.upstreams):
        return  # the common case: no import of the server side (aiohttp.web) at all
    from ..service.notify import notify_downstreams

    await notify_downstreams(config.upstreams, fresh)


async def run_hooks(config: Config, mirror: Mirror, report: RunReport) -> None:
    """The on_publish hooks of new generations, after the lock is released; waited for."""
    if not any(up.on_publish for up in config.upstreams):
        return
    from ..service.hooks import HookRunner, jobs_for

    if jobs := jobs_for(config, report.upstreams):
        await HookRunner(mirror).run(jobs)


def metrics_not_written(path: Path, exc: OSError) -> str:
    """The plain line for a --metrics-file that could not be written, with what to do."""
    return (
        f"--metrics-file {path}: not written: {exc.strerror or exc}; the sync itself finished; "
        "check that the folder exists and is writable by this user (under systemd: "
        "ReadWritePaths= in a drop-in)"
    )


def summarise(report: RunReport, mirror: Mirror | None = None, *, once: bool = False) -> None:
    """One plain line per failure at the end of the run (after the structured log).

    `mirror` tells whether a catalog was ever published; `once`: nothing is scheduled, so the
    line says to run the sync again rather than that the next one will.
    """
    again = (
        "run `eumirror sync --once` again once that is fixed"
        if once
        else "the next scheduled sync tries again"
    )
    for up in report.upstreams:
        if up.result == "failure":
            if mirror is not None and mirror.read_catalog(up.name) is None:
                kept = "nothing has been published for it yet"
            else:
                kept = "the published catalog is unchanged"
            print(f"eumirror: {up.name}: {up.error}; {kept}; {again}", file=sys.stderr)
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
    for left in plan.filtered:
        what = left.name or f"#{left.index}"
        url = redact(left.source_url) if left.source_url else ""
        print(f"  {'filtered':<9} {what:<10} {url}  ({left.rule})".rstrip(), file=out)
    counts = ", ".join(f"{plan.count(a)} {a.value}" for a in Action)
    filtered = f", {len(plan.filtered)} filtered" if plan.filtered else ""
    print(f"  total: {counts}, {len(plan.dropped)} drop{filtered}", file=out)
    with contextlib.suppress(Exception):
        out.flush()
