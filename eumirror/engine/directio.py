"""Writing a download straight to disk (O_DIRECT), past the page cache.

A mirror writes gigabytes it will not read again soon. Through the page cache each byte is
copied into a cache page, written back later by the kernel and evicts what the host had cached;
with O_DIRECT the disk takes it from our buffer. On a 2-core host that is a large share of the
CPU a big download costs. Direct I/O wants the buffer, the file offset and the length aligned,
so the bytes pass through one aligned buffer and the unaligned tail is written the ordinary way.
Where the filesystem refuses O_DIRECT (tmpfs on older kernels, some network filesystems) the
writer quietly stays buffered.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os

ALIGN = 4096
"""Offsets and lengths of direct writes: a page, a multiple of every usual block size."""
BUFFER = 1 << 20
"""The aligned buffer; a write of more is cut into pieces of this size."""

_O_DIRECT: int = getattr(os, "O_DIRECT", 0)


class DiskWriter:
    """Appends to an open file at `offset`, direct when the file system allows it."""

    def __init__(self, fd: int, offset: int, *, direct: bool | None = None) -> None:
        """`direct`: whether `fd` was opened with O_DIRECT (None: find out and set it)."""
        self.fd = fd
        self.direct = bool(direct)
        self._buffer: mmap.mmap | None = None
        self._fill = 0
        if direct is None and _O_DIRECT and offset % ALIGN == 0:
            self.direct = self._set_direct(True)

    @classmethod
    def create(cls, path: str | os.PathLike[str], mode: int) -> DiskWriter:
        """A new empty file (truncated if it exists), opened direct at once where allowed: no
        fcntl round trips, which count when a sync creates thousands of small files."""
        flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC
        if _O_DIRECT:
            try:
                return cls(os.open(path, flags | _O_DIRECT, mode), 0, direct=True)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
        return cls(os.open(path, flags, mode), 0, direct=False)

    @property
    def pending(self) -> int:
        """Bytes accepted but not yet on the file (less than ALIGN between writes)."""
        return self._fill

    def write(self, data: bytes) -> None:
        if not self.direct:
            _write_all(self.fd, memoryview(data))
            return
        view = memoryview(data)
        while view:
            room = BUFFER - self._fill
            piece = view[:room]
            self._copy_in(piece)
            view = view[len(piece) :]
            whole = self._fill - self._fill % ALIGN
            if whole:
                self._write_direct(whole)

    def flush(self) -> None:
        """Write the unaligned tail (through the page cache); the file is then whole."""
        if not self._fill:
            return
        assert self._buffer is not None
        if self.direct:
            self._set_direct(False)
            self.direct = False
        _write_all(self.fd, memoryview(self._buffer)[: self._fill])
        self._fill = 0

    def reset(self) -> None:
        """The file was truncated to 0: forget the tail, go direct again if we can."""
        self._fill = 0
        if _O_DIRECT and not self.direct:
            self.direct = self._set_direct(True)

    def release(self) -> None:
        if self._buffer is not None:
            _give_back(self._buffer)
            self._buffer = None

    def _copy_in(self, piece: memoryview) -> None:
        if self._buffer is None:
            self._buffer = _take()
        self._buffer[self._fill : self._fill + len(piece)] = piece
        self._fill += len(piece)

    def _write_direct(self, length: int) -> None:
        assert self._buffer is not None
        view = memoryview(self._buffer)
        try:
            done = 0
            while done < length:
                done += os.write(self.fd, view[done:length])
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            # refused after all (alignment rules of this device): buffered from here on
            self._set_direct(False)
            self.direct = False
            _write_all(self.fd, view[done:length])
        finally:
            view.release()
        rest = self._fill - length
        if rest:
            self._buffer.move(0, length, rest)
        self._fill = rest

    def _set_direct(self, on: bool) -> bool:
        """Switch O_DIRECT on the open file; True when the file system accepted it."""
        try:
            flags = fcntl.fcntl(self.fd, fcntl.F_GETFL)
            flags = flags | _O_DIRECT if on else flags & ~_O_DIRECT
            fcntl.fcntl(self.fd, fcntl.F_SETFL, flags)
        except OSError:
            return False
        return True


_spare: list[mmap.mmap] = []
SPARE = 8
"""Aligned buffers kept for the next downloads: a map and unmap per file costs more than
the copy (page faults, and TLB shootdowns across the threads)."""


def _take() -> mmap.mmap:
    try:
        return _spare.pop()
    except IndexError:
        return mmap.mmap(-1, BUFFER)  # anonymous maps are page-aligned


def _give_back(buffer: mmap.mmap) -> None:
    if len(_spare) < SPARE:
        _spare.append(buffer)
    else:
        buffer.close()


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view) :]
