"""Progress: the figures (done of planned, percentage, rate, ETA), the terminal line on a real
pty, the `progress` events elsewhere, and `sync --once` logging them while a download runs."""

from __future__ import annotations

import asyncio
import json
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

import structlog
from conftest import Mirror, Upstream, tarball, write_config
from faultserver import Fault, ThreadedFaultServer

from eumirror.commands.progress import progress_thread, render, report_progress
from eumirror.core.progress import Progress

WAIT = 10.0


def test_snapshot_before_any_length_is_known_counts_files_and_has_no_eta() -> None:
    """Without a Content-Length yet, bytes planned is null, the share counts files, no ETA."""
    p = Progress(files_total=4, files_done=1, bytes_done=100, started=0.0)

    snap = p.snapshot(now=10.0)

    assert snap["bytes_planned"] is None and snap["eta_seconds"] is None
    assert snap["percent"] == 25.0 and snap["rate_bytes_per_second"] == 10.0


def test_snapshot_extrapolates_the_known_lengths_to_the_unsized_files() -> None:
    """Two of four lengths known (1000 each): about 4000 bytes to move, so 1000 done is 25 %
    and at 100 B/s the ETA is 30 s."""
    p = Progress(files_total=4, started=0.0)
    p.plan_bytes(1000)
    p.plan_bytes(1000)
    p.add_bytes(1000)

    snap = p.snapshot(now=10.0)

    assert snap["bytes_planned"] == 2000
    assert snap["percent"] == 25.0 and snap["eta_seconds"] == 30.0


def test_no_eta_in_the_first_seconds() -> None:
    """A rate over less than two seconds means nothing yet: no ETA."""
    p = Progress(files_total=1, started=0.0)
    p.plan_bytes(1000)
    p.add_bytes(10)
    assert p.snapshot(now=1.0)["eta_seconds"] is None
    assert p.snapshot(now=3.0)["eta_seconds"] is not None


def test_render_shows_done_of_planned_percentage_rate_and_eta() -> None:
    """The terminal line reads like tqdm's: files, bytes of planned, %, rate, ETA."""
    snap = {
        "phase": "sync",
        "files_done": 12,
        "files_planned": 40,
        "bytes_done": 3 * 2**30 // 2,
        "bytes_planned": 4 * 2**30,
        "percent": 37.5,
        "rate_bytes_per_second": 12.5 * 2**20,
        "eta_seconds": 185,
    }
    assert render(snap) == ("sync  12/40 files  1.5 GiB of 4.0 GiB  37.5%  12.5 MiB/s  ETA 3m05s")
    unknown = {**snap, "bytes_planned": None, "percent": None, "eta_seconds": None}
    assert render(unknown) == "sync  12/40 files  1.5 GiB  12.5 MiB/s"


async def wait_for(condition: object, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"{what} within {WAIT}s"
        await asyncio.sleep(0.01)


def test_report_progress_logs_events_when_not_a_terminal() -> None:
    """Not on a terminal (or with no stream, as in the daemon) it logs `progress` events with
    the figures, every interval."""

    async def scenario() -> list[dict[str, object]]:
        p = Progress(files_total=2)
        with structlog.testing.capture_logs() as logs:
            async with report_progress(p, None, interval=0.02):
                p.files_done = 1
                await wait_for(lambda: len([e for e in logs if e["event"] == "progress"]) >= 2, "2")
        return [e for e in logs if e["event"] == "progress"]

    seen = asyncio.run(scenario())
    assert seen[-1]["phase"] == "sync" and seen[-1]["files_done"] == 1
    assert seen[-1]["files_planned"] == 2 and seen[-1]["bytes_planned"] is None
    assert {"percent", "rate_bytes_per_second", "eta_seconds"} <= set(seen[-1])


def test_report_progress_draws_a_live_line_on_a_terminal() -> None:
    """On a real terminal (a pty) the line is redrawn in place and cleared at the end; no log."""
    master, slave = os.openpty()
    stream = os.fdopen(slave, "w", encoding="utf-8")
    received = b""

    async def scenario() -> None:
        nonlocal received
        p = Progress(files_total=4, files_done=1)
        p.plan_bytes(2048)
        with structlog.testing.capture_logs() as logs:
            async with report_progress(p, stream, interval=0.01):
                deadline = time.monotonic() + WAIT
                while b"files" not in received and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                    if select.select([master], [], [], 0)[0]:
                        received += os.read(master, 4096)
        assert not [e for e in logs if e["event"] == "progress"]

    try:
        asyncio.run(scenario())
        while select.select([master], [], [], 0.2)[0]:
            received += os.read(master, 4096)
    finally:
        stream.close()
        os.close(master)
    text = received.decode()
    assert "\r\x1b[K" in text and "1/4 files" in text and "of 2.0 KiB" in text
    assert text.endswith("\r\x1b[K")


def test_progress_thread_serves_synchronous_callers_such_as_verify() -> None:
    """The thread variant logs `progress` events with phase `verify` while a synchronous loop
    counts, and stops when the block ends."""
    p = Progress(phase="verify", files_total=3)
    p.plan_bytes(300)
    with structlog.testing.capture_logs() as logs, progress_thread(p, None, interval=0.01):
        p.files_done, p.bytes_done = 2, 200
        deadline = time.monotonic() + WAIT
        while not [e for e in logs if e["event"] == "progress" and e["files_done"] == 2]:
            assert time.monotonic() < deadline
            threading.Event().wait(0.01)
    seen = [e for e in logs if e["event"] == "progress"]
    assert seen[-1]["phase"] == "verify" and seen[-1]["bytes_planned"] == 300
    assert not [t for t in threading.enumerate() if t.name == "eumirror-progress"]


def test_sync_once_logs_progress_events_during_a_download(
    upstream: Upstream, server: ThreadedFaultServer, tmp_path: Path
) -> None:
    """`sync --once` outside a terminal logs `progress` (phase sync) every
    [status] progress_interval while a tarball is on its way."""
    upstream.add("a/one.tgz", tarball(1, 100_000))
    upstream.write()
    gate = threading.Event()
    server.set_fault("/a/one.tgz", Fault(times=1, gate=gate, gate_after=10_000))
    config = write_config(
        tmp_path / "eumirror.toml",
        root=tmp_path / "m",
        upstreams={"up": f"{server.url}/catalog"},
        extra="[status]\nprogress_interval = 0.1\n",
    )
    mirror = Mirror(tmp_path / "m", config)
    env = {k: v for k, v in os.environ.items() if k != "EUMIRROR_CONFIG"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "eumirror", "sync", "--once", "--config", str(mirror.config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stderr is not None
        seen: dict[str, object] = {}
        for line in proc.stderr:
            event = json.loads(line) if line.startswith("{") else {}
            if event.get("event") == "progress" and event.get("bytes_done", 0) >= 10_000:
                seen = event
                break
        gate.set()
        rest = proc.stderr.read()
        assert proc.wait(WAIT) == 0, rest
    finally:
        gate.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT)
        if proc.stderr is not None:
            proc.stderr.close()
    assert seen["phase"] == "sync" and seen["files_planned"] == 1 and seen["files_done"] == 0
    assert "eta_seconds" in seen and "bytes_planned" in seen
    # Tarball bytes only: the catalog's own bytes once made a 1 % change read 100 % at once.
    assert seen["bytes_done"] == 10_000 and seen["percent"] == 10.0
