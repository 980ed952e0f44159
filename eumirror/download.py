"""One tarball download in progress: a partial file under .eumirror/partial, hashed as written.

md5 and the write run together in a worker thread, one job per ~1 MiB batch, so the event loop
keeps reading the socket while a core hashes. The partial survives an interruption for resuming;
bytes that fail verification are deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from pathlib import Path

from .directio import DiskWriter
from .errors import StorageError, VerifyError
from .fetch import Validators
from .names import CHUNK, NameHasher
from .store import FileDigest, start_writeback, storage_error

WRITEBACK_STEP = 8 << 20
"""Start writing a download to disk every this many bytes (see store.start_writeback)."""
RESUME_WORTHY = 8 << 20
"""Downloads at least this large record their validators at once, so even a SIGKILL resumes."""


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
    def __init__(self, path: Path, budget: SpaceBudget) -> None:
        self.path = path
        self.meta_path = path.with_suffix(".json")
        self.offset = 0
        self._hasher = NameHasher()
        self._fd = -1
        self._budget = budget
        self._validators: Validators | None = None
        self._meta_due = False
        self._meta_exists = False
        self._flushed = 0
        self._disk: DiskWriter | None = None

    async def open(self) -> Validators:
        """Open (or reopen) the partial; a kept prefix is re-hashed so it can be resumed."""
        return await asyncio.to_thread(self._open)

    def _open(self) -> Validators:
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            os.fchmod(self._fd, 0o644)
            while chunk := os.read(self._fd, CHUNK):
                self._hasher.update(chunk)
        except OSError as exc:
            raise storage_error(exc, self.path, "opening the partial download") from None
        self.offset = self._hasher.size
        self._disk = DiskWriter(self._fd, self.offset)
        if not self.offset:
            return Validators()
        try:
            meta = json.loads(self.meta_path.read_bytes())
            self._meta_exists = True
            return Validators(meta.get("etag"), meta.get("last_modified"))
        except (OSError, ValueError, AttributeError):
            return Validators()

    def expect(self, remaining: int, validators: Validators) -> None:
        """Refuse before downloading what cannot fit; remember validators for a later resume."""
        self._budget.take(remaining, self.path.name)
        self._validators = validators
        self._meta_due = remaining >= RESUME_WORTHY

    def keep_for_resume(self) -> None:
        """An interrupted download: close it and leave what a later run needs to resume it."""
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
        await asyncio.to_thread(self._write, chunks)

    def _write(self, chunks: list[bytes]) -> None:
        if self._meta_due:
            self._meta_due = False
            self._write_meta()
        try:
            assert self._disk is not None
            for chunk in chunks:
                self._hasher.update(chunk)
                self._disk.write(chunk)
        except OSError as exc:
            raise storage_error(exc, self.path, "writing") from None
        size = self._hasher.size
        if self._disk.direct:
            self._flushed = size - self._disk.pending  # on disk already, nothing to write back
        elif size - self._flushed >= WRITEBACK_STEP:
            start_writeback(self._fd, self._flushed, size - self._flushed)
            self._flushed = size
        self.offset = size

    async def restart(self) -> None:
        if self.offset:
            await asyncio.to_thread(self._truncate)

    def _truncate(self) -> None:
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        if self._disk is not None:
            self._disk.reset()
        self._hasher = NameHasher()
        self.offset = 0
        self._flushed = 0

    def current_name(self) -> str:
        return self._hasher.name()

    def finish(self, expected_name: str) -> FileDigest:
        """Verify the name; wrong bytes are deleted at once. The caller flushes (in a batch).

        Blocking (it starts the writeback of the rest and closes): run it in a worker thread.
        """
        digest = FileDigest(self._hasher.name(), self._hasher.size, self._hasher.md5_hex())
        if digest.name != expected_name:
            self.discard()
            raise VerifyError(
                f"downloaded bytes have name {digest.name}, the catalog says "
                f"{expected_name} ({digest.size} bytes)",
                hint="the upstream serves other bytes than its catalog names; "
                "report it to the publisher",
            )
        try:
            self._write_tail()
        except OSError as exc:
            self.discard()
            raise storage_error(exc, self.path, "writing") from None
        if self._fd >= 0 and digest.size > self._flushed:
            start_writeback(self._fd, self._flushed, digest.size - self._flushed)
        self.close()
        return digest

    def forget_meta(self) -> None:
        """Once published, the resume validators are of no use."""
        if self._meta_exists:
            with contextlib.suppress(OSError):
                self.meta_path.unlink()

    def _write_tail(self) -> None:
        if self._disk is not None:
            self._disk.flush()

    def close(self) -> None:
        """Close, with what was received on the file (a prefix to resume from)."""
        if self._disk is not None:
            with contextlib.suppress(OSError):
                self._disk.flush()
            self._disk.release()
            self._disk = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def discard(self) -> None:
        self.close()
        for path in (self.path, self.meta_path):
            with contextlib.suppress(OSError):
                path.unlink()
