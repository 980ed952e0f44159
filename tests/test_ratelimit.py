"""`[limits] max_rate`: the shared token bucket, concurrent downloads sharing it through the
Fetcher against a loopback server, its configuration, and a sync through the CLI."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Mirror, Upstream, events, run_cli, tarball, write_config
from faultserver import ThreadedFaultServer
from test_daemon import Daemon, daemons  # noqa: F401  (the fixture)

from eumirror.core.config import Limits, parse_config
from eumirror.core.errors import ConfigError
from eumirror.core.policy import Trust
from eumirror.net.fetch import Fetcher, Validators
from eumirror.net.ratelimit import BURST_SECONDS, TokenBucket, bucket_for

RATE = 256 << 10
"""Small enough that eight 64 KiB downloads take about two seconds."""


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bucket_debts_queue_payers_behind_each_other() -> None:
    """Payers at the same instant wait for each other's bytes: together they get the rate."""
    clock = Clock()
    bucket = TokenBucket(1000, clock=clock)
    burst = 1000 * BURST_SECONDS
    assert bucket.charge(int(burst)) == 0.0
    assert bucket.charge(500) == pytest.approx(0.5)
    assert bucket.charge(500) == pytest.approx(1.0)
    clock.now += 1.0
    assert bucket.charge(0) == pytest.approx(0.0)


def test_an_idle_bucket_saves_only_a_short_burst() -> None:
    """After a long idle time the bucket holds at most BURST_SECONDS worth of bytes."""
    clock = Clock()
    bucket = TokenBucket(1000, clock=clock)
    clock.now += 3600
    assert bucket.charge(1000) == pytest.approx(1 - BURST_SECONDS)


def test_unset_means_no_bucket_and_one_rate_one_bucket() -> None:
    """Without max_rate there is no bucket at all; every transfer at one rate shares one."""
    assert bucket_for(Limits()) is None
    assert bucket_for(Limits(max_rate=RATE)) is bucket_for(Limits(max_rate=RATE, retries=0))


@pytest.mark.parametrize("value", ['"0B"', "0", '"fast"'])
def test_max_rate_must_be_a_positive_size(value: str) -> None:
    """max_rate = 0 or a non-size is a configuration error naming limits.max_rate."""
    text = f'[mirror]\nroot = "/r"\n[limits]\nmax_rate = {value}\n'
    with pytest.raises(ConfigError) as info:
        parse_config(text.encode(), path=Path("/etc/e.toml"))
    assert "/etc/e.toml: limits.max_rate:" in info.value.line()


class CountingSink:
    """Takes the bytes and only counts them: the test measures the network side."""

    def __init__(self) -> None:
        self.offset = 0

    async def write_batch(self, chunks: list[bytes]) -> None:
        self.offset += sum(len(c) for c in chunks)

    async def write_last(self, chunks: list[bytes]) -> None:
        await self.write_batch(chunks)

    async def restart(self) -> None:
        self.offset = 0

    def expect(self, remaining: int, validators: Validators) -> None:
        pass


async def test_eight_concurrent_downloads_share_the_limit(tmp_path: Path) -> None:
    """Eight downloads at once move max_rate bytes per second together (within 25 %)."""
    size = 64 << 10
    for i in range(8):
        (tmp_path / f"t{i}.tgz").write_bytes(tarball(i, size))
    limits = Limits(max_rate=RATE, low_speed_time=30.0)
    with ThreadedFaultServer(tmp_path) as server:
        trust = Trust(hosts=frozenset({"127.0.0.1"}), proxy="")
        async with Fetcher(limits) as fetcher:
            sinks = [CountingSink() for _ in range(8)]
            began = time.monotonic()
            await asyncio.gather(
                *(
                    fetcher.download(f"{server.url}/t{i}.tgz", sink, Validators(), trust=trust)
                    for i, sink in enumerate(sinks)
                )
            )
            elapsed = time.monotonic() - began
    total = sum(s.offset for s in sinks)
    assert total == 8 * size
    assert 0.75 * RATE <= total / elapsed <= 1.25 * RATE, (total / elapsed, elapsed)


def eight_tarballs_at_256kib(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror, extra: str = ""
) -> int:
    """Eight 64 KiB tarballs upstream and a config limited to RATE; returns their size."""
    size = 64 << 10
    for i in range(8):
        upstream.add(f"t{i}.tgz", tarball(i, size))
    upstream.write()
    write_config(
        mirror.config,
        root=mirror.root,
        upstreams={"up": f"{server.url}/catalog"},
        mirror={"concurrency": 8},
        limits={"max_rate": "256KiB"},
        extra=extra,
    )
    return size


def test_sync_once_keeps_to_max_rate(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """A sync --once with max_rate takes at least as long as its bytes allow at that rate."""
    size = eight_tarballs_at_256kib(upstream, server, mirror)

    done = mirror.sync()

    assert done.returncode == 0, done.stderr
    up = next(e for e in events(done.stderr) if e.get("event") == "upstream_done")
    assert up["downloaded"] == 8
    floor = (8 * size - RATE * BURST_SECONDS) / RATE
    assert up["duration"] >= 0.75 * floor, up


def test_max_rate_zero_is_exit_2(tmp_path: Path) -> None:
    """`max_rate = "0B"` is exit 2 naming the key, before anything is fetched."""
    config = write_config(
        tmp_path / "c.toml",
        root=tmp_path / "r",
        upstreams={"up": "http://127.0.0.1:9/catalog"},
        limits={"max_rate": "0B"},
    )
    done = run_cli("sync", "--once", "--config", str(config))
    assert done.returncode == 2 and "limits.max_rate" in done.stderr


def test_the_daemon_keeps_to_max_rate(
    upstream: Upstream,
    server: ThreadedFaultServer,
    mirror: Mirror,
    daemons: Callable[..., Daemon],  # noqa: F811
) -> None:
    """The daemon's sync shares one bucket too: its first sync takes at least as long as its
    bytes allow at max_rate, and publishes every image."""
    size = eight_tarballs_at_256kib(
        upstream,
        server,
        mirror,
        extra='[schedule]\ninterval = "1h"\n[status]\nlisten = "127.0.0.1:0"\n',
    )
    daemon = daemons(mirror.config)

    done = daemon.wait_event("upstream_done")

    assert done["downloaded"] == 8 and done["result"] == "success"
    floor = (8 * size - RATE * BURST_SECONDS) / RATE
    assert done["duration"] >= 0.75 * floor, done
    assert daemon.stop() == 0
    assert len(mirror.catalog()["images"]) == 8
