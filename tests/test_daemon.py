"""`eumirror sync` as a daemon, end to end: a real process, a loopback upstream, its status
endpoint, its signals, its lock and its sd_notify messages."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Mirror, Upstream, name_of, run_cli, tarball, write_config
from faultserver import Fault, ThreadedFaultServer
from prometheus_client.parser import text_string_to_metric_families

from eumirror.service.status import epoch

WAIT = 10.0
"""Bound on every wait for the daemon; each is a loop of short polls, never a fixed sleep."""

CONTRACT_METRICS = {
    # sample name: its labels
    "eumirror_sync_last_success_timestamp_seconds": {"upstream"},
    "eumirror_sync_runs_total": {"upstream", "result"},
    "eumirror_sync_duration_seconds": {"upstream"},
    "eumirror_images": {"upstream"},
    "eumirror_downloaded_bytes_total": {"upstream"},
    "eumirror_verify_failures_total": {"upstream"},
}


NOT_INHERITED = {"EUMIRROR_CONFIG", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"}
"""Not passed on from the test's environment (which may itself run under systemd)."""


class Daemon:
    """One `eumirror sync --config F` process; stderr (JSON lines) read by a thread."""

    def __init__(self, config: Path, env: dict[str, str] | None = None) -> None:
        inherited = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
        full_env = {**inherited, **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "eumirror", "sync", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=full_env,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self._listen = ""

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _take(self, timeout: float) -> bool:
        """Move one line from the queue into `seen`; False on timeout or end of stream."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            return False
        if line is None:
            self.lines.put(None)
            return False
        self.raw.append(line)
        if line.startswith("{"):
            self.seen.append(json.loads(line))
        return True

    def events(self, name: str) -> list[dict[str, Any]]:
        while self._take(0):
            pass
        return [e for e in self.seen if e.get("event") == name]

    def wait_event(self, name: str, count: int = 1, timeout: float = WAIT) -> dict[str, Any]:
        """The `count`-th log event called `name`, waiting for it (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.events(name)
            if len(found) >= count:
                return found[count - 1]
            left = deadline - time.monotonic()
            if left <= 0 or (not self._take(min(left, 0.2)) and self.proc.poll() is not None):
                if len(found := self.events(name)) >= count:
                    return found[count - 1]
                raise AssertionError(
                    f"no {name!r} #{count} in {timeout}s; rc={self.proc.poll()}; log:\n"
                    + "\n".join(self.raw[-30:])
                )

    @property
    def listen(self) -> str:
        if not self._listen:
            self._listen = self.wait_event("status_listening")["listen"]
        return self._listen

    def http(self, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
        host, _, port = self.listen.rpartition(":")
        conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=5)
        try:
            conn.request(method, path)
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()

    def status(self) -> dict[str, Any]:
        code, _, body = self.http("GET", "/status")
        assert code == 200
        doc: dict[str, Any] = json.loads(body)
        return doc

    def wait_status(
        self, ok: Callable[[dict[str, Any]], bool], what: str, timeout: float = WAIT
    ) -> dict[str, Any]:
        """Poll /status until `ok(doc)` (bounded)."""
        deadline = time.monotonic() + timeout
        doc = self.status()
        while not ok(doc):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"{what}: not reached in {timeout}s; /status: {doc}")
            time.sleep(0.05)
            doc = self.status()
        return doc

    def wait_health(self, code: int, timeout: float = WAIT) -> str:
        """Poll /healthz until it answers `code` (bounded); return its body."""
        deadline = time.monotonic() + timeout
        while True:
            got, _, body = self.http("GET", "/healthz")
            if got == code:
                return body.decode()
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"/healthz still {got} after {timeout}s: {body!r}")
            time.sleep(0.05)

    def idle_after(self, runs: int) -> dict[str, Any]:
        """Wait until `runs` syncs are done and none runs or is pending."""
        return self.wait_status(
            lambda d: d["runs_since_start"] >= runs and not d["in_progress"] and not d["pending"],
            f"{runs} finished run(s)",
        )

    def send(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout: float = WAIT) -> int:
        """SIGTERM and wait for the exit code; the rest of stderr is read into `seen`."""
        if self.proc.poll() is None:
            self.send(signal.SIGTERM)
        rc = self.proc.wait(timeout)
        self.reader.join(timeout)
        self.events("")
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(WAIT)
        self.reader.join(WAIT)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


@pytest.fixture
def daemons() -> Iterator[Callable[..., Daemon]]:
    """Start daemons; every one is killed at the end of the test, whatever happened."""
    started: list[Daemon] = []

    def start(config: Path, env: dict[str, str] | None = None) -> Daemon:
        daemon = Daemon(config, env)
        started.append(daemon)
        return daemon

    try:
        yield start
    finally:
        for daemon in started:
            daemon.kill()


@pytest.fixture
def gates() -> Iterator[list[threading.Event]]:
    """Gates that are always opened at the end, so no server request waits forever."""
    made: list[threading.Event] = []
    try:
        yield made
    finally:
        for gate in made:
            gate.set()


def daemon_config(
    mirror: Mirror,
    server: ThreadedFaultServer,
    *,
    interval: str = "1h",
    upstreams: dict[str, str] | None = None,
    limits: dict[str, Any] | None = None,
    schedule: str = "",
) -> Path:
    """The test's config plus a schedule and a status endpoint on a free loopback port."""
    return write_config(
        mirror.config,
        root=mirror.root,
        upstreams=upstreams or {"up": f"{server.url}/catalog"},
        limits=limits,
        extra=(
            f"[schedule]\n{schedule or f'interval = {json.dumps(interval)}'}\n"
            '[status]\nlisten = "127.0.0.1:0"\n'
        ),
    )


def held(gates: list[threading.Event], **fields: Any) -> tuple[Fault, threading.Event]:
    """A fault that holds its answer until the test opens the gate, and says when it arrived."""
    gate, arrived = threading.Event(), threading.Event()
    gates.append(gate)
    return Fault(times=1, gate=gate, on_request=arrived, **fields), arrived


def wait(event: threading.Event, what: str) -> None:
    assert event.wait(WAIT), f"{what} did not happen within {WAIT}s"


def verified_files(root: Path) -> dict[str, bytes]:
    """Files under <root>/<U>/ other than the catalog, each checked against its name folder."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name != "catalog":
            rel = path.relative_to(root)
            assert rel.parts[0] == "images" and len(rel.parts) == 3, rel
            assert name_of(path.read_bytes()) == rel.parts[1], f"unverified file {rel}"
            out[str(rel)] = path.read_bytes()
    return out


def test_daemon_syncs_at_start_then_on_schedule(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror, daemons: Callable[..., Daemon]
) -> None:
    """With a 1 s interval the daemon syncs at start, publishes, then syncs again on schedule."""
    upstream.add("a/one.tgz", tarball(1))
    upstream.write()
    daemon = daemons(daemon_config(mirror, server, interval="1s"))

    daemon.wait_event("sync_done")
    assert len(mirror.catalog()["images"]) == 1
    doc = daemon.wait_status(lambda d: d["runs_since_start"] >= 3, "three runs")

    assert daemon.wait_event("sync_done", 3)["result"] == "success"
    assert server.requests("/catalog") >= 3
    assert server.requests("/a/one.tgz") == 1
    assert doc["next_run"] is not None
    assert daemon.stop() == 0


def test_health_status_and_metrics_endpoints(
    upstream: Upstream,
    server: ThreadedFaultServer,
    mirror: Mirror,
    daemons: Callable[..., Daemon],
    gates: list[threading.Event],
) -> None:
    """/healthz is 503 while the first sync is held, then 200; /status and /metrics say the
    contract's facts; HEAD works and POST is refused with 405."""
    upstream.add("a/one.tgz", tarball(1))
    upstream.add("b/two.tgz", tarball(2, 10_000))
    upstream.write()
    fault, arrived = held(gates)
    server.set_fault("/catalog", fault)
    daemon = daemons(daemon_config(mirror, server))
    wait(arrived, "the catalog request")

    code, _, body = daemon.http("GET", "/healthz")
    assert code == 503
    assert "up" in body.decode() and body.decode().endswith("\n")
    assert daemon.status()["in_progress"] is True
    gates[0].set()
    assert daemon.wait_health(200) == "ok\n"

    doc = daemon.idle_after(1)
    assert doc["listen"] == daemon.listen
    assert doc["root"] == str(mirror.root)
    assert doc["pid"] == daemon.proc.pid
    assert doc["runs_since_start"] == 1 and doc["in_progress"] is False
    assert doc["next_run"].endswith("Z") and (epoch(doc["next_run"]) or 0) > time.time()
    assert doc["health"]["ok"] is True and doc["health"]["max_age_seconds"] == 2 * 3600
    up = doc["upstreams"]["up"]
    assert up["images"] == 2
    assert epoch(up["last_success"]) == pytest.approx(time.time(), abs=WAIT)
    run = up["last_run"]
    assert run["result"] == "success" and run["images"] == 2 and run["downloaded"] == 2
    assert run["downloaded_bytes"] == 4096 + 10_000 and run["ended"] >= run["started"]
    assert up["totals"]["runs"]["success"] == 1

    code, headers, body = daemon.http("GET", "/metrics")
    assert code == 200 and headers["Content-Type"].startswith("text/plain")
    samples: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    for name, labels in CONTRACT_METRICS.items():
        assert name in samples, name
        for sample in samples[name]:
            assert set(sample.labels) == labels, (name, sample.labels)
            assert sample.labels["upstream"] == "up"
    runs = {s.labels["result"]: s.value for s in samples["eumirror_sync_runs_total"]}
    assert runs == {"success": 1.0, "partial": 0.0, "failure": 0.0}
    assert samples["eumirror_images"][0].value == 2
    assert samples["eumirror_downloaded_bytes_total"][0].value == 4096 + 10_000
    assert samples["eumirror_verify_failures_total"][0].value == 0
    assert samples["eumirror_sync_last_success_timestamp_seconds"][0].value == pytest.approx(
        epoch(up["last_success"]), abs=0.001
    )
    assert samples["eumirror_sync_in_progress"][0].value == 0

    for path in ("/healthz", "/status", "/metrics"):
        code, _, body = daemon.http("HEAD", path)
        assert (code, body) == (200, b""), path
        code, headers, _ = daemon.http("POST", path)
        assert code == 405, path
        assert "POST" not in headers.get("Allow", "")
    assert daemon.http("GET", "/nothing")[0] == 404
    assert daemon.stop() == 0


def test_failing_upstream_turns_health_503_and_back(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror, daemons: Callable[..., Daemon]
) -> None:
    """A catalog answering 500 makes /healthz 503 once the last success is older than twice the
    period, keeping that last success; when it recovers, /healthz is 200 again."""
    upstream.add("a/one.tgz", tarball(1))
    upstream.write()
    daemon = daemons(daemon_config(mirror, server, interval="1s", limits={"retries": 0}))
    daemon.wait_health(200)
    first = daemon.status()["upstreams"]["up"]["last_success"]

    server.set_fault("/catalog", Fault(status=500))
    reason = daemon.wait_health(503)

    assert reason.startswith("up: last successful sync")
    up = daemon.status()["upstreams"]["up"]
    assert up["last_run"]["result"] == "failure" and "500" in up["last_run"]["error"]
    assert up["last_success"] >= first
    assert len(mirror.catalog()["images"]) == 1
    server.set_fault("/catalog")
    daemon.wait_health(200)
    assert daemon.status()["upstreams"]["up"]["last_run"]["result"] == "success"
    assert daemon.stop() == 0


def test_sighup_with_a_good_config_adds_an_upstream(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror, daemons: Callable[..., Daemon]
) -> None:
    """SIGHUP reloads the configuration: a new upstream shows in /status and syncs on SIGUSR1."""
    upstream.add("a/one.tgz", tarball(1))
    upstream.write()
    second = Upstream(upstream.folder / "second")
    second.add("x.tgz", tarball(7))
    second.write()
    daemon = daemons(daemon_config(mirror, server))
    daemon.idle_after(1)
    assert list(daemon.status()["upstreams"]) == ["up"]

    daemon_config(
        mirror,
        server,
        upstreams={"up": f"{server.url}/catalog", "two": f"{server.url}/second/catalog"},
    )
    daemon.send(signal.SIGHUP)
    assert daemon.wait_event("reloaded")["upstreams"] == 2
    assert list(daemon.status()["upstreams"]) == ["up", "two"]
    daemon.send(signal.SIGUSR1)
    doc = daemon.idle_after(2)

    assert doc["upstreams"]["two"]["last_run"]["result"] == "success"
    assert len(mirror.catalog("two")["images"]) == 1
    assert daemon.stop() == 0


def test_sighup_with_a_bad_config_keeps_the_old_one(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror, daemons: Callable[..., Daemon]
) -> None:
    """A bad file on SIGHUP is logged as reload_failed naming the key; the daemon keeps running
    on the old configuration, and a changed root is refused the same way."""
    upstream.add("a/one.tgz", tarball(1))
    upstream.write()
    config = daemon_config(mirror, server)
    good = config.read_text()
    daemon = daemons(config)
    daemon.idle_after(1)

    config.write_text(good.replace("[limits]\n", "[limits]\nretires = 3\n"))
    daemon.send(signal.SIGHUP)
    failed = daemon.wait_event("reload_failed")
    assert "limits.retires" in failed["error"] and str(config) in failed["error"]
    assert failed["level"] == "error"

    config.write_text(
        good.replace(json.dumps(str(mirror.root)), json.dumps(str(mirror.root) + "2"))
    )
    daemon.send(signal.SIGHUP)
    assert "mirror.root" in daemon.wait_event("reload_failed", 2)["error"]

    assert daemon.proc.poll() is None
    daemon.send(signal.SIGUSR1)
    doc = daemon.idle_after(2)
    assert list(doc["upstreams"]) == ["up"] and doc["root"] == str(mirror.root)
    assert doc["upstreams"]["up"]["last_run"]["result"] == "success"
    assert not daemon.events("reloaded")
    assert not (mirror.root.parent / "mirror2").exists()
    assert daemon.stop() == 0


def test_sigusr1_during_a_run_gives_exactly_one_more_run(
    upstream: Upstream,
    server: ThreadedFaultServer,
    mirror: Mirror,
    daemons: Callable[..., Daemon],
    gates: list[threading.Event],
) -> None:
    """Two SIGUSR1 while a run is held are folded into exactly one more run: two in all."""
    upstream.add("a/one.tgz", tarball(1, 20_000))
    upstream.write()
    fault, arrived = held(gates, gate_after=1000)
    server.set_fault("/a/one.tgz", fault)
    daemon = daemons(daemon_config(mirror, server))
    wait(arrived, "the tarball request")

    daemon.send(signal.SIGUSR1)
    daemon.send(signal.SIGUSR1)
    daemon.wait_event("sync_queued")
    doc = daemon.wait_status(lambda d: d["pending"], "the request is pending")
    assert doc["in_progress"] is True and doc["runs_since_start"] == 0
    gates[0].set()
    doc = daemon.idle_after(2)

    assert doc["runs_since_start"] == 2
    assert daemon.stop() == 0
    assert len(daemon.events("sync_started")) == 2
    assert len(daemon.events("sync_done")) == 2
    assert len(daemon.events("sync_queued")) == 1
    assert server.requests("/catalog") == 2
    assert len(mirror.catalog()["images"]) == 1


def test_sigterm_during_a_slow_download_exits_0_publishes_nothing_partial(
    upstream: Upstream,
    server: ThreadedFaultServer,
    mirror: Mirror,
    daemons: Callable[..., Daemon],
    gates: list[threading.Event],
) -> None:
    """SIGTERM while a tarball downloads: exit 0 within seconds, the catalog and the published
    files are unchanged, and the lock is free for the next `sync --once`."""
    upstream.add("a/one.tgz", tarball(1))
    upstream.write()
    assert mirror.sync().returncode == 0
    before_catalog = mirror.catalog_bytes()
    before_files = verified_files(mirror.root / "up")
    upstream.add("b/two.tgz", tarball(2, 300_000))
    upstream.write()
    fault, arrived = held(gates, gate_after=100_000)
    server.set_fault("/b/two.tgz", fault)
    daemon = daemons(daemon_config(mirror, server))
    wait(arrived, "the tarball request")
    server.wait_for_requests("/b/two.tgz", 1)

    began = time.monotonic()
    daemon.send(signal.SIGTERM)
    daemon.wait_event("stopped")
    daemon.send(signal.SIGTERM)  # a second one while it exits changes nothing
    assert daemon.proc.wait(WAIT) == 0
    assert time.monotonic() - began < 5
    daemon.stop()
    assert not daemon.events("sync_done")

    assert mirror.catalog_bytes() == before_catalog
    assert verified_files(mirror.root / "up") == before_files
    assert not (mirror.root / "up" / "images" / name_of(tarball(2, 300_000))).exists()
    assert not (mirror.root / ".eumirror" / "daemon.json").exists()
    gates[0].set()
    after = mirror.sync()
    assert after.returncode == 0, after.stderr
    assert len(mirror.catalog()["images"]) == 2


def test_second_daemon_on_the_same_root_exits_3(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror, daemons: Callable[..., Daemon]
) -> None:
    """A second daemon on the same root exits 3 at start, naming the first; the first runs on."""
    upstream.add("a/one.tgz", tarball(1))
    upstream.write()
    config = daemon_config(mirror, server)
    first = daemons(config)
    first.idle_after(1)

    second = run_cli("sync", "--config", str(config), timeout=WAIT)

    assert second.returncode == 3, second.stderr
    assert f"pid {first.proc.pid}" in second.stderr
    assert "status_listening" not in second.stderr
    assert first.proc.poll() is None
    assert first.status()["runs_since_start"] == 1
    assert first.stop() == 0


def test_sync_once_while_the_daemon_syncs_exits_3(
    upstream: Upstream,
    server: ThreadedFaultServer,
    mirror: Mirror,
    daemons: Callable[..., Daemon],
    gates: list[threading.Event],
) -> None:
    """`sync --once` while the daemon's sync holds the lock exits 3 at once, touching nothing."""
    upstream.add("a/one.tgz", tarball(1))
    upstream.write()
    fault, arrived = held(gates)
    server.set_fault("/catalog", fault)
    daemon = daemons(daemon_config(mirror, server))
    wait(arrived, "the catalog request")

    once = mirror.sync()

    assert once.returncode == 3, once.stderr
    assert "another eumirror" in once.stderr
    assert server.requests("/catalog") == 1
    gates[0].set()
    assert daemon.idle_after(1)["upstreams"]["up"]["last_run"]["result"] == "success"
    assert daemon.stop() == 0


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """An AF_UNIX datagram socket standing in for systemd's NOTIFY_SOCKET."""
    path = str(tmp_path / "notify")
    if len(path) >= 100:  # sun_path is short; fall back to a short private folder
        import tempfile

        path = os.path.join(tempfile.mkdtemp(prefix="eum"), "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    try:
        yield sock, path
    finally:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(path)


def receive_until(sock: socket.socket, done: Callable[[list[str]], bool]) -> list[str]:
    """Datagrams split into KEY=VALUE lines, until `done(lines)` (bounded)."""
    lines: list[str] = []
    deadline = time.monotonic() + WAIT
    while not done(lines):
        if time.monotonic() > deadline:
            raise AssertionError(f"sd_notify: not done after {WAIT}s: {lines}")
        with contextlib.suppress(TimeoutError):
            lines += sock.recv(4096).decode().split("\n")
    return lines


@pytest.mark.parametrize("watchdog", [True, False], ids=["watchdog", "no-watchdog"])
def test_sd_notify_ready_status_watchdog_stopping(
    upstream: Upstream,
    server: ThreadedFaultServer,
    mirror: Mirror,
    daemons: Callable[..., Daemon],
    notify_socket: tuple[socket.socket, str],
    watchdog: bool,
) -> None:
    """READY=1 once listening, STATUS= after a sync, WATCHDOG=1 only when WATCHDOG_USEC is set,
    STOPPING=1 on SIGTERM."""
    upstream.add("a/one.tgz", tarball(1))
    upstream.write()
    sock, path = notify_socket
    env = {"NOTIFY_SOCKET": path}
    if watchdog:
        env["WATCHDOG_USEC"] = "2000000"
    daemon = daemons(daemon_config(mirror, server), env)

    lines = receive_until(sock, lambda got: any(x.startswith("STATUS=last sync") for x in got))
    assert "READY=1" in lines
    assert f"STATUS=listening on {daemon.listen}" in lines
    assert lines.index("READY=1") < next(
        i for i, x in enumerate(lines) if x.startswith("STATUS=last sync")
    )
    assert any("1/1 upstreams ok" in x for x in lines)
    if watchdog:
        lines += receive_until(sock, lambda got: got.count("WATCHDOG=1") >= 2)
    daemon.send(signal.SIGTERM)
    lines += receive_until(sock, lambda got: "STOPPING=1" in got)
    assert daemon.stop() == 0
    with contextlib.suppress(TimeoutError):
        while True:
            lines += sock.recv(4096).decode().split("\n")
    assert ("WATCHDOG=1" in lines) is watchdog


def test_status_command_from_the_daemon_then_from_disk(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror, daemons: Callable[..., Daemon]
) -> None:
    """`eumirror status` prints a table row per upstream from the running daemon (even on port
    0), and from the state on disk once the daemon is stopped."""
    upstream.add("a/one.tgz", tarball(1))
    upstream.write()
    config = daemon_config(mirror, server)
    daemon = daemons(config)
    daemon.idle_after(1)

    live = run_cli("status", "--config", str(config), timeout=WAIT)

    assert live.returncode == 0, live.stderr
    head, header, row = live.stdout.splitlines()[0], *live.stdout.splitlines()[-2:]
    assert "daemon" in head and str(mirror.root) in head
    assert "next run:" in live.stdout
    assert header.split()[0] == "UPSTREAM"
    assert row.split()[0] == "up" and "success" in row.split()
    assert daemon.stop() == 0

    offline = run_cli("status", "--config", str(config), timeout=WAIT)

    assert offline.returncode == 0, offline.stderr
    lines = offline.stdout.splitlines()
    assert "daemon" not in lines[0] and "disk" in lines[0]
    assert lines[-1].split()[0] == "up" and "success" in lines[-1].split()


def test_sync_once_metrics_file_parses_with_the_contract_names(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror, tmp_path: Path
) -> None:
    """`sync --once --metrics-file` writes a Prometheus textfile with the same metric names."""
    upstream.add("a/one.tgz", tarball(1))
    upstream.write()
    prom = tmp_path / "textfile" / "eumirror.prom"
    prom.parent.mkdir()

    done = mirror.sync("--metrics-file", str(prom))

    assert done.returncode == 0, done.stderr
    samples: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(prom.read_text()):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    for name, labels in CONTRACT_METRICS.items():
        assert name in samples, name
        assert all(set(s.labels) == labels for s in samples[name]), name
    runs = {s.labels["result"]: s.value for s in samples["eumirror_sync_runs_total"]}
    assert runs == {"success": 1.0, "partial": 0.0, "failure": 0.0}
    assert samples["eumirror_images"][0].value == 1
    assert samples["eumirror_downloaded_bytes_total"][0].value == 4096
    assert [p.name for p in prom.parent.iterdir()] == ["eumirror.prom"]
