"""The direct-I/O writer: whatever the pieces, the file ends up holding exactly the bytes given."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from eumirror.engine.directio import ALIGN, BUFFER, DiskWriter


def _open(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)


@pytest.mark.parametrize("sizes", [[1], [ALIGN], [ALIGN + 1, 7, ALIGN * 3 - 5], [BUFFER * 2 + 11]])
def test_pieces_of_any_size_make_the_same_file(tmp_path: Path, sizes: list[int]) -> None:
    rng = random.Random(len(sizes))
    pieces = [rng.randbytes(n) for n in sizes]
    fd = _open(tmp_path / "f")
    writer = DiskWriter(fd, 0)
    for piece in pieces:
        writer.write(piece)
    assert writer.pending < ALIGN
    writer.flush()
    writer.release()
    os.close(fd)
    assert (tmp_path / "f").read_bytes() == b"".join(pieces)


def test_the_unwritten_tail_is_less_than_a_block_and_a_reopen_sees_a_prefix(tmp_path: Path) -> None:
    """A kill before flush loses at most the tail; what is on disk is a prefix to resume from."""
    data = random.Random(1).randbytes(3 * ALIGN + 100)
    fd = _open(tmp_path / "f")
    writer = DiskWriter(fd, 0)
    writer.write(data)
    os.close(fd)  # no flush: as if killed
    kept = (tmp_path / "f").read_bytes()
    assert data.startswith(kept)
    assert len(data) - len(kept) == writer.pending < ALIGN


def test_an_unaligned_resume_offset_writes_through_the_page_cache(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 10)
    fd = _open(path)
    os.lseek(fd, 0, os.SEEK_END)
    writer = DiskWriter(fd, 10)
    assert not writer.direct
    writer.write(b"y" * (ALIGN * 2))
    writer.flush()
    os.close(fd)
    assert path.read_bytes() == b"x" * 10 + b"y" * (ALIGN * 2)


def test_reset_after_truncation_starts_clean(tmp_path: Path) -> None:
    path = tmp_path / "f"
    fd = _open(path)
    writer = DiskWriter(fd, 0)
    writer.write(b"a" * (ALIGN + 3))
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    writer.reset()
    writer.write(b"b" * 5)
    writer.flush()
    writer.release()
    os.close(fd)
    assert path.read_bytes() == b"b" * 5


@pytest.mark.skipif(not hasattr(os, "O_DIRECT"), reason="no O_DIRECT on this platform")
def test_direct_where_the_filesystem_allows_it(tmp_path: Path) -> None:
    fd = _open(tmp_path / "f")
    writer = DiskWriter(fd, 0)
    import fcntl

    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    assert writer.direct == bool(flags & os.O_DIRECT)
    writer.write(b"z" * (ALIGN + 1))
    writer.flush()
    assert not fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT  # the tail went buffered
    os.close(fd)


def test_a_file_that_refuses_o_direct_is_written_the_ordinary_way() -> None:
    """Sockets, like some network filesystems, refuse O_DIRECT: the writer stays buffered."""
    import socket

    ours, theirs = socket.socketpair()
    with ours, theirs:
        writer = DiskWriter(ours.fileno(), 0)
        assert not writer.direct
        writer.write(b"q" * 5000)
        writer.flush()
        got = b""
        while len(got) < 5000:
            got += theirs.recv(65536)
    assert got == b"q" * 5000
