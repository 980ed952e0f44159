"""Crash consistency: `sync --once` SIGKILLed at random instants never leaves a broken mirror.

The CI default kills it a few times; the documented slow run kills it 100 times:
`pytest tests/test_crash.py --crash-iterations 100`.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import Mirror, Upstream, name_of, tarball
from faultserver import Fault, ThreadedFaultServer
from test_hardening import only_verified_under
from test_sync_e2e import assert_published_verifies

SIZE = 256 * 1024


def verified_names_on_disk(root: Path) -> set[str]:
    return {
        p.parent.name
        for p in (root / "up" / "images").glob("*/*")
        if p.is_file() and name_of(p.read_bytes()) == p.parent.name
    }


def mutate(upstream: Upstream, rng: random.Random, serial: int) -> None:
    """Change one tarball, add one, drop one: every kind of work happens in every run."""
    if upstream.images:
        victim = rng.randrange(len(upstream.images))
        rel = upstream.images[victim]["url"]
        data = tarball(10_000 + serial, SIZE)
        (upstream.folder / rel).write_bytes(data)
        upstream.images[victim]["name"] = name_of(data)
    upstream.add(f"new/{serial}.tgz", tarball(20_000 + serial, SIZE))
    if len(upstream.images) > 6:
        upstream.images.pop(rng.randrange(len(upstream.images) - 1))
    upstream.write()


def test_sigkill_at_random_instants_never_breaks_the_mirror(
    request: pytest.FixtureRequest,
    upstream: Upstream,
    server: ThreadedFaultServer,
    mirror: Mirror,
    rng: random.Random,
) -> None:
    """After every SIGKILL the published catalog is whole and verifies; the next sync finishes
    without downloading again what was already verified."""
    iterations: int = request.config.getoption("--crash-iterations")
    for i in range(5):
        upstream.add(f"base/{i}.tgz", tarball(i, SIZE))
    upstream.write()
    config = write_with_slow_limits(mirror)
    killed_during = []
    for serial in range(iterations):
        mutate(upstream, rng, serial)
        for image in upstream.images:
            # Slow enough that kills land while bytes stream, not only before or after.
            server.set_fault("/" + image["url"], Fault(delay_headers=0.1, gate_after=0))
        proc = subprocess.Popen(
            [sys.executable, "-m", "eumirror", "sync", "--once", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # The instant is what varies here, so a random delay before the kill is the point.
        time.sleep(rng.uniform(0.2, 1.0))
        proc.send_signal(signal.SIGKILL)
        killed_during.append(proc.wait(timeout=30))
        if (mirror.root / "up" / "catalog").exists():
            assert_published_verifies(mirror)
        only_verified_under(mirror)
        if mirror.root.exists():
            assert sorted(p.name for p in mirror.root.iterdir()) in (
                [".eumirror"],
                [".eumirror", "up"],
            )

    already = verified_names_on_disk(mirror.root)
    server.reset_counters()
    finish = mirror.sync()
    assert finish.returncode == 0, finish.stderr
    assert_published_verifies(mirror)
    for image in upstream.images:
        if image["name"] in already:
            assert server.requests("/" + image["url"]) == 0, image["url"]
    server.reset_counters()
    again = mirror.sync()
    assert again.returncode == 0
    assert all(server.requests("/" + image["url"]) == 0 for image in upstream.images)


def write_with_slow_limits(mirror: Mirror) -> Path:
    text = mirror.config.read_text().replace("[limits]", "[limits]\nmax_shrink = 1.0")
    text = text.replace("[mirror]", "[mirror]\nconcurrency = 2")
    mirror.config.write_text(text)
    return mirror.config
