"""One big tarball over several ranged connections (`[limits] connections_per_download`):
every byte still hashed once, in order, and verified before anything is visible; a segment
that breaks resumes from what it wrote; a tarball that changes mid-way starts over; a kill
while split never resumes from a file with holes. Real loopback upstream, real CLI."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import Mirror, Upstream, events, name_of, tarball, write_config
from faultserver import Fault, ThreadedFaultServer

from eumirror.net.fetch import PIECE, SEGMENT_ALIGN, segment_bounds

SPLIT_ABOVE = 64 << 20
"""The tests split above 64 MiB (default: 256 MiB) to keep their tarballs small."""
BIG = SPLIT_ABOVE + 2 * PIECE + 12345
"""Seven pieces (the last a small one, an unaligned end), four connections at once."""


@pytest.fixture(scope="module")
def big_bytes() -> bytes:
    return tarball(77, BIG)


def configure(mirror: Mirror, server: ThreadedFaultServer, connections: int) -> None:
    write_config(
        mirror.config,
        root=mirror.root,
        upstreams={"up": f"{server.url}/catalog"},
        limits={"connections_per_download": connections, "split_above": "64MiB"},
    )


def publish_big(
    upstream: Upstream, mirror: Mirror, server: ThreadedFaultServer, data: bytes, connections: int
) -> None:
    """The upstream offers the big tarball; the mirror may split it over `connections`."""
    upstream.add("big/huge.tgz", data)
    upstream.write()
    configure(mirror, server, connections)


def ranges(server: ThreadedFaultServer, path: str) -> list[str]:
    return [r.headers.get("Range", "") for r in server.seen(path)]


def test_bounds_are_aligned_at_least_the_minimum_and_cover_the_range() -> None:
    for start, end, n in [(0, BIG, 4), (5, 10 * SPLIT_ABOVE + 7, 8), (0, SPLIT_ABOVE + 1, 16)]:
        bounds = segment_bounds(start, end, n, SPLIT_ABOVE)
        assert bounds[0][0] == start and bounds[-1][1] == end
        assert all(a < b for a, b in bounds)
        assert all(b1 == a2 for (_, b1), (a2, _) in itertools.pairwise(bounds))
        assert all(a % SEGMENT_ALIGN == 0 for a, _ in bounds[1:])
        assert all(b - a <= PIECE + SEGMENT_ALIGN for a, b in bounds)
        assert len(bounds) >= (end - start) // PIECE
    assert len(segment_bounds(0, BIG, 4, SPLIT_ABOVE)) == 7
    assert segment_bounds(0, SPLIT_ABOVE, 8, SPLIT_ABOVE) == [(0, SPLIT_ABOVE)]
    assert segment_bounds(0, 10 * SPLIT_ABOVE, 1, SPLIT_ABOVE) == [(0, 10 * SPLIT_ABOVE)]
    assert segment_bounds(0, 256 << 20, 4, 256 << 20) == [(0, 256 << 20)], "rclone's cutoff"


def test_a_big_tarball_comes_over_several_connections_and_verifies(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror, big_bytes: bytes
) -> None:
    upstream.add("big/huge.tgz", big_bytes)
    upstream.add("small/one.tgz", tarball(1))
    upstream.write()
    configure(mirror, server, 4)

    done = mirror.sync()

    assert done.returncode == 0, done.stderr
    files = mirror.files()
    assert files[f"images/{name_of(big_bytes)}/huge.tgz"] == big_bytes
    asked = ranges(server, "/big/huge.tgz")
    assert asked[0] == "", "the first request is a plain GET"
    assert len(asked) == 7 and all(r.startswith("bytes=") for r in asked[1:]), asked
    assert ranges(server, "/small/one.tgz") == [""], "a small tarball takes one connection"
    assert not list((mirror.root / ".eumirror" / "partial" / "up").iterdir())


def test_one_connection_when_configured_so(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror, big_bytes: bytes
) -> None:
    publish_big(upstream, mirror, server, big_bytes, 1)

    assert mirror.sync().returncode == 0
    assert ranges(server, "/big/huge.tgz") == [""]


def test_a_segment_reset_midway_resumes_from_what_it_wrote(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror, big_bytes: bytes
) -> None:
    publish_big(upstream, mirror, server, big_bytes, 4)
    # the plain GET passes, the first segment request is reset after 5 MiB
    server.set_fault("/big/huge.tgz", Fault(times=1), Fault(times=1, reset_after=5 << 20))

    done = mirror.sync()

    assert done.returncode == 0, done.stderr
    assert mirror.files()[f"images/{name_of(big_bytes)}/huge.tgz"] == big_bytes
    asked = ranges(server, "/big/huge.tgz")
    assert len(asked) == 8, asked
    starts = [int(r.split("=")[1].split("-")[0]) for r in asked[1:]]
    pieces = segment_bounds(0, BIG, 4, SPLIT_ABOVE)[1:]
    resumed = [start for start in starts if start not in {a for a, _ in pieces}]
    assert len(resumed) == 1, asked
    assert any(a + (1 << 20) <= resumed[0] < b for a, b in pieces), "resumed inside its piece"
    assert any(e.get("event") == "retry" for e in events(done.stderr))


def test_a_tarball_that_changes_midway_starts_over_and_verifies(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror, big_bytes: bytes
) -> None:
    """A segment's If-Range fails (the server sends the whole file back): the download starts
    over from byte 0 and still publishes only verified bytes."""
    publish_big(upstream, mirror, server, big_bytes, 4)
    server.set_fault("/big/huge.tgz", Fault(times=1), Fault(times=1, no_range=True))

    done = mirror.sync()

    assert done.returncode == 0, done.stderr
    assert mirror.files()[f"images/{name_of(big_bytes)}/huge.tgz"] == big_bytes
    assert "changed during the download" in done.stderr


def test_lying_bytes_in_one_segment_fail_verification(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror, big_bytes: bytes
) -> None:
    publish_big(upstream, mirror, server, big_bytes, 4)
    server.set_fault("/big/huge.tgz", Fault(times=1), Fault(times=1, replace_body=tarball(5, BIG)))

    done = mirror.sync()

    assert done.returncode == 1
    assert "the catalog says" in done.stderr
    assert mirror.files() == {}


def test_a_kill_while_split_starts_over_instead_of_resuming_holes(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror, big_bytes: bytes
) -> None:
    publish_big(upstream, mirror, server, big_bytes, 4)
    gate, arrived = threading.Event(), threading.Event()
    # every segment's request stalls after 1 MiB: the four connections are all held, so the
    # download can neither end nor send a fifth request before the kill
    server.set_fault(
        "/big/huge.tgz", Fault(times=4, gate=gate, gate_after=1 << 20, on_request=arrived)
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "eumirror", "sync", "--once", "--config", str(mirror.config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert arrived.wait(60)
        # all four seen before the kill: none of the killed run's requests is counted after it
        # (a request still in the server's backlog at the kill was, under load, read as the
        # next run's first)
        server.wait_for_requests("/big/huge.tgz", 4, timeout=60)
        partial = mirror.root / ".eumirror" / "partial" / "up"
        metas = _wait_for(lambda: list(partial.glob("*.json")))
        assert json.loads(metas[0].read_text()).get("split") is True
        proc.send_signal(signal.SIGKILL)
        proc.wait(60)
    finally:
        gate.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait(60)
    before = len(server.seen("/big/huge.tgz"))
    assert before == 4, ranges(server, "/big/huge.tgz")

    done = mirror.sync()

    assert done.returncode == 0, done.stderr
    assert mirror.files()[f"images/{name_of(big_bytes)}/huge.tgz"] == big_bytes
    assert ranges(server, "/big/huge.tgz")[before] == "", "started over, not resumed"


def _wait_for(found: object) -> list[Path]:
    import time

    assert callable(found)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if result := found():
            return list(result)
        time.sleep(0.05)
    raise AssertionError("nothing appeared within 60 s")
