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

from .errors import StorageError, VerifyError
from .fetch import Validators
from .names import CHUNK, NameHasher
from .store import FileDigest, storage_error


class PartialFile:
    def __init__(self, path: Path, *, free_bytes: int, reserve: int) -> None:
        self.path = path
        self.meta_path = path.with_suffix(".json")
        self.offset = 0
        self._hasher = NameHasher()
        self._fd = -1
        self._free = free_bytes
        self._reserve = reserve

    async def open(self) -> Validators:
        """Open (or reopen) the partial; a kept prefix is re-hashed so it can be resumed."""
        return await asyncio.to_thread(self._open)

    def _open(self) -> Validators:
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            while chunk := os.read(self._fd, CHUNK):
                self._hasher.update(chunk)
        except OSError as exc:
            raise storage_error(exc, self.path, "opening the partial download") from None
        self.offset = self._hasher.size
        try:
            meta = json.loads(self.meta_path.read_bytes()) if self.offset else {}
            return Validators(meta.get("etag"), meta.get("last_modified"))
        except (OSError, ValueError, AttributeError):
            return Validators()

    def expect(self, remaining: int, validators: Validators) -> None:
        """Refuse before downloading what cannot fit; remember validators for a later resume."""
        need = remaining + self._reserve
        if remaining > 0 and need > self._free:
            raise StorageError(
                f"not enough space for {self.path.name}: need {need} bytes "
                f"(with the reserve), have {self._free}",
                hint="free space on the mirror's filesystem",
            )
        with contextlib.suppress(OSError):
            self.meta_path.write_text(
                json.dumps({"etag": validators.etag, "last_modified": validators.last_modified})
            )

    async def write_batch(self, chunks: list[bytes]) -> None:
        await asyncio.to_thread(self._write, chunks)

    def _write(self, chunks: list[bytes]) -> None:
        try:
            for chunk in chunks:
                self._hasher.update(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(self._fd, view) :]
        except OSError as exc:
            raise storage_error(exc, self.path, "writing") from None
        self.offset = self._hasher.size

    async def restart(self) -> None:
        if self.offset:
            await asyncio.to_thread(self._truncate)

    def _truncate(self) -> None:
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        self._hasher = NameHasher()
        self.offset = 0

    def current_name(self) -> str:
        return self._hasher.name()

    async def finish(self, expected_name: str) -> FileDigest:
        """Verify the name; wrong bytes are deleted at once. The caller flushes (in a batch)."""
        digest = FileDigest(self._hasher.name(), self._hasher.size, self._hasher.md5_hex())
        if digest.name != expected_name:
            self.discard()
            raise VerifyError(
                f"downloaded bytes have name {digest.name}, the catalog says "
                f"{expected_name} ({digest.size} bytes)",
                hint="the upstream serves other bytes than its catalog names; "
                "report it to the publisher",
            )
        self.close()
        return digest

    def forget_meta(self) -> None:
        """Once published, the resume validators are of no use."""
        with contextlib.suppress(OSError):
            self.meta_path.unlink()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def discard(self) -> None:
        self.close()
        for path in (self.path, self.meta_path):
            with contextlib.suppress(OSError):
                path.unlink()
