"""Scheduled verification (a scrub): re-hash every tarball on disk, gently, between syncs.

One file at a time, in one dedicated thread whose CPU and I/O priority are lowered, dropping what
it read from the page cache. Each file is hashed holding the mirror's lock, and only while no
sync wants to run: the daemon sets `pause` (and takes `gate`) before a sync, the scrub lets go
within one chunk and takes the file up again afterwards. Damage is recorded exactly as
`eumirror verify` records it (quarantine, state, meta `damaged`), so the next sync repairs it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from ..core.config import Config
from ..core.errors import LockHeld, StorageError
from ..log import log
from ..storage.base import Storage, open_storage, work_area
from ..storage.fs import Cancelled, Mirror
from .inventory import record_damage

RETRY = 0.5
"""Seconds between two looks while paused or while another process holds the lock."""

T = TypeVar("T")
_IOPRIO_SET = {"x86_64": 251, "aarch64": 30, "i686": 289, "armv7l": 314}
_IOPRIO_IDLE = 3 << 13  # class IDLE: disk time only when nobody else wants it


def lower_priority() -> None:
    """This thread (Linux priorities are per thread) yields CPU and disk to everything else."""
    tid = threading.get_native_id()
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, tid, 19)
    number = _IOPRIO_SET.get(platform.machine())
    if number is None:
        return
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall(number, 1, tid, _IOPRIO_IDLE)  # IOPRIO_WHO_PROCESS, this thread


@dataclass
class Scrub:
    """What the daemon shares with its scrub thread."""

    pause: threading.Event = field(default_factory=threading.Event)
    """Set while a sync wants the mirror: the scrub waits."""
    stop: threading.Event = field(default_factory=threading.Event)
    gate: threading.Lock = field(default_factory=threading.Lock)
    """Held by the scrub while it hashes one file, and by the daemon for a whole sync."""

    def run(self, config: Config) -> tuple[int, int]:
        """Verify every tarball of every upstream once; (checked, damaged)."""
        mirror = work_area(config)
        storage = open_storage(config, mirror)
        try:
            return self._run(config, mirror, storage)
        finally:
            storage.close()

    def _run(self, config: Config, mirror: Mirror, storage: Storage) -> tuple[int, int]:
        began = time.monotonic()
        checked = damaged = 0
        log.info("verify_scheduled_started", upstreams=len(config.upstreams))
        for up in config.upstreams:
            for dest in list(storage.scan_unknown(up.name, {})):
                if self.stop.is_set():
                    return checked, damaged
                result = self._one(mirror, storage, up.name, dest)
                if result is None:
                    continue
                checked += 1
                damaged += 0 if result else 1
            if not self.stop.is_set():
                self._locked(mirror, functools.partial(_stamp, upstream=up.name))
        log.info(
            "verify_scheduled_done",
            checked=checked,
            damaged=damaged,
            duration=round(time.monotonic() - began, 3),
        )
        return checked, damaged

    def _one(self, mirror: Mirror, storage: Storage, upstream: str, dest: str) -> bool | None:
        """True if the file verified, False if damaged (recorded), None if it went away."""
        expected = dest.split("/")[1]

        def check(m: Mirror) -> bool | None:
            try:
                found = storage.rehash(upstream, dest, self, drop_cache=True)
            except (OSError, StorageError) as exc:
                error = exc.line() if isinstance(exc, StorageError) else str(exc)
                log.warning("verify_unreadable", upstream=upstream, path=dest, error=error)
                record_damage(m, storage, upstream, [dest], failures=1)
                return False
            if found is None:
                return None  # deleted or repaired meanwhile: nothing to judge
            digest = found[0]
            if digest.name == expected:
                return True
            log.warning("verify_damaged", upstream=upstream, path=dest, name=digest.name)
            record_damage(m, storage, upstream, [dest], failures=1)
            return False

        return self._locked(mirror, check)

    def is_set(self) -> bool:
        """`hash_file`'s cancellation flag: a sync wants the mirror, or the daemon stops."""
        return self.pause.is_set() or self.stop.is_set()

    def _locked(self, mirror: Mirror, work: Callable[[Mirror], T]) -> T | None:
        """Run `work` holding the gate and the mirror's lock, when no sync wants them; a file
        cut off by a sync is taken up again after it."""
        while not self.stop.is_set():
            if self.pause.is_set():
                log.info("verify_paused", reason="a sync runs")
                while self.pause.is_set() and not self.stop.wait(RETRY):
                    pass
                continue
            with self.gate:
                if self.pause.is_set():
                    continue
                try:
                    fd = mirror.acquire_lock()
                except LockHeld:
                    fd = -1
                if fd >= 0:
                    try:
                        return work(mirror)
                    except Cancelled:
                        continue
                    finally:
                        mirror.release_lock(fd)
            self.stop.wait(RETRY)  # another process (sync --once, verify) holds the lock
        return None


def _stamp(mirror: Mirror, upstream: str) -> None:
    meta = mirror.load_state(upstream, "meta")
    if meta is None:
        return
    meta["last_verify"] = time.time()
    mirror.save_state(upstream, "meta", meta)
