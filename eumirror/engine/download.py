"""One tarball download in progress: a partial file under .eumirror/partial, hashed as written.

md5 and the write run in worker threads, one job each per ~1 MiB batch, a batch's md5 beside the
previous batch's write, so the event loop keeps reading the socket while the cores hash and the
disk writes; the bytes go to disk past the page cache (directio). The partial survives an
interruption for resuming; bytes that fail verification are deleted.

Ownership: at most one worker job touches the file at a time, and every job checks, under the
file's lock, that it was not closed meanwhile; a cancelled download never closes the file under a
running job, it closes it when the last job returns (`close_when_idle`). Bytes are charged to the
run's space budget as they are accepted and given back when the file is discarded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ..core.errors import StorageError, VerifyError, too_large
from ..core.names import CHUNK, NameHasher
from ..net.fetch import Validators
from ..storage.fs import FileDigest, start_writeback, storage_error
from ..tuning import PER_FILE_FLUSH
from .budget import SpaceBudget
from .directio import DiskWriter
from .workers import in_worker, submit

WRITEBACK_STEP = 8 << 20
"""Start writing a download to disk every this many bytes (see store.start_writeback)."""
HASH_STEP = 8 << 20
"""A split download's segments are read back and hashed this much per worker job."""
RESUME_WORTHY = 8 << 20
"""Downloads at least this large record their validators at once, so even a SIGKILL resumes."""


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


T = TypeVar("T")
_UMASK = _umask()
"""Read once at import: files are created 0644 and only chmod-ed when the umask strips that."""


class PartialFile:
    """A download's bytes on their way to verification; created by its first write.

    Small tarballs are the common case in a big catalog, so a new download costs one worker
    job: the final batch (for them, the whole body) is held by write_last() and written by
    finish() in the same job that verifies and closes it, after the transfer slot is free.
    """

    def __init__(
        self,
        path: Path,
        budget: SpaceBudget,
        *,
        exists: bool = True,
        max_bytes: int = 64 << 30,
        on_length: Callable[[int], None] | None = None,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._on_length = on_length
        """Told the bytes a response announces, once per download (progress: bytes planned)."""
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
        self._charged = 0
        """Bytes charged to the budget for this file (given back if it is discarded)."""
        self._job: asyncio.Future[Any] | None = None
        """The sealing job in flight, if any: it owns the file until it returns."""
        self._rfd = -1
        """A second, buffered descriptor while the download is split: segments are written
        at their offsets through it and read back through it to be hashed."""
        self._segment_lock = threading.Lock()

    @property
    def meta_path(self) -> Path:
        """The resume validators beside the partial (built when needed: most downloads never
        keep any, and each path costs the event loop)."""
        return self.path.with_suffix(".json")

    async def open(self) -> Validators:
        """Reopen a kept partial, re-hashing its prefix so it can be resumed.

        One that does not exist costs nothing here: its first write creates it.
        """
        if not self._exists:
            return Validators()
        return await in_worker(self._open)

    def _open(self) -> Validators:
        with self._storing_lock:
            return self._open_locked()

    def _open_locked(self) -> Validators:
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            os.fchmod(self._fd, 0o644)
            while chunk := os.read(self._fd, CHUNK):
                self._hasher.update(chunk)
        except OSError as exc:
            raise storage_error(exc, self.path, "opening the partial download") from None
        self.offset = self._stored = self._charged = self._hasher.size
        self._disk = DiskWriter(self._fd, self.offset)
        if not self.offset:
            return Validators()
        try:
            meta = json.loads(self.meta_path.read_bytes())
            self._meta_exists = True
            if meta.get("split"):  # killed while split: holes past an unknown prefix
                self._truncate_locked()
                self._charged = 0
                return Validators()
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
        """Refuse before downloading what cannot fit; remember validators for a later resume.

        Nothing is charged here: bytes are charged as they arrive (`_accept`)."""
        if self.offset + remaining > self.max_bytes:
            raise too_large(self.offset + remaining, self.max_bytes)
        self._budget.check(remaining)
        self._validators = validators
        if self._on_length is not None and remaining > 0:
            self._on_length(remaining)
            self._on_length = None
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

    def _write_meta(self, *, split: bool = False) -> None:
        """The validators to resume with. `split`: the file may have holes past its hashed
        prefix (a kill while split leaves no way to tell): a later run starts it over."""
        if self._validators is None:
            return
        doc: dict[str, Any] = {
            "etag": self._validators.etag,
            "last_modified": self._validators.last_modified,
        }
        if split:
            doc["split"] = True
        with contextlib.suppress(OSError):
            self.meta_path.write_text(json.dumps(doc))
            self._meta_exists = True

    def _accept(self, chunks: list[bytes]) -> int:
        """Charge arriving bytes to the budget and the per-download cap, before any is kept."""
        size = sum(map(len, chunks))
        if self.offset + size > self.max_bytes:
            raise too_large(self.offset + size, self.max_bytes)
        self._budget.take(size)
        self._charged += size
        return size

    def _accept_segment(self, chunks: list[bytes]) -> int:
        size = sum(map(len, chunks))
        self._budget.take(size)
        self._charged += size
        return size

    async def write_batch(self, chunks: list[bytes]) -> None:
        """Hash this batch while the previous one is still being written: the disk's latency
        (O_DIRECT writes wait for the device) overlaps the next batch's md5."""
        self._accept(chunks)
        chunks = self._take_held() + chunks
        hashing = submit(self._hash, chunks)
        try:
            await self.drain()
            self._storing = submit(self._store, chunks)
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
        size = self._accept(chunks)
        self._held += chunks
        self.offset += size

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
            await in_worker(self._truncate)
        self._budget.give_back(self._charged)
        self._charged = 0

    def _truncate(self) -> None:
        with self._storing_lock:
            if self._closed:
                return
            self._truncate_locked()

    def _truncate_locked(self) -> None:
        if self._fd < 0:
            self._hasher = NameHasher()
            self.offset = self._stored = 0
            return
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        if self._disk is not None:
            self._disk.reset()
        self._hasher = NameHasher()
        self.offset = self._stored = 0
        self._flushed = 0

    def current_name(self) -> str:
        return self._hasher.name()

    # -- one download over several connections --------------------------------------------------
    async def split(self, bounds: list[tuple[int, int]]) -> list[FileSegment]:
        """Segments for the ranges after the first; the file exists before any is written."""
        await in_worker(self._open_segments)
        return [FileSegment(self, start, end) for start, end in bounds]

    def _open_segments(self) -> None:
        with self._storing_lock, self._segment_lock:
            if self._closed:
                raise StorageError(f"{self.path}: closed before it was split")
            if self._fd < 0:
                self._create()
            try:
                self._rfd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
            except OSError as exc:
                raise storage_error(exc, self.path, "opening the partial download") from None
            self._meta_due = False
            self._write_meta(split=True)

    def _pwrite(self, chunks: list[bytes], offset: int) -> None:
        with self._segment_lock:
            if self._rfd < 0:
                raise StorageError(f"{self.path}: closed while a segment was written")
            try:
                for chunk in chunks:
                    view = memoryview(chunk)
                    while view:
                        done = os.pwrite(self._rfd, view, offset)
                        offset += done
                        view = view[done:]
            except OSError as exc:
                raise storage_error(exc, self.path, "writing") from None

    async def hash_segments(self, segments: list[FileSegment]) -> None:
        """Hash each segment in order from what it wrote, as soon as the bytes before it are
        hashed: every byte once, in order, just after it was written."""
        for segment in segments:
            while self._hasher.size < segment.end:
                if segment.offset <= self._hasher.size:
                    segment.changed.clear()
                    if segment.offset <= self._hasher.size:
                        await segment.changed.wait()
                    continue
                upto = min(segment.offset, self._hasher.size + HASH_STEP)
                await in_worker(self._hash_written, self._hasher.size, upto)
            self.offset = self._hasher.size

    def _hash_written(self, start: int, end: int) -> None:
        with self._segment_lock:
            if self._rfd < 0:
                raise StorageError(f"{self.path}: closed while it was hashed")
            try:
                position = start
                while position < end:
                    chunk = os.pread(self._rfd, min(CHUNK, end - position), position)
                    if not chunk:
                        raise StorageError(f"{self.path}: shorter than what was written")
                    self._hasher.update(chunk)
                    position += len(chunk)
            except OSError as exc:
                raise storage_error(exc, self.path, "reading back") from None
            start_writeback(self._rfd, start, end - start)

    async def unsplit(self) -> None:
        """Keep the hashed prefix only (the rest may have holes) and go on from it with one
        connection: a retry, or a later run, resumes from there."""
        with contextlib.suppress(StorageError):
            await self.drain()
        await in_worker(self._unsplit)

    def _unsplit(self) -> None:
        with self._storing_lock, self._segment_lock:
            if self._rfd >= 0:
                os.close(self._rfd)
                self._rfd = -1
            if self._closed or self._fd < 0:
                return
            size = self._hasher.size
            try:
                if self._disk is not None:
                    self._disk.flush()
                    self._disk.release()
                os.ftruncate(self._fd, size)
                os.lseek(self._fd, size, os.SEEK_SET)
            except OSError as exc:
                raise storage_error(exc, self.path, "cutting back") from None
            self._disk = DiskWriter(self._fd, size)
            self.offset = self._stored = self._flushed = size
            self._write_meta()  # the prefix is whole again: resumable

    def finish(self, expected_name: str) -> FileDigest:
        """Write what is held, verify the name, close.

        Blocking: run it in a worker thread, after drain(). On an error the file is closed and
        the caller, on the event loop, discards it. The caller flushes, in a batch.
        """
        if self._storing is not None:
            raise RuntimeError(f"{self.path}: finish() while a batch may still be written")
        try:
            self._write(self._take_held())
            self._write_tail()
        except StorageError:
            self.close()
            raise
        digest = FileDigest(self._hasher.name(), self._hasher.size, self._hasher.md5_hex())
        if digest.name != expected_name:
            self.close()
            raise VerifyError(
                f"downloaded bytes have name {digest.name}, the catalog says "
                f"{expected_name} ({digest.size} bytes)",
                hint="the upstream serves other bytes than its catalog names; "
                "report it to the publisher",
            )
        with self._storing_lock:
            if self._closed:
                raise StorageError(f"{self.path}: closed while it was being verified")
            if PER_FILE_FLUSH:
                os.fdatasync(self._fd)
            elif digest.size > self._flushed:
                start_writeback(self._fd, self._flushed, digest.size - self._flushed)
        self.close()
        return digest

    async def seal(self, expected_name: str, then: Callable[[], T]) -> tuple[FileDigest, T]:
        """finish() and then `then()` in one worker job (for a small tarball, all the disk work
        it costs). The job owns the file: if the caller is cancelled meanwhile, the job still
        runs to its end and the file is closed by it or after it (`close_when_idle`)."""

        def job() -> tuple[FileDigest, T]:
            digest = self.finish(expected_name)
            return digest, then()

        running = submit(job)
        self._job = running
        result = await asyncio.shield(running)
        self._job = None
        return result

    def _write_tail(self) -> None:
        with self._storing_lock:
            if self._closed:
                raise StorageError(f"{self.path}: closed while it was being written")
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
        with self._segment_lock:
            if self._rfd >= 0:
                os.close(self._rfd)
                self._rfd = -1
        if self._disk is not None:
            with contextlib.suppress(OSError):
                self._disk.flush()
            self._disk.release()
            self._disk = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def close_when_idle(self) -> None:
        """The download was cancelled: close now if no worker job holds the file, else as soon
        as the last one returns (never under it). Safe to call from a cancelled task."""
        busy = [f for f in (self._job, self._storing) if f is not None and not f.done()]
        if not busy:
            self.close()
            return
        remaining = len(busy)

        def done(future: asyncio.Future[Any]) -> None:
            nonlocal remaining
            _quiet(future)
            remaining -= 1
            if remaining == 0:
                self.close()

        for future in busy:
            future.add_done_callback(done)

    def discard(self) -> None:
        self._held = []
        self.close()
        self._budget.give_back(self._charged)
        self._charged = 0
        for path in (self.path, self.meta_path):
            with contextlib.suppress(OSError):
                path.unlink()


class FileSegment:
    """One range of a split download, written through the partial's buffered descriptor;
    charged to the budget as it arrives, like the first range."""

    def __init__(self, partial: PartialFile, start: int, end: int) -> None:
        self.partial = partial
        self.offset = start
        self.end = end
        self.changed = asyncio.Event()

    async def write(self, chunks: list[bytes]) -> None:
        size = self.partial._accept_segment(chunks)
        await in_worker(self.partial._pwrite, chunks, self.offset)
        self.offset += size
        self.changed.set()


def _quiet(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()
