"""Scheduled verification in the daemon, end to end: a real daemon process, a loopback upstream,
damage made on disk behind eumirror's back."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path

from conftest import Mirror, Upstream, name_of, run_cli, tarball
from faultserver import ThreadedFaultServer
from prometheus_client.parser import text_string_to_metric_families
from test_daemon import Daemon, daemon_config, daemons, gates, held, wait  # noqa: F401 (fixtures)
from test_sync_e2e import assert_published_verifies

VERIFY = '\nverify_interval = "1s"'


def scrubbing_config(mirror: Mirror, server: ThreadedFaultServer) -> Path:
    return daemon_config(mirror, server, schedule='interval = "1h"' + VERIFY)


def damage(path: Path) -> None:
    """Other bytes of the same size and the same mtime: only re-hashing can notice."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def samples(body: bytes, name: str) -> list[float]:
    return [
        float(s.value)
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
        if s.name == name and s.labels.get("upstream") == "up"
    ]


def test_scheduled_verification_finds_damage_and_the_next_sync_repairs_it(
    upstream: Upstream,
    server: ThreadedFaultServer,
    mirror: Mirror,
    daemons: Callable[..., Daemon],  # noqa: F811
) -> None:
    """Damage that only a re-hash can see is quarantined, counted and turns /healthz 503; the
    next sync downloads the tarball again and /healthz is 200 again."""
    a = upstream.add("a.tgz", tarball(1))
    upstream.add("b.tgz", tarball(2))
    upstream.write()
    daemon = daemons(scrubbing_config(mirror, server))
    daemon.idle_after(1)
    daemon.wait_event("verify_scheduled_done")
    _, _, body = daemon.http("GET", "/metrics")
    assert samples(body, "eumirror_last_verify_timestamp_seconds")
    published = mirror.root / "up" / "images" / a["name"] / "a.tgz"

    damage(published)
    reason = daemon.wait_health(503)
    assert "damaged" in reason and "up" in reason
    assert not published.exists(), "quarantined at once"
    _, _, body = daemon.http("GET", "/metrics")
    assert samples(body, "eumirror_verify_failures_total") == [1.0]
    assert daemon.status()["upstreams"]["up"]["state"] == "damaged"

    daemon.send(signal.SIGUSR1)
    daemon.idle_after(2)
    assert daemon.wait_health(200) == "ok\n"
    assert name_of(published.read_bytes()) == a["name"]
    assert server.requests("/a.tgz") == 2
    assert_published_verifies(mirror)
    assert daemon.stop() == 0


def test_scheduled_verification_waits_while_a_sync_runs(
    upstream: Upstream,
    server: ThreadedFaultServer,
    mirror: Mirror,
    daemons: Callable[..., Daemon],  # noqa: F811
    gates: list[threading.Event],  # noqa: F811
) -> None:
    """A verification that comes due during a sync pauses until the sync is done, and only
    then finds the damage made meanwhile."""
    a = upstream.add("a.tgz", tarball(1))
    upstream.write()
    daemon = daemons(scrubbing_config(mirror, server))
    daemon.idle_after(1)
    first = daemon.seen.index(daemon.wait_event("sync_done"))
    count = 1
    while daemon.seen.index(daemon.wait_event("verify_scheduled_done", count)) < first:
        count += 1  # a verification that finished after the first sync: none is paused now
    upstream.add("b.tgz", tarball(2))
    upstream.write()
    fault, arrived = held(gates)
    server.set_fault("/b.tgz", fault)
    paused = len(daemon.events("verify_paused"))  # verification pauses only for a sync
    daemon.send(signal.SIGUSR1)
    wait(arrived, "the held download")
    damage(mirror.root / "up" / "images" / a["name"] / "a.tgz")
    daemon.wait_event("verify_paused", paused + 1)  # a verification came due and waits
    assert daemon.events("verify_damaged") == []
    gates[0].set()
    done = daemon.wait_event("sync_done", 2)
    found = daemon.wait_event("verify_damaged")
    assert daemon.seen.index(found) > daemon.seen.index(done)
    assert daemon.stop() == 0


def test_verify_interval_must_be_positive(mirror: Mirror) -> None:
    """verify_interval = "0s" is a configuration error naming the key (exit 2)."""
    text = mirror.config.read_text() + '[schedule]\nverify_interval = "0s"\n'
    mirror.config.write_text(text)
    done = run_cli("sync", "--once", "--config", str(mirror.config))
    assert done.returncode == 2
    assert "schedule.verify_interval" in done.stderr
