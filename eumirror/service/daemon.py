"""The daemon: APScheduler ticks, signals, the status endpoint and sd_notify around `run_sync`.

Handlers only set events; one loop runs the syncs, so runs never overlap and a request that
arrives during a run is folded into exactly one more run right after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from ..commands.once import notify_published, run_sync, summarise
from ..commands.progress import report_progress
from ..commands.report import DAEMON_ADDRESS, status_url
from ..core.config import Config, load_config
from ..core.errors import EumirrorError, ExitCode, LockHeld, StorageError
from ..core.progress import Progress
from ..engine.gcpause import release_frozen
from ..engine.scrub import Scrub, lower_priority
from ..engine.sync import RunReport
from ..log import log
from ..storage.base import work_area
from ..storage.fs import Mirror
from . import sdnotify
from .endpoint import make_app
from .hooks import HookRunner, jobs_for
from .notify import COUNTERS as NOTIFY_COUNTERS
from .serve import ContentServer, HttpCounters
from .status import StateCache, iso, status_document


class Daemon:
    def __init__(self, config: Config, config_file: Path) -> None:
        self.config = config
        self.config_file = config_file
        self.mirror = work_area(config)
        self.wanted = asyncio.Event()
        self.stopping = asyncio.Event()
        self.running: asyncio.Task[Any] | None = None
        self.scheduler = AsyncIOScheduler()
        self.runner: web.AppRunner | None = None
        self.listen = ""
        self.runs = 0
        self.last_result = "no sync yet"
        self.address_file = self.mirror.work / DAEMON_ADDRESS
        self.state_cache = StateCache(self.mirror)
        self.progress: Progress | None = None
        """The running sync's counters, for /status and the page; None between syncs."""
        self.http_counters = HttpCounters()
        self.content: ContentServer | None = None
        self.pushes: set[asyncio.Task[None]] = set()
        self.hooks = HookRunner(self.mirror)
        self.scrub = Scrub()
        self.scrubbing: asyncio.Future[Any] | None = None
        self.scrub_thread = ThreadPoolExecutor(1, "eumirror-verify", initializer=lower_priority)
        """Scheduled verification's own thread: its lowered priority touches nothing else."""

    # -- what /status and /metrics show -----------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        job = self.scheduler.get_job("sync") if self.scheduler.running else None
        next_run = job.next_run_time.timestamp() if job and job.next_run_time else None
        progress = self.progress
        return status_document(
            self.config,
            self.mirror,
            cache=self.state_cache,
            daemon={
                "pid": os.getpid(),
                "listen": self.listen,
                "in_progress": self.running is not None,
                "progress": progress.snapshot(time.monotonic()) if progress else None,
                "runs_since_start": self.runs,
                "pending": self.wanted.is_set(),
                "next_run": iso(next_run),
            },
        )

    # -- requests ---------------------------------------------------------------------------
    def request(self, why: str) -> None:
        if self.running is not None and not self.wanted.is_set():
            log.info("sync_queued", reason=why)
        self.wanted.set()

    async def tick(self) -> None:
        self.request("schedule")

    async def verify_tick(self) -> None:
        """Start a scheduled verification unless one still runs (it then simply goes on)."""
        if self.scrubbing is not None and not self.scrubbing.done():
            return
        loop = asyncio.get_running_loop()
        self.scrubbing = loop.run_in_executor(self.scrub_thread, self.scrub.run, self.config)
        self.scrubbing.add_done_callback(self._scrub_done)

    def _scrub_done(self, done: asyncio.Future[Any]) -> None:
        self.state_cache.invalidate()
        if not done.cancelled() and (exc := done.exception()) is not None:
            log.error("verify_scheduled_failed", error=str(exc))

    def stop(self, signum: int) -> None:
        log.info("stopping", signal=signal.Signals(signum).name)
        sdnotify.notify("STOPPING=1")
        self.stopping.set()
        if self.running is not None:
            self.running.cancel()

    def reload(self) -> None:
        try:
            new = load_config(self.config_file)
        except EumirrorError as exc:
            log.error("reload_failed", error=exc.line(), kept="previous configuration")
            return
        if (new.root, new.s3) != (self.config.root, self.config.s3):
            log.error(
                "reload_failed",
                error=f"mirror.root changed to {new.where}; that needs a restart",
                kept="previous configuration",
            )
            return
        if (new.status.host, new.status.port) != (self.config.status.host, self.config.status.port):
            log.warning("reload_listen_ignored", reason="the status address changes on restart")
        if new.serve != self.config.serve:
            log.warning("reload_serve_ignored", reason="[serve] changes on restart")
        if self.content is not None:
            self.content.reload_tls()
        self.config = new
        self.scheduler.reschedule_job("sync", trigger=trigger_for(new))
        self.schedule_verify()
        log.info("reloaded", config=str(self.config_file), upstreams=len(new.upstreams))

    def schedule_verify(self) -> None:
        """The verification job follows `[schedule] verify_interval` (none when absent)."""
        if self.scheduler.get_job("verify") is not None:
            self.scheduler.remove_job("verify")
        interval = self.config.schedule.verify_interval
        if not interval:
            return
        first = verify_start(self.config, self.mirror, time.time())
        self.scheduler.add_job(
            self.verify_tick,
            IntervalTrigger(seconds=interval),
            id="verify",
            next_run_time=datetime.fromtimestamp(first, UTC),
            max_instances=1,
            coalesce=True,
        )

    # -- lifecycle --------------------------------------------------------------------------
    async def start_status(self) -> None:
        app = make_app(
            self.snapshot,
            collectors=(self.http_counters, NOTIFY_COUNTERS),
            request_sync=self.request,
            trigger_token_file=self.config.status.trigger_token_file,
        )
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.config.status.host, self.config.status.port)
        try:
            await site.start()
        except OSError as exc:
            await self.runner.cleanup()
            raise EumirrorError(
                f"cannot listen on {self.config.status.host}:{self.config.status.port}: "
                f"{exc.strerror}",
                hint="change [status] listen or stop what uses the port",
            ) from None
        addresses = self.runner.addresses
        host, port = addresses[0][0], addresses[0][1]
        self.listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        url = status_url(host, port)
        log.info("status_listening", listen=self.listen, url=url, page=url.removesuffix("status"))
        self.record_listen()
        if not is_loopback(self.config.status.host):
            log.warning(
                "status_not_loopback",
                listen=self.listen,
                hint="anyone who reaches this address can read /status and /metrics",
            )

    async def start_content(self) -> None:
        """The content server of `[serve]`, beside the status endpoint (service/serve.py)."""
        if self.config.serve is not None:
            self.content = ContentServer(self.config.root, self.config.serve, self.http_counters)
            await self.content.start()

    def push(self, report: RunReport) -> None:
        """Notify downstreams in the background: a slow one never delays the next sync."""
        task = asyncio.create_task(notify_published(self.config, report))
        self.pushes.add(task)
        task.add_done_callback(self.pushes.discard)

    def record_listen(self) -> None:
        """Tell `eumirror status` where we listen (the real port, also when configured as 0)."""
        doc = {"pid": os.getpid(), "listen": self.listen}
        try:
            self.mirror.write_atomic(self.address_file, json.dumps(doc).encode(), mode=0o600)
        except StorageError as exc:
            log.warning("address_not_recorded", error=exc.line())

    def forget_listen(self) -> None:
        with contextlib.suppress(OSError):
            self.address_file.unlink()

    async def watchdog(self, period: float) -> None:
        while True:
            sdnotify.notify("WATCHDOG=1")
            await asyncio.sleep(period / 2)

    async def run_once(self) -> None:
        self.scrub.pause.set()  # a scheduled verification lets go within one chunk
        try:
            await self._take_gate()
            try:
                await self._run_once()
            finally:
                self.scrub.gate.release()
        finally:
            self.scrub.pause.clear()

    async def _take_gate(self) -> None:
        """Wait (off the loop) for the scrub to let go of its file; a cancelled wait still
        releases the gate once the thread gets it."""
        gate = self.scrub.gate
        taken = asyncio.get_running_loop().run_in_executor(None, gate.acquire)
        try:
            await asyncio.shield(taken)
        except asyncio.CancelledError:
            taken.add_done_callback(lambda f: _release_if_taken(f, gate))
            raise

    async def _run_once(self) -> None:
        try:
            fd = self.mirror.acquire_lock()
        except LockHeld as exc:
            log.warning("sync_skipped", reason=exc.message)
            return
        began = time.monotonic()
        try:
            log.info("sync_started", root=self.config.where)
            self.progress = Progress()
            async with report_progress(self.progress, None, self.config.status.progress_interval):
                report = await run_sync(self.config, self.mirror, progress=self.progress)
        finally:
            self.progress = None
            self.state_cache.invalidate()
            self.mirror.release_lock(fd)
        self.hooks.start(jobs_for(self.config, report.upstreams))
        self.runs += 1
        ok = sum(1 for u in report.upstreams if u.result == "success")
        self.last_result = (
            f"last sync {time.strftime('%H:%M:%S')}: {ok}/{len(report.upstreams)} upstreams ok"
        )
        log.info(
            "sync_done",
            result=report.result,
            duration=round(time.monotonic() - began, 3),
            upstreams=len(report.upstreams),
        )
        summarise(report, self.mirror)
        self.push(report)
        release_frozen()
        sdnotify.notify(f"STATUS={self.last_result}")

    async def serve(self) -> int:
        loop = asyncio.get_running_loop()
        # The job exists before a SIGHUP can reschedule it.
        self.scheduler.add_job(
            self.tick, trigger_for(self.config), id="sync", max_instances=1, coalesce=True
        )
        self.schedule_verify()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop, signum)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        loop.add_signal_handler(signal.SIGUSR1, self.request, "SIGUSR1")
        try:
            await self.start_status()
            try:
                await self.start_content()
            except BaseException:
                assert self.runner is not None
                await self.runner.cleanup()
                raise
        except BaseException:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
                loop.remove_signal_handler(signum)
            raise
        self.scheduler.start()
        watchdog = None
        if (period := sdnotify.watchdog_period()) is not None:
            watchdog = asyncio.create_task(self.watchdog(period))
        sdnotify.notify(f"READY=1\nSTATUS=listening on {self.listen}")
        self.wanted.set()
        try:
            while not self.stopping.is_set():
                waiter = asyncio.create_task(self.wanted.wait())
                stopper = asyncio.create_task(self.stopping.wait())
                await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                stopper.cancel()
                if self.stopping.is_set():
                    break
                self.wanted.clear()
                self.running = asyncio.create_task(self.run_once())
                try:
                    await self.running
                except asyncio.CancelledError:
                    if not self.stopping.is_set():
                        raise
                except EumirrorError as exc:
                    log.error("sync_failed", error=exc.line())
                except Exception:
                    # A bug in one run must not take the mirror's status and schedule down.
                    log.exception("sync_crashed")
                finally:
                    self.running = None
        finally:
            await self.hooks.stop()
            self.scheduler.shutdown(wait=False)
            self.scrub.stop.set()
            self.scrub_thread.shutdown(wait=False, cancel_futures=True)
            if watchdog is not None:
                watchdog.cancel()
            for task in list(self.pushes):
                task.cancel()
            if self.content is not None:
                await self.content.stop()
            if self.runner is not None:
                self.forget_listen()
                await self.runner.cleanup()
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
                loop.remove_signal_handler(signum)
                # Removing a handler restores the default action, which for these three is to
                # die: a second SIGTERM (or a late SIGHUP) must not turn a clean exit into one.
                if signum != signal.SIGINT:
                    signal.signal(signum, signal.SIG_IGN)
        log.info("stopped")
        return int(ExitCode.OK)


def _release_if_taken(taken: asyncio.Future[bool], gate: threading.Lock) -> None:
    if not taken.cancelled() and taken.exception() is None and taken.result():
        gate.release()


def verify_start(config: Config, mirror: Mirror, now: float) -> float:
    """When the first scheduled verification is due: an interval after the oldest one
    recorded (a restarted daemon keeps the rhythm), at once if that is past."""
    interval = config.schedule.verify_interval or 0.0
    stamps = []
    for up in config.upstreams:
        last = (mirror.load_state(up.name, "meta") or {}).get("last_verify")
        stamps.append(float(last) if isinstance(last, int | float) else now)
    return max(now, min(stamps, default=now) + interval)


def trigger_for(config: Config) -> IntervalTrigger | CronTrigger:
    schedule = config.schedule
    jitter = int(schedule.jitter) or None
    if schedule.cron:
        trigger = CronTrigger.from_crontab(schedule.cron)
        trigger.jitter = jitter
        return trigger
    return IntervalTrigger(seconds=schedule.interval or 6 * 3600.0, jitter=jitter)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def run_daemon(config: Config, config_file: Path) -> int:
    daemon = Daemon(config, config_file)
    await asyncio.to_thread(daemon.mirror.prepare)
    fd = daemon.mirror.acquire_lock(
        daemon.mirror.work / "daemon.lock",
        held=f"another eumirror daemon (pid {{pid}}) serves {config.where}",
        hint="stop it first (systemctl stop eumirror)",
    )
    try:
        return await daemon.serve()
    finally:
        daemon.mirror.release_lock(fd)
