"""The daemon's status surface end to end: a running sync's progress in /status, in `eumirror
status` and in the log; state written by another process noticed; a wildcard listen logged as a
url that works; GET / rendered by a real headless Chromium at a phone's 375 px width."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from browser import ARTIFACTS, PHONE_WIDTH, chromium, render_in_chromium
from conftest import Mirror, Upstream, run_cli, tarball, write_config
from faultserver import Fault, ThreadedFaultServer
from test_daemon import WAIT, Daemon

from eumirror.service.status import epoch


@pytest.fixture
def start() -> Iterator[Callable[[Path], Daemon]]:
    """Start daemons; every one is killed at the end of the test, whatever happened."""
    started: list[Daemon] = []

    def run(config: Path) -> Daemon:
        started.append(Daemon(config))
        return started[-1]

    try:
        yield run
    finally:
        for daemon in started:
            daemon.kill()


def config_for(mirror: Mirror, server: ThreadedFaultServer, listen: str = "127.0.0.1:0") -> Path:
    return write_config(
        mirror.config,
        root=mirror.root,
        upstreams={"up": f"{server.url}/catalog"},
        extra=(
            '[schedule]\ninterval = "1h"\n'
            f"[status]\nlisten = {json.dumps(listen)}\nprogress_interval = 0.1\n"
        ),
    )


def test_status_shows_the_running_syncs_progress(
    upstream: Upstream,
    server: ThreadedFaultServer,
    mirror: Mirror,
    start: Callable[[Path], Daemon],
) -> None:
    """While a tarball is half way, /status, `eumirror status` and the log's `progress` events
    show files and bytes done of planned; after the sync, /status has no progress."""
    upstream.add("a/one.tgz", tarball(1, 100_000))
    upstream.write()
    gate = threading.Event()
    server.set_fault("/a/one.tgz", Fault(times=1, gate=gate, gate_after=10_000))
    config = config_for(mirror, server)
    daemon = start(config)
    try:
        doc = daemon.wait_status(
            lambda d: (d.get("progress") or {}).get("bytes_done", 0) >= 10_000, "bytes moving"
        )
        progress = doc["progress"]
        assert doc["in_progress"] is True and progress["phase"] == "sync"
        assert progress["files_planned"] == 1 and progress["files_done"] == 0
        assert "bytes_planned" in progress and "eta_seconds" in progress

        shown = run_cli("status", "--config", str(config), timeout=WAIT)
        assert "running: sync  0/1 files" in shown.stdout, shown.stdout + shown.stderr

        event = daemon.wait_event("progress")
        assert event["phase"] == "sync" and event["files_planned"] == 1
    finally:
        gate.set()
    done = daemon.idle_after(1)
    assert done["progress"] is None and done["upstreams"]["up"]["state"] == "ok"
    assert daemon.stop() == 0


def test_status_notices_what_a_sync_once_wrote(
    upstream: Upstream,
    server: ThreadedFaultServer,
    mirror: Mirror,
    start: Callable[[Path], Daemon],
) -> None:
    """A `sync --once` run by hand between the daemon's syncs shows in the daemon's /status,
    though the daemon itself ran only once."""
    upstream.add("a/one.tgz", tarball(1))
    upstream.write()
    config = config_for(mirror, server)
    daemon = start(config)
    first = daemon.idle_after(1)["upstreams"]["up"]
    upstream.add("b/two.tgz", tarball(2))
    upstream.write()

    assert mirror.sync().returncode == 0

    doc = daemon.wait_status(
        lambda d: d["upstreams"]["up"]["images"] == 2, "the second image in /status"
    )
    assert doc["runs_since_start"] == 1
    assert (epoch(doc["upstreams"]["up"]["last_success"]) or 0) > (
        epoch(first["last_success"]) or 0
    )
    assert daemon.stop() == 0


def test_wildcard_listen_logs_a_url_that_works(
    upstream: Upstream,
    server: ThreadedFaultServer,
    mirror: Mirror,
    start: Callable[[Path], Daemon],
) -> None:
    """With listen = "0.0.0.0:0" the log names the bound address and a loopback url with the
    real port, which answers; the page url answers with HTML."""
    upstream.add("a/one.tgz", tarball(1))
    upstream.write()
    daemon = start(config_for(mirror, server, listen="0.0.0.0:0"))

    event = daemon.wait_event("status_listening")

    port = int(event["listen"].rpartition(":")[2])
    assert event["listen"] == f"0.0.0.0:{port}" and port != 0
    assert event["url"] == f"http://127.0.0.1:{port}/status"
    assert event["page"] == f"http://127.0.0.1:{port}/"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + WAIT
    while True:
        with opener.open(event["url"], timeout=WAIT) as resp:
            doc = json.loads(resp.read())
        if doc["upstreams"]["up"]["last_run"] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert doc["listen"] == event["listen"]
    with opener.open(event["page"], timeout=WAIT) as resp:
        assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
        assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
        page = resp.read().decode()
    assert "<h2>up " in page and "1 published" in page
    assert daemon.stop() == 0


LONG = "very-long-image-file-name-" * 8 + ".tgz"


def test_page_renders_in_chromium_at_phone_width(
    upstream: Upstream,
    server: ThreadedFaultServer,
    mirror: Mirror,
    tmp_path: Path,
    start: Callable[[Path], Daemon],
) -> None:
    """A real Chromium at 375 px shows one section per upstream with its state, freshness,
    images and its failed image by name, and needs no horizontal scroll."""
    upstream.add("a/one.tgz", tarball(1))
    upstream.add(f"b/{LONG}", tarball(2))
    upstream.write()
    server.set_fault(f"/b/{LONG}", Fault(status=404))
    config = write_config(
        mirror.config,
        root=mirror.root,
        upstreams={"up": f"{server.url}/catalog", "down": f"{server.url}/gone/catalog"},
        extra='[schedule]\ninterval = "1h"\n[status]\nlisten = "127.0.0.1:0"\n',
    )
    server.set_fault("/gone/catalog", Fault(status=500))
    daemon = start(config)
    daemon.idle_after(1)
    host, _, port = daemon.listen.rpartition(":")
    shot = ARTIFACTS / "status-page-375px.png"

    with chromium(tmp_path) as devtools:
        facts, png = asyncio.run(render_in_chromium(devtools, f"http://{host}:{port}/"))
    shot.parent.mkdir(parents=True, exist_ok=True)
    shot.write_bytes(png)
    print(f"screenshot: {shot}")
    assert facts["innerWidth"] == PHONE_WIDTH
    assert facts["scrollWidth"] <= PHONE_WIDTH, facts
    assert facts["title"] == "eumirror: unhealthy"
    up, down = (s for s in facts["sections"] if s.startswith(("up", "down")))
    assert up.startswith("up") and "partial" in up and "1 failed image" in up
    # the failure line names the image; a very long url is shortened in its middle
    assert "1 published" in up and "last success" in up
    assert LONG[-40:] in up.replace("\n", "") and "left out of the catalog" in up
    assert down.startswith("down") and "failed" in down and "500" in down
    assert "no successful sync yet" in down
    assert shot.stat().st_size > 1000
    assert daemon.stop() == 0
