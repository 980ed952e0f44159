"""`on_publish` hooks: a program the operator names, run after each new generation.

Two halves. `prepare_hook` runs inside the sync, under the mirror's lock, right after a changed
catalog was published: it writes the added/removed name lists under `.eumirror/hooks/` and
returns the hook's environment (recorded in the upstream's report). `HookRunner` runs the hooks
once the lock is released, so a hook may call `eumirror` itself: one at a time per upstream, its
output into the log line by line, killed (its whole process group) after `hook_timeout` or when
eumirror is told to stop. A failing hook is logged and counted, never undoes the publish and never
changes the exit code.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..core.config import Config, Upstream
from ..log import log
from ..storage.fs import Mirror

GRACE = 5.0
"""Seconds between SIGTERM and SIGKILL to a hook's process group."""
DRAIN = 5.0
"""Seconds to finish reading a hook's output after it exited (a child may keep the pipe)."""
HOOKS = "hooks"
"""The folder under `.eumirror/` that holds the name lists."""


def names_of(published: Iterable[list[str]]) -> set[str]:
    """The image names a catalog points to, from its [url, dest] pairs (dest images/NAME/file)."""
    out = set()
    for pair in published:
        parts = pair[1].split("/") if len(pair) > 1 and pair[1] else ()
        if len(parts) == 3:
            out.add(parts[1])
    return out


def prepare_hook(
    mirror: Mirror,
    upstream: str,
    generation: int,
    before: set[str],
    after: set[str],
    *,
    root: str,
    catalog: str,
) -> dict[str, str]:
    """Write this generation's added/removed lists; the hook's environment (its own keys)."""
    folder = mirror.work / HOOKS
    added = folder / f"{upstream}.{generation}.added"
    removed = folder / f"{upstream}.{generation}.removed"
    mirror.write_atomic(added, _lines(after - before), mode=0o600, durable=False)
    mirror.write_atomic(removed, _lines(before - after), mode=0o600, durable=False)
    return {
        "EUMIRROR_UPSTREAM": upstream,
        "EUMIRROR_ROOT": root,
        "EUMIRROR_CATALOG": catalog,
        "EUMIRROR_GENERATION": str(generation),
        "EUMIRROR_ADDED": str(added),
        "EUMIRROR_REMOVED": str(removed),
    }


def _lines(names: set[str]) -> bytes:
    return "".join(f"{name}\n" for name in sorted(names)).encode("ascii")


@dataclass(frozen=True)
class HookJob:
    upstream: str
    argv: tuple[str, ...]
    timeout: float
    env: Mapping[str, str]


def jobs_for(config: Config, reports: Iterable[Any]) -> list[HookJob]:
    """The hooks a finished sync calls for: upstreams that published a new generation."""
    by_name: dict[str, Upstream] = {u.name: u for u in config.upstreams}
    jobs = []
    for report in reports:
        env = getattr(report, "hook_env", None)
        up = by_name.get(report.name)
        if env and up is not None and up.on_publish:
            jobs.append(HookJob(up.name, up.on_publish, up.hook_timeout, env))
    return jobs


class HookRunner:
    """Runs hooks in tasks, one at a time per upstream; `stop` ends them (TERM, then KILL)."""

    def __init__(self, mirror: Mirror) -> None:
        self.mirror = mirror
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, jobs: Iterable[HookJob]) -> list[asyncio.Task[None]]:
        started = []
        for job in jobs:
            task = asyncio.create_task(self._queued(job))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            started.append(task)
        return started

    async def run(self, jobs: Iterable[HookJob]) -> None:
        """Start these hooks and wait for them (what `sync --once` does before exiting)."""
        tasks = self.start(jobs)
        if tasks:
            await asyncio.gather(*tasks)

    async def stop(self) -> None:
        """Cancel every hook: each gets SIGTERM, and SIGKILL after GRACE seconds."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _queued(self, job: HookJob) -> None:
        lock = self._locks.setdefault(job.upstream, asyncio.Lock())
        try:
            async with lock:
                ok = await run_hook(job)
            if not ok:
                await asyncio.to_thread(self._count_failure, job.upstream)
        finally:
            _forget_lists(job.env)  # two unlinks, also when stopped: no leftovers under hooks/

    def _count_failure(self, upstream: str) -> None:
        """A state part of its own: written outside the lock, it never races a sync's meta."""
        doc = self.mirror.load_state(upstream, HOOKS) or {}
        doc["failures"] = int(doc.get("failures", 0)) + 1
        try:
            self.mirror.save_state(upstream, HOOKS, doc)
        except Exception as exc:  # a counter must not turn a logged failure into a crash
            log.warning("hook_failure_not_counted", upstream=upstream, error=str(exc))


def _forget_lists(env: Mapping[str, str]) -> None:
    for key in ("EUMIRROR_ADDED", "EUMIRROR_REMOVED"):
        with contextlib.suppress(OSError, KeyError):
            os.unlink(env[key])


async def run_hook(job: HookJob) -> bool:
    """Run one hook to its end; True when it exited 0 within its timeout."""
    bound = log.bind(upstream=job.upstream, generation=job.env.get("EUMIRROR_GENERATION"))
    began = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            *job.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **job.env},
            start_new_session=True,  # its own process group: a stop or timeout reaches all of it
        )
    except OSError as exc:
        bound.error(
            "hook_failed",
            hook=job.argv[0],
            error=f"cannot start {job.argv[0]}: {exc.strerror or exc}",
            hint="check [[upstream]] on_publish: an executable path",
        )
        return False
    bound.info("hook_started", hook=job.argv[0], pid=proc.pid)
    assert proc.stdout is not None and proc.stderr is not None
    readers = [
        asyncio.create_task(_forward(proc.stdout, bound, job.argv[0], "stdout")),
        asyncio.create_task(_forward(proc.stderr, bound, job.argv[0], "stderr")),
    ]
    timed_out = False
    try:
        try:
            async with asyncio.timeout(job.timeout):
                await proc.wait()
        except TimeoutError:
            timed_out = True
            await _end(proc)
        await _drain(readers)
    except asyncio.CancelledError:
        bound.warning("hook_stopped", hook=job.argv[0], pid=proc.pid)
        await _end(proc)
        await _drain(readers)
        raise
    duration = round(time.monotonic() - began, 3)
    if timed_out:
        bound.error(
            "hook_failed",
            hook=job.argv[0],
            error=f"{job.argv[0]} ran longer than hook_timeout ({job.timeout:g}s); killed",
            duration=duration,
        )
        return False
    if proc.returncode != 0:
        status = proc.returncode or 0
        how = f"killed by signal {-status}" if status < 0 else f"exit status {status}"
        bound.error(
            "hook_failed", hook=job.argv[0], error=f"{job.argv[0]}: {how}", duration=duration
        )
        return False
    bound.info("hook_done", hook=job.argv[0], duration=duration)
    return True


async def _forward(stream: asyncio.StreamReader, bound: Any, hook: str, name: str) -> None:
    """Each line of the hook's output becomes one log event."""
    while True:
        try:
            line = await stream.readline()
        except ValueError:  # a line longer than the reader's limit: take what is there
            line = await stream.read(1 << 16)
        if not line:
            return
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        bound.info("hook_output", hook=hook, stream=name, line=text)


async def _drain(readers: list[asyncio.Task[None]]) -> None:
    """Finish reading; a grandchild that keeps the pipe open does not hold us past DRAIN."""
    _, pending = await asyncio.wait(readers, timeout=DRAIN)
    for task in pending:
        task.cancel()
    await asyncio.gather(*readers, return_exceptions=True)


async def _end(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM to the hook's process group; SIGKILL after GRACE seconds if it is still there."""
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        async with asyncio.timeout(GRACE):
            await proc.wait()
    except TimeoutError:
        pass
    # The group may outlive its leader: KILL whatever of it is left either way.
    _signal_group(proc.pid, signal.SIGKILL)
    await proc.wait()


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)
