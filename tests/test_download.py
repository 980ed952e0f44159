"""The partial file: created by its first write, the final batch written by the verifying job."""

from __future__ import annotations

import hashlib
import zlib
from pathlib import Path

import pytest

from eumirror.core.errors import VerifyError
from eumirror.engine.budget import SpaceBudget
from eumirror.engine.download import PartialFile
from eumirror.net.fetch import Validators


def name_of(data: bytes) -> str:
    return str(zlib.crc32(hashlib.md5(data).hexdigest().encode()) & 0xFFFFFFFF).rjust(10, "0")


def partial(tmp_path: Path, *, exists: bool = False) -> PartialFile:
    return PartialFile(tmp_path / "u.x.part", SpaceBudget(1 << 40, 0), exists=exists)


async def test_a_new_download_creates_nothing_until_bytes_arrive(tmp_path: Path) -> None:
    part = partial(tmp_path)
    assert await part.open() == Validators()
    assert not part.path.exists()
    await part.write_last([b"abc", b"def"])
    assert part.offset == 6 and not part.path.exists()  # held for the verifying job
    digest = part.finish(name_of(b"abcdef"))
    assert digest.size == 6 and part.path.read_bytes() == b"abcdef"


async def test_an_empty_tarball_still_gets_its_file(tmp_path: Path) -> None:
    part = partial(tmp_path)
    await part.open()
    part.finish(name_of(b""))
    assert part.path.read_bytes() == b""


async def test_held_bytes_are_written_before_the_next_batch(tmp_path: Path) -> None:
    """A short body is retried from `offset`: what was held goes first."""
    part = partial(tmp_path)
    await part.open()
    await part.write_batch([b"1" * 5000])
    await part.write_last([b"2" * 10])
    assert part.offset == 5010
    await part.write_batch([b"3" * 7])
    await part.drain()
    part.finish(name_of(b"1" * 5000 + b"2" * 10 + b"3" * 7))
    assert part.path.read_bytes() == b"1" * 5000 + b"2" * 10 + b"3" * 7


async def test_an_interrupted_download_keeps_the_held_bytes_to_resume(tmp_path: Path) -> None:
    part = partial(tmp_path)
    await part.open()
    await part.write_batch([b"a" * 9000])
    await part.write_last([b"b" * 3])
    await part.keep_for_resume()
    assert part.path.read_bytes() == b"a" * 9000 + b"b" * 3
    again = partial(tmp_path, exists=True)
    await again.open()
    assert again.offset == 9003


async def test_restart_drops_held_bytes_and_the_prefix(tmp_path: Path) -> None:
    part = partial(tmp_path)
    await part.open()
    await part.write_batch([b"old" * 2000])
    await part.write_last([b"tail"])
    await part.restart()  # waits for the write in flight
    assert part.offset == 0
    await part.write_last([b"new"])
    part.finish(name_of(b"new"))
    assert part.path.read_bytes() == b"new"


async def test_wrong_bytes_are_closed_by_the_verifying_job_and_discarded_by_its_owner(
    tmp_path: Path,
) -> None:
    """The job that finds wrong bytes closes the file; the owner on the loop deletes it."""
    budget = SpaceBudget(1 << 40, 0)
    part = PartialFile(tmp_path / "u.x.part", budget, exists=False)
    await part.open()
    await part.write_last([b"not what the catalog says"])
    with pytest.raises(VerifyError):
        await part.seal(name_of(b"something else"), lambda: None)
    assert budget.taken == len(b"not what the catalog says")
    part.discard()
    assert not part.path.exists()
    assert budget.taken == 0  # the discarded bytes are given back


async def test_batches_written_behind_their_hashing_keep_their_order(tmp_path: Path) -> None:
    """Each batch is hashed while the one before it is still being written."""
    import random

    rng = random.Random(5)
    batches = [[rng.randbytes(rng.randrange(1, 300_000))] for _ in range(40)]
    part = partial(tmp_path)
    await part.open()
    for batch in batches:
        await part.write_batch(batch)
    await part.write_last([b"end"])
    await part.drain()
    data = b"".join(b[0] for b in batches) + b"end"
    digest = part.finish(name_of(data))
    assert digest.size == len(data) and part.path.read_bytes() == data


async def test_finishing_before_the_last_write_is_done_is_refused(tmp_path: Path) -> None:
    """Verifying bytes that may not be on the file yet would publish a short file."""
    part = partial(tmp_path)
    await part.open()
    await part.write_batch([b"x" * 100_000])
    with pytest.raises(RuntimeError, match="still be written"):
        part.finish(name_of(b"x" * 100_000))
    await part.drain()
    assert part.finish(name_of(b"x" * 100_000)).size == 100_000
