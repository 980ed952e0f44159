"""A retry within one download resumes from what the failed attempt delivered."""

from __future__ import annotations

from pathlib import Path

from conftest import name_of, tarball
from faultserver import Fault, FaultServer

from eumirror.core.config import Limits
from eumirror.core.policy import Trust
from eumirror.engine.download import PartialFile, SpaceBudget
from eumirror.net.fetch import Fetcher, Validators

SIZE = 32 << 20
LOOPBACK = Trust(hosts=frozenset({"127.0.0.1"}))
LIMITS = Limits(retries=2, connect_timeout=5.0, low_speed_time=10.0)


async def test_a_reset_at_90_percent_resumes_from_the_received_bytes(tmp_path: Path) -> None:
    """The retry asks for `Range: bytes=<received>-` with the first answer's validators, so the
    server sends about the tarball's size in all, not nearly twice it."""
    data = tarball(7, SIZE)
    async with FaultServer() as srv:
        srv.put("/big.tgz", data, etag='"v1"')
        srv.set_fault("/big.tgz", Fault(times=1, reset_after=SIZE * 9 // 10))
        partial = PartialFile(tmp_path / "big.part", SpaceBudget(1 << 40, 0), exists=False)
        await partial.open()
        async with Fetcher(LIMITS) as fetcher:
            got = await fetcher.download(
                srv.url_for("/big.tgz"), partial, Validators(), trust=LOOPBACK
            )
        await partial.drain()
        digest = partial.finish(name_of(data))

        seen = srv.seen("/big.tgz")
        assert len(seen) == 2
        assert "Range" not in seen[0].headers
        start = int(seen[1].headers["Range"].removeprefix("bytes=").removesuffix("-"))
        assert SIZE // 2 < start <= SIZE * 9 // 10
        assert seen[1].headers["If-Range"] == '"v1"'
        # Sent: 90 % then the rest from `start`; what the reset dropped in flight is the excess.
        assert srv.bytes_sent("/big.tgz") == SIZE * 9 // 10 + SIZE - start
        assert srv.bytes_sent("/big.tgz") < SIZE * 1.25
    assert got.etag == '"v1"'
    assert digest.size == SIZE and partial.path.read_bytes() == data


async def test_a_changed_upstream_during_the_retry_starts_over(tmp_path: Path) -> None:
    """When the file changed between attempts, If-Range makes the server send it whole and the
    prefix of the old version is dropped."""
    old, new = tarball(1, 1 << 20), tarball(2, 1 << 20)
    async with FaultServer() as srv:
        srv.put("/x.tgz", old, etag='"old"')

        def swap(_seen: object) -> None:
            srv.put("/x.tgz", new, etag='"new"')

        srv.set_fault(
            "/x.tgz", Fault(times=1, reset_after=600_000), Fault(times=1, on_request=swap)
        )
        partial = PartialFile(tmp_path / "x.part", SpaceBudget(1 << 40, 0), exists=False)
        await partial.open()
        async with Fetcher(LIMITS) as fetcher:
            got = await fetcher.download(
                srv.url_for("/x.tgz"), partial, Validators(), trust=LOOPBACK
            )
        await partial.drain()
        partial.finish(name_of(new))
        seen = srv.seen("/x.tgz")
        assert seen[1].headers["If-Range"] == '"old"' and "Range" in seen[1].headers
    assert got.etag == '"new"'
    assert partial.path.read_bytes() == new


async def test_a_body_shorter_than_its_length_completes_on_the_retry(tmp_path: Path) -> None:
    """When the retry's range starts at the end (416 `bytes */N` with N received) the prefix is
    the whole file: no third request, no restart."""
    data = tarball(3, 100_000)
    async with FaultServer() as srv:
        srv.put("/s.tgz", data)
        srv.set_fault("/s.tgz", Fault(times=1, length_delta=100))
        partial = PartialFile(tmp_path / "s.part", SpaceBudget(1 << 40, 0), exists=False)
        await partial.open()
        async with Fetcher(LIMITS) as fetcher:
            await fetcher.download(srv.url_for("/s.tgz"), partial, Validators(), trust=LOOPBACK)
        await partial.drain()
        partial.finish(name_of(data))
        assert srv.requests("/s.tgz") == 2
        assert srv.bytes_sent("/s.tgz") == len(data)
    assert partial.path.read_bytes() == data
