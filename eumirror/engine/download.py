"""One tarball download in progress: a partial file under .eumirror/partial, hashed as written.

md5 and the write run in worker threads, one job each per ~1 MiB batch, a batch's md5 beside the
previous batch's write, so the event loop keeps reading the socket while the cores hash and the
disk writes; the bytes go to disk past the page cache (directio). The partial survives an
interruption for resuming; bytes that fail verification are deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
from pathlib import Path

from ..core.errors import StorageError, VerifyError
from ..core.names import CHUNK, NameHasher
from ..net.fetch import Validators
from ..storage.fs import FileDigest, start_writeback, storage_error
from .directio import DiskWriter
from .workers import in_worker

WRITEBACK_STEP = 8 << 20
"""Start writing a download to disk every this many bytes (see store.start_writeback)."""
RESUME_WORTHY = 8 << 20
"""Downloads at least this large record their validators at once, so even a SIGKILL resumes."""


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _umask()
"""Read once at import: files are created 0644 and only chmod-ed when the umask strips that."""


class SpaceBudget:
    """Free space measured once per run, shared by every download admitted since."""

    def __init__(self, free: int, reserve: int) -> None:
        self.free = free
        self.reserve = reserve
        self.taken = 0

    def take(self, size: int, what: str) -> None:
        have = self.free - self.taken
        if size > 0 and size + self.reserve > have:
            raise StorageError(
                f"not enough space for {what}: need {size + self.reserve} bytes "
                f"({size} plus the reserve of {self.reserve}), have {have}",
                hint="free space on the mirror's filesystem or lower [limits] free_space_reserve",
            )
        self.taken += max(size, 0)


class PartialFile:
    """A download's bytes on their way to verification; created by its first write.

    Small tarballs are the common case in a big catalog, so a new download costs one worker
    job: the final batch (for them, the whole body) is held by write_last() and written by
    finish() in the same job that verifies and closes it, after the transfer slot is free.
    """

    def __init__(self, path: Path, budget: SpaceBudget, *, exists: bool = True) -> None:
        self.path = path
        self.meta_path = path.with_suffix(".json")
        self.offset = 0
        """Bytes accepted: hashed and written, or held for finish()."""
        self._exists = exists
        self._hasher = NameHasher()
        self._fd = -1
        self._budget = budget
        self._validators: Validators | None = None
        self._meta_due = False
        self._meta_exists = False
        self._flushed = 0
        self._disk: DiskWriter | None = None
        self._held: list[bytes] = []
        self._storing: asyncio.Future[None] | None = None
        self._storing_lock = threading.Lock()
        self._stored = 0
        self._closed = False

    async def open(self) -> Validators:
        """Reopen a kept partial, re-hashing its prefix so it can be resumed.

        One that does not exist costs nothing here: its first write creates it.
        """
        if not self._exists:
            return Validators()
        return await in_worker(self._open)

    def _open(self) -> Validators:
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            os.fchmod(self._fd, 0o644)
            while chunk := os.read(self._fd, CHUNK):
                self._hasher.update(chunk)
        except OSError as exc:
            raise storage_error(exc, self.path, "opening the partial download") from None
        self.offset = self._stored = self._hasher.size
        self._disk = DiskWriter(self._fd, self.offset)
        if not self.offset:
            return Validators()
        try:
            meta = json.loads(self.meta_path.read_bytes())
            self._meta_exists = True
            return Validators(meta.get("etag"), meta.get("last_modified"))
        except (OSError, ValueError, AttributeError):
            return Validators()

    def _create(self) -> None:
        try:
            self._disk = DiskWriter.create(self.path, 0o644)
            self._fd = self._disk.fd
            if _UMASK & 0o644:
                os.fchmod(self._fd, 0o644)
        except OSError as exc:
            raise storage_error(exc, self.path, "creating the partial download") from None

    def expect(self, remaining: int, validators: Validators) -> None:
        """Refuse before downloading what cannot fit; remember validators for a later resume."""
        self._budget.take(remaining, self.path.name)
        self._validators = validators
        self._meta_due = remaining >= RESUME_WORTHY

    async def keep_for_resume(self) -> None:
        """An interrupted download: write what arrived, close, and leave what a later run needs
        to resume it."""
        try:
            with contextlib.suppress(StorageError):
                await self.drain()
                held = self._take_held()
                if held:
                    await in_worker(self._write, held)
        finally:
            self.close()
        if self.offset and not self._meta_exists:
            self._write_meta()

    def _write_meta(self) -> None:
        if self._validators is None:
            return
        doc = {"etag": self._validators.etag, "last_modified": self._validators.last_modified}
        with contextlib.suppress(OSError):
            self.meta_path.write_text(json.dumps(doc))
            self._meta_exists = True

    async def write_batch(self, chunks: list[bytes]) -> None:
        """Hash this batch while the previous one is still being written: the disk's latency
        (O_DIRECT writes wait for the device) overlaps the next batch's md5."""
        chunks = self._take_held() + chunks
        hashing = asyncio.ensure_future(in_worker(self._hash, chunks))
        try:
            await self.drain()
            self._storing = asyncio.ensure_future(in_worker(self._store, chunks))
        finally:
            await asyncio.wait([hashing])
        hashing.result()
        self.offset = self._hasher.size

    async def drain(self) -> None:
        """Wait for the batch being written; its storage error is raised here."""
        storing = self._storing
        if storing is not None:
            await asyncio.wait([storing])
            self._storing = None
            storing.result()

    async def write_last(self, chunks: list[bytes]) -> None:
        """Hold the final batch for finish(); a retry's next write writes it first."""
        self._held += chunks
        self.offset += sum(map(len, chunks))

    def _take_held(self) -> list[bytes]:
        held, self._held = self._held, []
        return held

    def _write(self, chunks: list[bytes]) -> None:
        self._hash(chunks)
        self._store(chunks)
        self.offset = self._hasher.size

    def _hash(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self._hasher.update(chunk)

    def _store(self, chunks: list[bytes]) -> None:
        with self._storing_lock:
            if self._closed:
                return  # a failed download closed meanwhile: what is on disk is the prefix
            if self._fd < 0:
                self._create()
            assert self._disk is not None
            if self._meta_due:
                self._meta_due = False
                self._write_meta()
            try:
                for chunk in chunks:
                    self._disk.write(chunk)
                    self._stored += len(chunk)
            except OSError as exc:
                raise storage_error(exc, self.path, "writing") from None
            size = self._stored
            if self._disk.direct:
                self._flushed = size - self._disk.pending  # on disk already, nothing to write back
            elif size - self._flushed >= WRITEBACK_STEP:
                start_writeback(self._fd, self._flushed, size - self._flushed)
                self._flushed = size

    async def restart(self) -> None:
        await self.drain()
        self._held = []
        self.offset = self._hasher.size
        if self.offset:
            await asyncio.to_thread(self._truncate)

    def _truncate(self) -> None:
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        if self._disk is not None:
            self._disk.reset()
        self._hasher = NameHasher()
        self.offset = self._stored = 0
        self._flushed = 0

    def current_name(self) -> str:
        return self._hasher.name()

    def finish(self, expected_name: str) -> FileDigest:
        """Write what is held, verify the name (wrong bytes are deleted at once), close.

        Blocking: run it in a worker thread, after drain(). The caller flushes, in a batch.
        """
        if self._storing is not None:
            raise RuntimeError(f"{self.path}: finish() while a batch may still be written")
        try:
            self._write(self._take_held())
            self._write_tail()
        except StorageError:
            self.discard()
            raise
        digest = FileDigest(self._hasher.name(), self._hasher.size, self._hasher.md5_hex())
        if digest.name != expected_name:
            self.discard()
            raise VerifyError(
                f"downloaded bytes have name {digest.name}, the catalog says "
                f"{expected_name} ({digest.size} bytes)",
                hint="the upstream serves other bytes than its catalog names; "
                "report it to the publisher",
            )
        if digest.size > self._flushed:
            start_writeback(self._fd, self._flushed, digest.size - self._flushed)
        self.close()
        return digest

    def _write_tail(self) -> None:
        try:
            if self._disk is not None:
                self._disk.flush()
        except OSError as exc:
            raise storage_error(exc, self.path, "writing") from None

    def forget_meta(self) -> None:
        """Once published, the resume validators are of no use."""
        if self._meta_exists:
            with contextlib.suppress(OSError):
                self.meta_path.unlink()

    def close(self) -> None:
        """Close, with what was written on the file (a prefix to resume from). A batch being
        written is waited for; one not started yet finds the file closed and skips."""
        with self._storing_lock:
            self._closed = True
            self._close_fd()
        if self._storing is not None:
            self._storing.add_done_callback(_quiet)  # the download failed: that is reported
            self._storing = None

    def _close_fd(self) -> None:
        if self._disk is not None:
            with contextlib.suppress(OSError):
                self._disk.flush()
            self._disk.release()
            self._disk = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def discard(self) -> None:
        self._held = []
        self.close()
        for path in (self.path, self.meta_path):
            with contextlib.suppress(OSError):
                path.unlink()


def _quiet(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()
